"""``create_app(settings, pipeline, watcher, ab_watcher) -> faust.App``: the one place where the
stream is wired.

Topics, agents, the catalog feed, the control feed, the trending table and web views live in
their own modules; this factory creates the app with settings that suit a low-latency
microbatching worker and registers them, plus a timer that polls the sequence model folder
every ``model_poll_s`` (the load and checks run in their own thread, never in the event loop
nor in the batch thread). The pipeline's lists take their trending items from the trending
feed (:mod:`streams.worker.trending`), and the per-user views are routed to the worker that
holds the user (:mod:`streams.worker.routing`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import faust
from faust.types import TableT

from streams.errors import SettingsError
from streams.settings import Settings
from streams.worker import agents, catalog, control, trending, views
from streams.worker.model_watch import ModelWatcher
from streams.worker.pipeline import Pipeline
from streams.worker.routing import UserRouter
from streams.worker.stats import Stats
from streams.worker.topics import TopicSpec
from streams.worker.transport import faust_app
from streams.worker.wiring import Wiring

__all__ = [
    "TABLE_NAME",
    "changelog_topic_name",
    "create_app",
    "interest_table",
    "store_options",
    "topic_specs",
]

TABLE_NAME = "user_interest"
log = logging.getLogger(__name__)


def changelog_topic_name(settings: Settings) -> str:
    return f"{settings.app_id}-{TABLE_NAME}-changelog"


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the worker reads or writes, with the configured partition count.

    Source topics and the changelog share one count, so each event partition has the
    changelog partition of the same number (the table is co-partitioned with its source).
    The control topic has one partition, so every worker sees every command in order. The
    trending table's changelog is co-partitioned too, and its records expire
    (:func:`streams.worker.trending.topic_spec`).
    """
    t, n = settings.topics, settings.partitions
    return [
        *(TopicSpec(name, n) for name in t.events),
        TopicSpec(t.items, n, compacted=True),
        TopicSpec(t.recommendations, n),
        TopicSpec(t.dlq, n),
        TopicSpec(changelog_topic_name(settings), n, compacted=True),
        trending.topic_spec(settings),
        TopicSpec(t.control, 1, compacted=True),
    ]


def store_options(settings: Settings) -> dict[str, int]:
    """RocksDB options of the ``user_interest`` table (fields of faust's ``RocksDBOptions``).

    Faust opens one RocksDB per partition, each with its own block cache and memtables; its
    defaults (a 2 GiB cache and up to 3 x 64 MiB memtables per partition) let a worker holding
    1M users in 4 partitions grow past 2 GB RSS as reads fill the caches. These bound the store
    to about ``store_block_cache_mb + 2 * partitions * store_write_buffer_mb`` MiB: the cache
    budget is split over the partitions, and each partition keeps at most two memtables.
    """
    mib = 1024 * 1024
    return {
        "block_cache_size": max(mib, settings.store_block_cache_mb * mib // settings.partitions),
        "write_buffer_size": settings.store_write_buffer_mb * mib,
        "max_write_buffer_number": 2,
    }


def _trending_store_options(settings: Settings) -> dict[str, int] | None:
    """RocksDB options of the trending table: a few counts per item and pane, so a small cache
    and small memtables (faust's defaults would give each partition a 2 GiB cache)."""
    if settings.store != "rocksdb":
        return None
    mib = 1024 * 1024
    return {"block_cache_size": mib, "write_buffer_size": 2 * mib, "max_write_buffer_number": 2}


def interest_table(app: faust.App, settings: Settings) -> TableT[bytes, bytes]:
    """The ``user_interest`` table (raw bytes: :func:`interest_state.encode_state` values)."""
    options = store_options(settings) if settings.store == "rocksdb" else None
    return app.Table(
        TABLE_NAME,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        options=options,
    )


def create_app(
    settings: Settings,
    pipeline: Pipeline,
    watcher: ModelWatcher | None = None,
    ab_watcher: ModelWatcher | None = None,
) -> faust.App:
    """Build the Faust app for ``settings`` around a ready :class:`Pipeline`.

    With a ``watcher``, a timer hot-reloads the sequence model it watches; with an
    ``ab_watcher`` (A/B, :mod:`streams.worker.ab`), another timer variant B's.
    """
    if settings.bootstrap is None:
        raise SettingsError("create_app needs settings.bootstrap (start a broker first)")
    app = faust_app(settings)
    t = settings.topics
    table = interest_table(app, settings)
    counter = trending.TrendingTable(app, settings, _trending_store_options(settings))
    counts = trending.TrendingCounts(settings.trending_window_s, settings.trending_hop_s)
    trending.TrendingFeed(app, settings, counts)
    pipeline.lists.trending = counts.top
    wiring = Wiring(
        app=app,
        settings=settings,
        events=app.topic(*t.events, key_type=bytes, value_type=bytes),
        items=app.topic(t.items, key_type=bytes, value_type=bytes),
        recommendations=app.topic(t.recommendations, key_type=bytes, value_type=bytes),
        dlq=app.topic(t.dlq, key_type=bytes, value_type=bytes),
        table=table,
        stats=Stats(),
        trending=counter,
    )
    feed = catalog.CatalogFeed(wiring, pipeline)
    agents.register(wiring, pipeline, feed)
    router = UserRouter(app, changelog_topic_name(settings), settings.partitions)
    views.register(wiring, pipeline, feed, watcher, router=router, ab_watcher=ab_watcher)
    control.ControlFeed(wiring, table)
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
    for each, name in ((watcher, "sequence-model-watch"), (ab_watcher, "ab-model-watch")):
        if each is not None:
            _watch_models(app, each, settings.model_poll_s, loader, name)
    return app


def _watch_models(
    app: faust.App, watcher: ModelWatcher, interval_s: float, loader: ThreadPoolExecutor, name: str
) -> None:
    """Poll ``watcher`` every ``interval_s`` in the ``loader`` thread (one for both variants:
    two models are never loaded at once)."""

    async def watch_sequence_model() -> None:
        await asyncio.get_running_loop().run_in_executor(loader, watcher.poll)

    app.timer(interval=interval_s, name=name)(watch_sequence_model)
