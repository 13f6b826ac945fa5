"""SIGKILL the worker mid-stream, N times over, and compare with an undisturbed run (issue 21).

Starts the embedded broker (or uses ``KAFKA_BOOTSTRAP``), runs the scenario of
``tests/integration/test_kill.py`` once undisturbed (the baseline) and ``--runs`` times
disturbed (SIGKILL at 1/3 and 2/3 of the events sent, restarted on the same state folder; at
5/6, restarted on an empty one), each run on its own app id and topics, and prints one row a
run: events sent, lost, applied twice, users differing from the baseline, the states'
``n_duplicates``, dead letters, events left above the committed offsets, and each restart's
time to healthy / to its first recommendation. ``--calm 2`` runs the baseline twice and prints
how far two undisturbed runs differ (which state fields are deterministic).

Usage: ``.venv/bin/python scripts/kill_runs.py --runs 5 [--users 40 --rate 150 --calm 2]``.
Exits 1 when a disturbed run lost, doubled or changed anything, or left a partition unfetched.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streams.data.formats import read_items  # noqa: E402
from streams.data.movielens import prepare_ml100k  # noqa: E402
from streams.local.broker import EmbeddedBroker  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker.runtime import ensure_model  # noqa: E402
from tests.integration.conftest import HOME, Deployment  # noqa: E402
from tests.integration.kill_run import (  # noqa: E402
    DISTURBED,
    RunResult,
    Scenario,
    build_events,
    format_result,
    format_table,
    judge,
    run_scenario,
    spread,
)


def main(argv: list[str] | None = None) -> int:
    default = Scenario()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="disturbed runs (default 5)")
    parser.add_argument("--calm", type=int, default=1, help="undisturbed runs (default 1)")
    parser.add_argument("--users", type=int, default=default.users)
    parser.add_argument("--rate", type=float, default=default.rate, help="events/s")
    parser.add_argument("--max-events", type=int, default=default.max_events)
    parser.add_argument("--partitions", type=int, default=default.partitions)
    parser.add_argument("--drain-s", type=float, default=default.drain_s)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the workers' folders and logs here (default: removed)")
    args = parser.parse_args(argv)
    calm = Scenario(users=args.users, rate=args.rate, max_events=args.max_events,
                    partitions=args.partitions, drain_s=args.drain_s)  # fmt: skip
    disturbed = replace(calm, kills=DISTURBED)
    model_dir = ensure_model(Settings(home=HOME))
    items_path, _ = prepare_ml100k(HOME / "data" / "ml-100k", HOME / "cache")
    catalog = read_items(items_path)[:200]
    events = build_events(catalog, calm)
    print(f"{len(events)} events of {calm.users} users at {calm.rate:.0f}/s, "
          f"{calm.partitions} partitions", flush=True)  # fmt: skip
    given = os.environ.get("KAFKA_BOOTSTRAP")
    with contextlib.ExitStack() as stack:
        tmp = args.keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="kill-runs-"))
        bootstrap = given or stack.enter_context(EmbeddedBroker()).bootstrap
        results: list[RunResult] = []

        def one(label: str, scenario: Scenario) -> RunResult:
            folder = Path(tmp) / label
            folder.mkdir()
            dep = Deployment(bootstrap, model_dir, folder, partitions=calm.partitions)
            result = run_scenario(dep, catalog, events, scenario, label)
            if results:
                judge(results[0], result)
            results.append(result)
            print(format_result(result), flush=True)
            return result

        calm_runs = [one(f"calm{i + 1}", calm) for i in range(args.calm)]
        for extra in calm_runs[1:]:
            print(f"{extra.label} vs calm1: " + ", ".join(
                f"{k}={v:.3g}" for k, v in sorted(spread(calm_runs[0].states,
                                                         extra.states).items())))  # fmt: skip
        bad = [r for r in (one(f"kill{i + 1}", disturbed) for i in range(args.runs))
               if r.lost or r.applied_twice or r.users_differing or r.unfetched]  # fmt: skip
        print()
        print(format_table(results))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
