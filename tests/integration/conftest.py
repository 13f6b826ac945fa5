"""A real broker for the session (embedded Tansu, or KAFKA_BOOTSTRAP), and worker processes.

The broker fixture fails loudly when the broker cannot start: it never skips.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streams.data.formats import read_items
from streams.data.movielens import prepare_ml100k
from streams.local.broker import EmbeddedBroker
from streams.settings import Settings, TopicNames
from streams.worker.runtime import ensure_model

REPO = Path(__file__).resolve().parents[2]
HOME = REPO / ".cache" / "interest-stream"


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return ensure_model(Settings(home=HOME))


@pytest.fixture(scope="session")
def catalog() -> list[Any]:
    items_path, _ = prepare_ml100k(HOME / "data" / "ml-100k", HOME / "cache")
    return read_items(items_path)[:200]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Deployment:
    """One app id with its own topic names on the shared broker."""

    bootstrap: str
    model_dir: Path
    tmp: Path
    app_id: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}")
    partitions: int = 4
    workers: list[Worker] = field(default_factory=list)
    #: More environment for every worker (and CLI run) of this deployment, e.g. the admin token.
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def topics(self) -> TopicNames:
        p = self.app_id
        return TopicNames(
            f"{p}.click",
            f"{p}.browse",
            f"{p}.comment",
            f"{p}.items",
            f"{p}.recommendations",
            f"{p}.dlq",
            f"{p}.control",
            f"{p}.dislike",
        )

    @property
    def changelog(self) -> str:
        return f"{self.app_id}-user_interest-changelog"

    def start_cli(self, home: Path, *args: str) -> subprocess.Popen[str]:
        """``interest-stream <args>`` of this deployment, on the CPU, running (see
        :func:`cli_output`)."""
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "streams.cli", *args],
            env={**self.env(home, free_port()), "INTEREST_STREAM_PROVIDER": "cpu"}, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def env(self, home: Path, web_port: int) -> dict[str, str]:
        t = self.topics
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "INTEREST_STREAM_APP_ID": self.app_id,
            "INTEREST_STREAM_PARTITIONS": str(self.partitions),
            "INTEREST_STREAM_HOME": str(home),
            "INTEREST_STREAM_MODEL_DIR": str(self.model_dir),
            "INTEREST_STREAM_WEB_PORT": str(web_port),
            "INTEREST_STREAM_SESSION_TIMEOUT_S": "6",
            "INTEREST_STREAM_TOPIC_CLICK": t.click,
            "INTEREST_STREAM_TOPIC_BROWSE": t.browse,
            "INTEREST_STREAM_TOPIC_COMMENT": t.comment,
            "INTEREST_STREAM_TOPIC_DISLIKE": t.dislike,
            "INTEREST_STREAM_TOPIC_ITEMS": t.items,
            "INTEREST_STREAM_TOPIC_RECOMMENDATIONS": t.recommendations,
            "INTEREST_STREAM_TOPIC_DLQ": t.dlq,
            "INTEREST_STREAM_TOPIC_CONTROL": t.control,
            **self.extra_env,
        }

    def start_worker(self, name: str, home: Path | None = None) -> Worker:
        home = home or self.tmp / name
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--store", "rocksdb"],
            env=self.env(home, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        worker = Worker(proc, port, self.tmp / f"{name}.log")
        self.workers.append(worker)
        worker.wait_healthy()
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def wait_healthy(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not healthy in {timeout_s}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def deployment(bootstrap: str, model_dir: Path, tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(bootstrap, model_dir, tmp_path)
    yield dep
    dep.stop_all()


@pytest.fixture(scope="session")
def undisturbed(
    bootstrap: str, model_dir: Path, catalog: list[Any], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """One worker fed the kill and scale tests' events without disturbance (at 300/s: the final
    states do not depend on the rate, see ``test_scale.CALM``): their common baseline, run once.
    Asserted whole, or a comparison with it would prove nothing."""
    from tests.integration.kill_run import Scenario, build_events, format_result, run_scenario

    calm = Scenario(rate=300.0)
    dep = Deployment(bootstrap, model_dir, tmp_path_factory.mktemp("undisturbed"),
                     partitions=calm.partitions)  # fmt: skip
    try:
        run = run_scenario(dep, catalog, build_events(catalog, calm), calm, "undisturbed")
    finally:
        dep.stop_all()
    assert run.sent >= 3000 and not run.produce_errors, format_result(run)
    assert (run.lost, run.applied_twice, run.unfetched) == (0, 0, 0), format_result(run)
    return run


def cli_output(proc: subprocess.Popen[str]) -> str:
    """The standard output of a command started by :meth:`Deployment.start_cli`, which must
    succeed (its output and errors in the failure)."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    return out
