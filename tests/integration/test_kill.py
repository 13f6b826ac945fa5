"""Effectively once under SIGKILL (issue 21, item 2): kill -9 loses and doubles nothing.

The same ml-100k events (the most active users, several thousand events at a fixed rate,
from a librdkafka producer) go through an undisturbed worker and through a worker killed with
SIGKILL three times mid-stream: at ~1/3 and ~2/3 of the events sent it is restarted on the same
state folder, at ~5/6 on an empty one. Every user's final state (the last changelog record)
must be the same in both runs, no event may be lost or applied twice, and the group's committed
offsets must reach the end of every event partition soon after the last restart.
The figures are printed (run with ``-s`` to see them as they come).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Deployment
from tests.integration.kill_run import (
    DISTURBED,
    RunResult,
    Scenario,
    build_events,
    format_result,
    format_table,
    judge,
    run_scenario,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

SCENARIO = Scenario()


def _run(
    bootstrap: str, model_dir: Path, tmp: Path, catalog: list[Any], scenario: Scenario, label: str
) -> RunResult:
    tmp.mkdir()
    dep = Deployment(bootstrap, model_dir, tmp, partitions=scenario.partitions)
    events = build_events(catalog, scenario)
    return run_scenario(dep, catalog, events, scenario, label)


def test_sigkill_mid_stream_loses_and_doubles_nothing(
    bootstrap: str,
    model_dir: Path,
    catalog: list[Any],
    undisturbed: RunResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calm = undisturbed
    with capsys.disabled():
        print("\n" + format_result(calm), flush=True)

    killed = _run(bootstrap, model_dir, tmp_path / "killed", catalog,
                  replace(SCENARIO, kills=DISTURBED), "sigkill x3")  # fmt: skip
    judge(calm, killed)
    with capsys.disabled():
        print(format_result(killed), flush=True)
        print(format_table([calm, killed]), flush=True)

    figures = format_result(killed)
    assert killed.sent == calm.sent and not killed.produce_errors, figures
    assert len(killed.restarts) == len(DISTURBED), figures
    assert killed.unfetched == 0, f"partitions left unfetched after the last restart\n{figures}"
    assert killed.lost == 0, f"events lost\n{figures}"
    assert killed.lost_valid_in_dlq == 0, f"valid events dead-lettered\n{figures}"
    assert killed.applied_twice == 0, f"events applied twice\n{figures}"
    assert killed.users_differing == 0, f"final states differ from the undisturbed run\n{figures}"
