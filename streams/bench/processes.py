"""The apps a benchmark runs as child processes (the worker, the baseline apps) and how it
watches them: their settings and environment, their start and stop, their ``/healthz`` and
``/metrics.json``, the events they are done with and their memory.

- :func:`stage_settings`: one app's own app id, topics, home folder and web port;
  :func:`settings_env`: the environment variables that hand those settings to the child;
- :class:`ServiceProcess`: a child process with its log file and web port;
- :func:`measure_throughput`: poll ``/metrics.json`` until N events are done, the busy window's
  (events, seconds); :func:`check_broker` fails the run when the broker stops answering;
- :func:`processed`, :func:`read_memory_kib`: events done, and RSS from ``/proc``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.bench.common import throughput_from_samples
from streams.errors import BenchError
from streams.settings import Settings, TopicNames

__all__ = [
    "POLL_S",
    "PROJECT_ROOT",
    "ServiceProcess",
    "check_broker",
    "free_port",
    "measure_throughput",
    "mib",
    "processed",
    "read_memory_kib",
    "settings_env",
    "stage_settings",
]

#: The checkout the child processes run in (``python -m streams.cli worker`` and the baselines).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: /metrics.json polling period: each poll costs the worker ~1 ms (a percentile over its reservoir).
POLL_S = 0.1


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that make a worker process read ``settings``' stage fields."""
    t = settings.topics
    env = {
        "KAFKA_BOOTSTRAP": settings.bootstrap or "",
        "INTEREST_STREAM_APP_ID": settings.app_id,
        "INTEREST_STREAM_PARTITIONS": str(settings.partitions),
        "INTEREST_STREAM_HOME": str(settings.home),
        "INTEREST_STREAM_WEB_HOST": settings.web_host,
        "INTEREST_STREAM_WEB_PORT": str(settings.web_port),
        "INTEREST_STREAM_STORE": settings.store,
        "INTEREST_STREAM_PROVIDER": settings.provider,
        "INTEREST_STREAM_ENCODER_INT8": str(settings.encoder_int8).lower(),
        "INTEREST_STREAM_TOPIC_CLICK": t.click,
        "INTEREST_STREAM_TOPIC_BROWSE": t.browse,
        "INTEREST_STREAM_TOPIC_COMMENT": t.comment,
        "INTEREST_STREAM_TOPIC_ITEMS": t.items,
        "INTEREST_STREAM_TOPIC_RECOMMENDATIONS": t.recommendations,
        "INTEREST_STREAM_TOPIC_DLQ": t.dlq,
        "INTEREST_STREAM_TOPIC_CONTROL": t.control,
        "INTEREST_STREAM_TOPIC_DISLIKE": t.dislike,
    }
    if settings.model_dir is not None:
        env["INTEREST_STREAM_MODEL_DIR"] = str(settings.model_dir)
    if settings.sequence_model_dir is not None:
        env["INTEREST_STREAM_SEQUENCE_MODEL_DIR"] = str(settings.sequence_model_dir)
    return env


def stage_settings(base: Settings, bootstrap: str, kind: str, home: Path) -> Settings:
    """Settings of one stage: its own app id, topics, home folder and web port."""
    app_id = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    names = ("click", "browse", "comment", "items", "recommendations", "dlq", "control", "dislike")
    topics = TopicNames(*(f"{app_id}.{name}" for name in names))
    return dataclasses.replace(
        base, bootstrap=bootstrap, app_id=app_id, topics=topics, home=home,
        model_dir=base.resolved_model_dir.resolve(), web_port=free_port(), store="memory",
        # the worker ranks with the Transformer when the home folder has one, as it serves
        sequence_model_dir=base.resolved_sequence_model_dir.resolve(),
    ).validated()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processed(metrics: dict[str, Any]) -> int:
    """Events a worker is done with: applied, duplicates and dead letters."""
    return int(metrics.get("events_applied", 0)) + int(metrics.get("duplicates", 0)) + int(
        metrics.get("dead_letters", 0)
    )


def read_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc (empty where there is none)."""
    wanted = {"VmRSS": "rss_kib", "VmHWM": "peak_rss_kib"}
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in wanted:
                found[wanted[name]] = int(rest.split()[0])
    return found


def mib(kib: int) -> float:
    """KiB (as :func:`read_memory_kib` gives them) in MiB, one decimal."""
    return round(kib / 1024, 1)


@dataclass
class ServiceProcess:
    """A worker or baseline app run as a child process, with its log file and web port."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, name: str, argv: list[str], settings: Settings, log: Path) -> ServiceProcess:
        env = {**os.environ, **settings_env(settings)}
        with open(log, "ab") as out:
            popen = subprocess.Popen(  # noqa: S603
                [sys.executable, *argv], env=env, stdout=out, stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        return cls(name, popen, settings.web_port, log)

    def get_json(self, path: str) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                body: dict[str, Any] = json.load(response)
                return body
        except (OSError, ValueError):  # refused, HTTP 503 while starting, half-written JSON
            return None

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            if self.get_json("/healthz") is not None:
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not healthy after {timeout_s}s:\n{self.tail()}")

    def memory(self) -> dict[str, int]:
        return read_memory_kib(self.popen.pid)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)


def check_broker(bootstrap: str) -> None:
    """Raise ``BenchError`` when nothing answers at ``bootstrap`` any more."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return
    except OSError as exc:
        raise BenchError(f"the broker at {bootstrap} stopped answering ({exc}); was it "
                         "killed from outside?") from exc


def measure_throughput(proc: ServiceProcess, target: int, timeout_s: float,
                       bootstrap: str) -> tuple[int, float]:
    """Poll ``/metrics.json`` until ``target`` events are done; (events, seconds) of the busy
    window."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        proc.check()
        check_broker(bootstrap)
        metrics = proc.get_json("/metrics.json")
        now = time.perf_counter()
        if metrics is not None:
            samples.append((now, processed(metrics)))
            if samples[-1][1] >= target:
                return throughput_from_samples(samples)
        if time.monotonic() > deadline:
            done = samples[-1][1] if samples else 0
            raise BenchError(f"{proc.name}: {done}/{target} events after {timeout_s}s")
        time.sleep(POLL_S)
