"""The stream section's latency windows: where a run's window starts, and waiting for the acks."""

from __future__ import annotations

from typing import Any

import pytest

from streams.bench.stream import window_start
from streams.errors import BenchError


def test_the_latency_window_starts_at_the_whole_ms_a_record_timestamp_can_have() -> None:
    assert window_start(1000.0129) == 1000.012
    assert window_start(1000.012) == 1000.012


class _Metrics:
    """A process whose ``/metrics.json`` answers are given in advance (None: no answer)."""

    name = "worker"

    def __init__(self, answers: list[dict[str, Any] | None]) -> None:
        self.answers = answers
        self.paths: list[str] = []

    def get_json(self, path: str) -> dict[str, Any] | None:
        self.paths.append(path)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def check(self) -> None:
        pass


def test_acked_since_waits_until_the_acks_cover_every_answered_event() -> None:
    from streams.bench.stream import _acked_since

    proc = _Metrics([None, {"acked_ms": {"n": 5}}, {"acked_ms": {"n": 8, "p50": 1.0}}])
    assert _acked_since(proc, 12.5, answered=8) == {"n": 8, "p50": 1.0}  # type: ignore[arg-type]
    assert proc.paths == ["/metrics.json?since=12.500"] * 3
    short = _Metrics([{"acked_ms": {"n": 5}}])
    assert _acked_since(short, 1.0, answered=8, wait_s=0.2) == {"n": 5}  # type: ignore[arg-type]
    with pytest.raises(BenchError, match="/metrics.json did not answer"):
        _acked_since(_Metrics([None]), 1.0, answered=8, wait_s=0.2)  # type: ignore[arg-type]
