"""``interest-stream demo``: everything on one machine, recommendations printed as they come.

A sequence Transformer is trained first when there is none yet (``--train-epochs``, 0 skips).
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

from encoders import EncoderError, TextEncoder
from encoders.sequence import TrainConfig, is_sequence_model
from streams.broker import broker_for
from streams.datasets import prepare_ml100k, read_events, read_items
from streams.errors import StreamError
from streams.replay import follow_recommendations, publish_items, replay_events
from streams.runtime import ensure_model, forget_local_state, prepare_topics
from streams.settings import Settings

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


def _train_if_missing(settings: Settings, items: Path, events: Path, epochs: int) -> None:
    """Train the sequence Transformer on the demo's data when the worker would find none."""
    out = settings.resolved_sequence_model_dir
    if is_sequence_model(out):
        return
    click.echo(f"no sequence model in {out}: training one on {events} (at most {epochs} epochs, "
               "a few minutes on 2 cores; --train-epochs 0 skips it) ...")  # fmt: skip
    try:
        from streams.train import train_sequence

        encoder = TextEncoder.load(settings.resolved_model_dir, provider=settings.provider)
        card = train_sequence(items, events, encoder, out, TrainConfig(epochs=epochs, patience=5))
    except (EncoderError, ImportError) as exc:
        click.echo(f"training skipped ({exc}); ranking with the short-term vector only")
        return
    done = card["training"]
    ndcg, seconds = done["best_validation_ndcg10"], done["seconds"]
    click.echo(f"model {card['version']}: validation NDCG@10 {ndcg:.4f}, {seconds:.0f} s")


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
    if train_epochs > 0:
        _train_if_missing(settings, items_path, events_path, train_epochs)
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
                f"{base}/users/196  {base}/metrics"
            )
            asyncio.run(_replay_and_print(settings, events_path, titles, rate, limit))
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/metrics", timeout=2) as r:  # noqa: S310
                    click.echo(json.dumps(json.load(r), indent=1))
            if linger:
                click.echo(f"web view still up at {base}/ - Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    worker.wait()
        finally:
            worker.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=15)
            if worker.poll() is None:
                worker.kill()
