"""``interest-stream bench``: speed of the whole stream and of its parts, each next to a baseline.

Every figure is printed with a baseline measured in the same run, and the ratio between them,
because the machines this runs on are small and shared (absolute numbers are noisy; ratios
much less so). This module is the command and the runner: it parses the options, runs the
chosen sections in a fixed order and prints their rows as one table (and JSON with ``--out``).
Sections, one module each:

1. ``stream`` (:mod:`streams.bench.stream`): end-to-end events/s of one real worker through the
   broker against two pass-through Faust apps (:mod:`streams.bench.baseline`), event->output
   latency at fixed input rates (:mod:`streams.bench.latency`), and the processes' RSS.
2. ``scale`` (:mod:`streams.bench.scale`): events/s of two workers of one group against one on
   the same broker, with each process's CPU; the pause when the second joins; state bytes.
3. ``encoder`` (:mod:`streams.bench.encoder`): sentences/s of :class:`encoders.TextEncoder` per
   batch size vs torch eager; int8 vs fp32; the host work vs ``tokenizers`` alone.
4. ``rank`` (:mod:`streams.bench.rank`): users/s of :func:`interest_state.rank` over an
   :class:`encoders.ItemIndex` of random unit vectors vs a plain numpy matmul + top-k.
5. ``ann`` (:mod:`streams.bench.ann`): users/s of ranking over approximate candidates
   (:mod:`encoders.index.ann`) vs exact ranking, with recall@10, at 10k / 100k / 1M items.
6. ``sequence`` (:mod:`streams.bench.sequence`): the Transformer's users/s vs a one-event step.
7. ``state`` (:mod:`streams.bench.state`): bytes of one full-ring user state
   (:func:`interest_state.encode_state`) vs pickle.
8. ``store`` (:mod:`streams.bench.store`): RSS of a process holding N users (1M; ``--quick``
   100k) in the worker's RocksDB table store vs faust's default store options, and a real
   worker that recovered them (:mod:`streams.bench.store_worker`).
9. ``gpu`` (:mod:`streams.bench.gpu`): the encoder and the worker on CUDA vs their baselines.

What the sections share (config, rows, table, timing, data) is in :mod:`streams.bench.common`;
the child processes they start and watch in :mod:`streams.bench.processes`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from streams.bench.common import SECTIONS, BenchConfig, Row, format_table
from streams.settings import Settings

__all__ = ["Report", "bench_command", "run_bench", "section_rows"]

#: The line each section prints to stderr as it starts (the others start silently).
PROGRESS = {
    "stream": "stream: broker, no-op, table+send and worker stages ...",
    "scale": "scale: one worker, then two of one group, on one broker ...",
    "encoder": "encoder ...",
    "rank": "rank ...",
    "ann": "ann: exact vs approximate ranking at large catalogs ...",
    "sequence": "sequence model ...",
    "store": "store: users in the worker's RocksDB table store ...",
}


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "seconds": self.seconds,
                "rows": [row.to_json() for row in self.rows]}


@contextlib.contextmanager
def timed(report: Report, name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        report.seconds[name] = round(time.perf_counter() - start, 2)


def run_meta(settings: Settings, cfg: BenchConfig) -> dict[str, Any]:
    import onnxruntime

    return {
        "quick": cfg.quick,
        "config": dataclasses.asdict(cfg),
        "broker": settings.bootstrap or "embedded tansu",
        "partitions": settings.partitions,
        "batch_size": settings.batch_size,
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "worker_ranking": _ranking(settings),
        "comment_share": cfg.comment_share,
        "commit": _commit(),
    }


def _commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes), or ``None`` outside git."""

    def git(*args: str) -> str:
        here = Path(__file__).resolve().parent
        done = subprocess.run(["git", *args], cwd=here, capture_output=True,  # noqa: S603,S607
                              text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _ranking(settings: Settings) -> str:
    from encoders.runtime.sequence import CARD_FILE, is_sequence_model

    folder = settings.resolved_sequence_model_dir
    if not is_sequence_model(folder):
        return f"short-term vector only (no sequence model in {folder})"
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    return f"blend {settings.blend_weight:g} x sequence {card.get('version')} + short-term"


def section_rows(name: str, settings: Settings, cfg: BenchConfig, tmp: Path,
                 echo: Callable[[str], None]) -> list[Row]:
    """Run one section; each is imported only when it runs (some load faiss, faust or torch)."""
    match name:
        case "stream":
            from streams.bench.stream import stream_section

            return stream_section(settings, cfg, tmp)
        case "scale":
            from streams.bench.scale import scale_section

            return scale_section(settings, cfg, tmp)
        case "encoder":
            from streams.bench.encoder import encoder_section, encoder_texts

            return encoder_section(settings, cfg, encoder_texts(settings))
        case "rank":
            from streams.bench.rank import rank_section

            return rank_section(cfg)
        case "ann":
            from streams.bench.ann import ann_section

            return ann_section(cfg, settings)
        case "sequence":
            from streams.bench.sequence import sequence_section

            return sequence_section(settings, cfg, echo)
        case "state":
            from streams.bench.state import state_section

            return state_section()
        case "store":
            from streams.bench.store import state_scale_section

            return state_scale_section(cfg, settings, tmp)
        case "gpu":
            from streams.bench.gpu import gpu_section

            shares = (cfg.comment_share,) if cfg.comment_share else (0.5, 1.0)
            return gpu_section(settings, cfg, tmp, echo, shares=shares)
    raise ValueError(f"no section {name!r}; choose from {', '.join(SECTIONS)}")


def run_bench(settings: Settings, cfg: BenchConfig, echo: Callable[[str], None]) -> Report:
    """Run the chosen sections in order; each progress line goes to ``echo``."""
    from streams.worker.runtime import ensure_model

    report = Report(meta=run_meta(settings, cfg))
    ensure_model(settings)
    with tempfile.TemporaryDirectory(prefix="interest-bench-") as tmp, timed(report, "total"):
        for name in SECTIONS:
            if name not in cfg.sections:
                continue
            if name in PROGRESS:
                echo(PROGRESS[name])
            with timed(report, name):
                report.rows += section_rows(name, settings, cfg, Path(tmp), echo)
    report.meta["loadavg_end"] = os.getloadavg()
    return report


def _sections(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = set(chosen) - set(SECTIONS)
    if unknown or not chosen:
        raise click.BadParameter(f"choose from {', '.join(SECTIONS)}; got {value!r}")
    return chosen


@click.command("bench")
@click.option("--quick", is_flag=True, help="CI-sized run: well under 2 minutes.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the results as JSON to this file.")
@click.option("--events", type=int, default=None,
              help="Events pre-loaded per stream stage (default 30,000; --quick 4,000).")
@click.option("--sections", default=",".join(SECTIONS), show_default=True,
              help="Comma-separated subset of the sections to run.")
@click.option("--comment-share", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Turn this share of the stream's events into comments (text encoded).")
@click.pass_context
def bench_command(
    ctx: click.Context, quick: bool, out: Path | None, events: int | None, sections: str,
    comment_share: float,
) -> None:
    """Events/s, latency, encoder, ranking and state size, each vs a same-run baseline."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    # SIGTERM unwinds like Ctrl-C, so every ``finally`` stops its broker and processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = dataclasses.replace(BenchConfig.for_mode(quick, events, _sections(sections)),
                              comment_share=comment_share)
    report = run_bench(settings, cfg, lambda line: click.echo(line, err=True))
    click.echo(format_table(report.rows))
    click.echo(f"\n{report.seconds.get('total', 0):.0f}s in all ("
               + ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items() if k != "total")
               + f"); {os.cpu_count()} CPUs, load {report.meta['loadavg_end'][0]:.1f}; "
               + f"worker ranking: {report.meta['worker_ranking']}; "
               + f"comments: {report.meta['comment_share']:.0%} of the stream's events")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        click.echo(f"results: {out}")


if __name__ == "__main__":
    bench_command()
