"""A real worker whose model fails on every batch (run as a script by test_crash.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from interest_state import Event, InterestState
from streams.settings import Settings
from streams.worker import runtime
from streams.worker.outcomes import BatchResult
from streams.worker.pipeline import Pipeline


class ExplodingPipeline(Pipeline):
    def process(
        self, events: Sequence[Event], states: Mapping[str, InterestState | None]
    ) -> BatchResult:
        raise RuntimeError("the model exploded")


if __name__ == "__main__":
    settings = Settings.from_env()
    real = runtime.build_pipeline(settings)
    runtime.build_pipeline = lambda _settings: ExplodingPipeline(real.encoder, real.params)
    runtime.run_worker(settings)
