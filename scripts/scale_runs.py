"""Two workers, one SIGKILLed, a third joining, N times, against one undisturbed run (issue 20).

Starts the embedded broker (or uses ``KAFKA_BOOTSTRAP``), runs the events of
``tests/integration/test_scale.py`` once through one undisturbed worker (the baseline) and
``--runs`` times through the scenario of ``tests/integration/scale_run.py`` (workers A and B
share the partitions; B is killed with SIGKILL once ``--kill-at`` of the events are sent; A
takes B's partitions after the session timeout; then C joins on an empty state folder), each
run on its own app id and topics, and prints per run the one-worker figures (lost, applied
twice, users differing from the baseline, ...) and the partitions each worker held and the
pause at each change, then one table.

Usage: ``.venv/bin/python scripts/scale_runs.py --runs 3 [--users 40 --rate 100]``.
Exits 1 when a run lost, doubled or changed anything, left a partition unfetched, or C held no
partition.
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
    Scenario,
    build_events,
    format_result,
    judge,
    run_scenario,
)
from tests.integration.scale_run import (  # noqa: E402
    ScalePlan,
    ScaleResult,
    format_scale,
    format_scale_table,
    run_scale,
)


def main(argv: list[str] | None = None) -> int:
    default, plan = Scenario(rate=100.0), ScalePlan()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="scale runs (default 3)")
    parser.add_argument("--users", type=int, default=default.users)
    parser.add_argument("--rate", type=float, default=default.rate, help="events/s")
    parser.add_argument("--calm-rate", type=float, default=300.0,
                        help="events/s of the undisturbed run (default 300: the final states "
                             "do not depend on the rate)")  # fmt: skip
    parser.add_argument("--max-events", type=int, default=default.max_events)
    parser.add_argument("--partitions", type=int, default=default.partitions)
    parser.add_argument("--drain-s", type=float, default=default.drain_s)
    parser.add_argument("--kill-at", type=float, default=plan.kill_at,
                        help="share of the events sent when B is killed")  # fmt: skip
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the workers' folders and logs here (default: removed)",
    )
    args = parser.parse_args(argv)
    scenario = Scenario(users=args.users, rate=args.rate, max_events=args.max_events,
                        partitions=args.partitions, drain_s=args.drain_s)  # fmt: skip
    calm = replace(scenario, rate=args.calm_rate)
    plan = replace(plan, kill_at=args.kill_at)
    model_dir = ensure_model(Settings(home=HOME))
    items_path, _ = prepare_ml100k(HOME / "data" / "ml-100k", HOME / "cache")
    catalog = read_items(items_path)[:200]
    events = build_events(catalog, scenario)
    print(f"{len(events)} events of {scenario.users} users at {scenario.rate:.0f}/s (undisturbed:"
          f" {calm.rate:.0f}/s), {scenario.partitions} partitions", flush=True)  # fmt: skip
    given = os.environ.get("KAFKA_BOOTSTRAP")
    with contextlib.ExitStack() as stack:
        tmp = args.keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-runs-"))
        bootstrap = given or stack.enter_context(EmbeddedBroker()).bootstrap

        def deployment(label: str) -> Deployment:
            folder = Path(tmp) / label
            folder.mkdir()
            return Deployment(bootstrap, model_dir, folder, partitions=scenario.partitions)

        baseline = run_scenario(deployment("calm"), catalog, events, calm, "undisturbed")
        print(format_result(baseline), flush=True)
        results: list[ScaleResult] = []
        for i in range(args.runs):
            result = run_scale(deployment(f"scale{i + 1}"), catalog, events, scenario, plan,
                               f"scale{i + 1}")  # fmt: skip
            judge(baseline, result.run)
            results.append(result)
            print(format_scale(result), flush=True)
        print()
        print(format_result(baseline).splitlines()[0])
        print(format_result(baseline).splitlines()[1])
        print()
        print(format_scale_table(results))
    bad = [r for r in results
           if r.run.lost or r.run.applied_twice or r.run.users_differing or r.run.unfetched
           or not r.owned_c]  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
