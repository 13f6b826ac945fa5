"""What every section of ``interest-stream bench`` shares: the run's sizes, the rows and their
table, the statistics and the timing, and the ml-100k events the stream sections send.

- :class:`BenchConfig`: the sizes of one run (``--quick`` or full) and the chosen sections;
- :class:`Row` and :func:`format_table`: one measured figure beside its same-run baseline;
- :func:`percentile`, :func:`ratio`, :func:`throughput_from_samples`: pure statistics;
- :func:`timed_rate`, :func:`paired_rates`: units per second, and two rates measured in
  alternating rounds (so load drift on a shared machine hits both);
- :func:`load_dataset`, :func:`with_comments`: the events and items of ml-100k, some turned
  into comments;
- :class:`BenchError`: a benchmark step could not run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

from streams.errors import BenchError
from streams.settings import Settings

__all__ = [
    "SECTIONS",
    "BenchConfig",
    "Row",
    "format_number",
    "format_ratio",
    "format_table",
    "load_dataset",
    "paired_rates",
    "percentile",
    "ratio",
    "throughput_from_samples",
    "timed_rate",
    "with_comments",
]

SECTIONS = ("stream", "scale", "encoder", "rank", "ann", "sequence", "state", "store", "gpu")


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a measured value and the baseline it is compared with."""

    section: str
    metric: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return ratio(self.value, self.baseline_value)

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["ratio"] = self.ratio
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in body.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, as numpy), NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def ratio(value: float, baseline: float | None) -> float | None:
    """``value / baseline``; None when either is missing, not finite, or the baseline is 0."""
    if baseline is None or not math.isfinite(value) or not math.isfinite(baseline):
        return None
    if baseline == 0:
        return None
    return value / baseline


def format_number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table: section, metric, value, unit, baseline (name and value), ratio, note."""
    header = ("section", "metric", "value", "unit", "baseline", "ratio", "note")
    lines = [header]
    for row in rows:
        base = row.baseline
        if row.baseline_value is not None:
            base = f"{base} {format_number(row.baseline_value)}".strip()
        lines.append((row.section, row.metric, format_number(row.value), row.unit, base,
                      format_ratio(row.ratio), row.note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 5}
    out = []
    for n, line in enumerate(lines):
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def throughput_from_samples(samples: Sequence[tuple[float, int]]) -> tuple[int, float]:
    """(events, seconds) from ``(time, events done)`` samples of a run that ends at the last one.

    The window opens at the first sample that shows progress, so start-up time is not counted;
    if progress shows only in the last sample, it opens at the sample before (an upper bound on
    the time, so the rate is a lower bound).
    """
    if not samples:
        raise ValueError("no samples")
    end_t, end_n = samples[-1]
    moving = [i for i, (_, n) in enumerate(samples) if n > 0]
    if not moving:
        return 0, 0.0
    first = moving[0]
    if first == len(samples) - 1:
        if first == 0:
            return end_n, 0.0
        start_t, start_n = samples[first - 1]
    else:
        start_t, start_n = samples[first]
    return end_n - start_n, end_t - start_t


def timed_rate(step: Callable[[], int], min_seconds: float) -> float:
    """Units per second of ``step`` (which returns the units it did), after one warm-up call."""
    step()
    done = 0
    start = time.perf_counter()
    while True:
        done += step()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def paired_rates(first: Callable[[], float], second: Callable[[], float] | None, rounds: int
                 ) -> tuple[float, float | None]:
    """Medians of ``rounds`` alternating measurements of two rates (so load drift hits both)."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(rounds):
        a.append(first())
        if second is not None:
            b.append(second())
    return float(np.median(a)), (float(np.median(b)) if b else None)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes of one run; :meth:`for_mode` gives the quick (CI) and the full one."""

    quick: bool
    events: int
    latency_rates: tuple[float, ...]
    latency_seconds: float
    batch_sizes: tuple[int, ...]
    rank_sizes: tuple[int, ...]
    rank_users: int
    min_seconds: float
    rounds: int = 3
    sections: tuple[str, ...] = SECTIONS
    comment_share: float = 0.0
    """Share of the stream's events turned into comments (text encoded in the worker)."""

    @classmethod
    def for_mode(cls, quick: bool, events: int | None = None,
                 sections: Sequence[str] = SECTIONS) -> BenchConfig:
        if quick:
            cfg = cls(True, 4_000, (200.0,), 3.0, (1, 32, 128), (10_000, 100_000), 64, 0.3, 2)
        else:
            cfg = cls(False, 30_000, (200.0, 1000.0), 8.0, (1, 32, 128),
                      (10_000, 100_000, 1_000_000), 64, 1.0, 3)
        return dataclasses.replace(cfg, events=events or cfg.events, sections=tuple(sections))

    def latency_events(self) -> int:
        return int(sum(rate * self.latency_seconds for rate in self.latency_rates))


def load_dataset(settings: Settings, count: int) -> tuple[list[Any], list[Any]]:
    """The ml-100k items and its first ``count`` events (prepared under the home folder)."""
    from streams.data.formats import read_events, read_items
    from streams.data.movielens import prepare_ml100k

    home = settings.home.resolve()
    items_path, events_path = prepare_ml100k(home / "data" / "ml-100k", home / "cache")
    events = list(islice(read_events(events_path), count))
    if len(events) < count:
        raise BenchError(f"{events_path} has {len(events)} events, the run needs {count}")
    return read_items(items_path), events


def with_comments(events: Sequence[Any], texts: dict[str, str], share: float) -> list[Any]:
    """Every ``round(1 / share)``-th event as a comment whose text is its item's catalog text
    (ml-100k has no comments: a stand-in of the same length as a short review title)."""
    if share <= 0:
        return list(events)
    step = max(1, round(1 / share))
    return [dataclasses.replace(e, event_type="comment", text=texts[e.item_id])
            if n % step == step - 1 else e for n, e in enumerate(events)]  # fmt: skip
