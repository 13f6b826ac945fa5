"""The README demo command, twice on one home folder (a fresh embedded broker each time)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import HOME, REPO, free_port

pytestmark = pytest.mark.integration


def test_demo_prints_titled_recommendations_and_runs_again(
    model_dir: Path, catalog: list[object], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for shared in ("data", "cache"):  # prepared by the session fixtures; no second download
        (home / shared).symlink_to(HOME / shared)
    env = {
        **os.environ,
        "INTEREST_STREAM_HOME": str(home),
        "INTEREST_STREAM_MODEL_DIR": str(model_dir),
    }
    env.pop("KAFKA_BOOTSTRAP", None)
    for run in (1, 2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "demo",
                "--limit",
                "500",
                "--rate",
                "0",
                "--exit-when-done",
                "--train-epochs",
                "1",
                "--web-port",
                str(free_port()),
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=240,
        )
        log = (home / "demo-worker.log").read_text(errors="replace")[-3000:]
        assert done.returncode == 0, (run, done.stdout[-2000:], done.stderr[-2000:], log)
        assert "replayed 500 events" in done.stdout
        # a recommendation line with its reason (a personal one, trending, or an explanation)
        assert re.search(r'why #1: (because you \w+|trending now|matches your comment|explore:)',
                         done.stdout), done.stdout[-2000:]
        assert '"events_applied": 500' in done.stdout
        # run 1: the worker starts at once while a (one-epoch) model trains in the background,
        # and serves it when written (test_model_reload.py covers the swap itself); run 2 has it
        assert ("training one in the background" in done.stdout) == (run == 1)
        assert ("worker switched to sequence model seq-" in done.stdout) == (run == 1)
        assert '"ranking": "blend 0.95 x sequence seq-' in done.stdout  # served by the Transformer
