"""What MMR re-ranking costs the batch step: ``Pipeline.process`` events/s on ml-100k (the
first 8,000 events, batches of 32, the worker's one BLAS thread, the served sequence model when
one is trained), MMR off (lambda 1) against on (lambda 0.5), alternating rounds.

    .venv/bin/python scripts/mmr_cost.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from streams.bench.common import load_dataset  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker.runtime import build_pipeline, build_watcher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    settings = Settings.from_env()
    pipeline = build_pipeline(settings)
    items, records = load_dataset(settings, 32 * args.batches)
    pipeline.add_items(items)
    build_watcher(settings, pipeline)
    events = [r.to_event() for r in records]
    batches = [events[i : i + 32] for i in range(0, len(events), 32)]

    def rate(lam: float) -> float:
        pipeline.lists.mmr_lambda = lam
        states = {}
        start = time.perf_counter()
        for batch in batches:
            result = pipeline.process(batch, states)
            states.update({u: o.state for u, o in result.users.items()})
        return len(events) / (time.perf_counter() - start)

    rate(1.0), rate(0.5)  # warm-up
    print(f"model {pipeline.model_version}")
    for n in range(args.rounds):
        off, on = rate(1.0), rate(0.5)
        print(f"round {n}: MMR off {off:,.0f} events/s, MMR 0.5 {on:,.0f} events/s, "
              f"ratio {on / off:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
