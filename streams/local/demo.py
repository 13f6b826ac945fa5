"""``interest-stream demo``: everything on one machine, recommendations printed as they come.

When there is no sequence Transformer yet, one is trained in the background (``--train-epochs``,
0: never) and the worker switches to it when it is written.
Embedded broker (unless KAFKA_BOOTSTRAP is set) -> topics -> MovieLens-100k catalog on the
items topic -> a worker process -> events replayed at a fixed rate -> recommendations tailed
from the output topic and printed with titles. The web view stays up until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import click

from encoders.runtime.sequence import is_sequence_model
from streams.data.formats import read_events, read_items
from streams.data.movielens import prepare_ml100k
from streams.errors import StreamError
from streams.local.broker import broker_for
from streams.local.replay import follow_recommendations, publish_items, replay_events
from streams.settings import Settings
from streams.worker.runtime import ensure_model, forget_local_state, prepare_topics

__all__ = ["format_recommendation", "run_demo"]

PRINT_EVERY_S = 0.5


def format_recommendation(rec: Mapping[str, Any], titles: Mapping[str, str], shown: int = 3) -> str:
    items = rec.get("items", [])[:shown]
    listed = "; ".join(
        f"{titles.get(i['item_id'], i['item_id'])} ({i['score']:.2f})" for i in items
    )
    return f"user {rec['user_id']:>5} | {rec.get('latency_ms', 0):6.1f} ms | {listed}" + (
        f"\n      why #1: {items[0]['reason']}" if items else ""
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StreamError(
                f"port {port} on {host} is in use (another worker?): stop it or pass --web-port"
            ) from exc


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": settings.bootstrap or "",
        "INTEREST_STREAM_HOME": str(settings.home),
        "INTEREST_STREAM_WEB_PORT": str(settings.web_port),
    }
    log = open(settings.home / "demo-worker.log", "ab")  # noqa: SIM115
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_healthy(settings: Settings, worker: subprocess.Popen[bytes], timeout_s: float) -> None:
    url = f"http://{settings.web_host}:{settings.web_port}/healthz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise StreamError(
                f"the worker exited ({worker.returncode}); see {settings.home / 'demo-worker.log'}"
            )
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise StreamError(f"the worker was not healthy after {timeout_s}s ({url})")


async def _replay_and_print(
    settings: Settings,
    events_path: Any,
    titles: Mapping[str, str],
    rate: float | None,
    limit: int | None,
) -> None:
    started = time.perf_counter()
    first: list[float] = []
    received = 0

    async def printer() -> None:
        nonlocal received
        last_print = 0.0
        async for rec in follow_recommendations(settings, from_beginning=True):
            received += 1
            if not first:
                first.append(time.perf_counter() - started)
            now = time.perf_counter()
            if now - last_print >= PRINT_EVERY_S:
                last_print = now
                click.echo(format_recommendation(rec, titles))

    task = asyncio.create_task(printer())
    report = await replay_events(
        settings, islice(read_events(events_path), limit), rate=rate, total=limit, progress=False
    )
    await asyncio.sleep(2.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    click.echo(
        f"\nreplayed {report.events:,} events in {report.seconds:.1f}s "
        f"({report.rate:,.0f} events/s); {received:,} recommendation messages; "
        f"first after {first[0] if first else float('nan'):.2f}s"
    )


def _start_trainer(
    settings: Settings, items: Path, events: Path, epochs: int
) -> subprocess.Popen[bytes] | None:
    """Train the sequence Transformer in the background when the worker would find none.

    The worker starts at once with the short-term vector and hot-reloads the model as soon as
    ``train`` writes it, so the first recommendations never wait for training.
    """
    out = settings.resolved_sequence_model_dir
    if epochs <= 0 or is_sequence_model(out):
        return None
    log_path = settings.home / "demo-train.log"
    click.echo(f"no sequence model in {out}: training one in the background (at most {epochs} "
               f"epochs, a few minutes on 2 cores; log {log_path}); the worker switches to it "
               "when it is written (--train-epochs 0: never)")  # fmt: skip
    argv = [sys.executable, "-m", "streams.cli", "train", "--items", str(items),
            "--events", str(events), "--out", str(out),
            "--epochs", str(epochs), "--patience", "5"]  # fmt: skip
    env = {**os.environ, "INTEREST_STREAM_HOME": str(settings.home)}
    log = open(log_path, "ab")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603


def _await_model(settings: Settings, trainer: subprocess.Popen[bytes], base: str) -> None:
    """Wait for the background training, then for the worker to serve the new model."""
    if trainer.poll() is None:
        click.echo("waiting for the sequence model's training to finish (Ctrl-C stops it) ...")
    if trainer.wait() != 0:
        click.echo(f"training failed (see {settings.home / 'demo-train.log'}); short-term only")
        return
    deadline = time.monotonic() + 4 * settings.model_poll_s + 10
    while time.monotonic() < deadline:
        version = _metrics(base).get("sequence_model_version")
        if version:
            click.echo(f"worker switched to sequence model {version}")
            return
        time.sleep(0.5)
    click.echo("the worker has not picked the new model up yet; see its /metrics.json")


def _metrics(base: str) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        with urllib.request.urlopen(f"{base}/metrics.json", timeout=2) as r:  # noqa: S310
            body = json.load(r)
            return body if isinstance(body, dict) else {}
    return {}


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    if proc.poll() is None:
        proc.kill()


def run_demo(
    settings: Settings,
    *,
    rate: float | None,
    limit: int | None,
    linger: bool,
    files: tuple[Path, Path] | None = None,
    train_epochs: int = 0,
) -> None:
    t0 = time.perf_counter()
    signal.signal(signal.SIGTERM, _interrupt)  # clean up the worker and broker as on Ctrl-C
    settings.home.mkdir(parents=True, exist_ok=True)
    ensure_model(settings)
    items_path, events_path = files or prepare_ml100k(
        settings.home / "data" / "ml-100k", settings.home / "cache"
    )
    trainer = _start_trainer(settings, items_path, events_path, train_epochs)
    items = read_items(items_path)
    titles = {i.item_id: i.title for i in items}
    embedded = not settings.bootstrap
    with broker_for(settings.bootstrap, settings.home / "broker.log") as bootstrap:
        settings = settings.replace(bootstrap=bootstrap)
        if embedded:
            forget_local_state(settings)
        click.echo(f"broker: {bootstrap}")
        prepare_topics(settings)
        asyncio.run(publish_items(settings, items))
        _check_port_free(settings.web_host, settings.web_port)
        worker = _start_worker(settings)
        try:
            _wait_healthy(settings, worker, timeout_s=120)
            base = f"http://{settings.web_host}:{settings.web_port}"
            click.echo(
                f"worker ready after {time.perf_counter() - t0:.1f}s; web view: {base}/dashboard  "
                f"{base}/inspect?user=196  {base}/metrics.json"
            )
            asyncio.run(_replay_and_print(settings, events_path, titles, rate, limit))
            if trainer is not None and not linger:
                _await_model(settings, trainer, base)
            click.echo(json.dumps(_metrics(base), indent=1))
            if linger:
                click.echo(f"web view still up at {base}/ - Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    worker.wait()
        finally:
            _stop(worker)
            if trainer is not None and trainer.poll() is None:
                click.echo("stopping the unfinished training (make demo again trains anew)")
            _stop(trainer)
