"""Web views on the Faust web server: ``/dashboard``, ``/healthz``, ``/metrics`` (Prometheus),
``/metrics.json``, ``/users/{id}`` (JSON) and ``/inspect?user=<id>`` (the same as a page).

State is read from the ``user_interest`` table (never from module-level dicts), so what a view
shows is what the stream keeps. Each app has its own Prometheus registry and its own
:class:`~streams.worker.history.Sampler` (consumer lag, table size, the charts' history).

The per-user views answer on any worker: a user this worker does not hold is asked of the
worker that does (:class:`~streams.worker.routing.UserRouter`), and a user no worker holds gets
the trending list (cold start).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from faust.web import Request, Response, View

from interest_state import (
    Catalog,
    CodecError,
    EventType,
    Recommendation,
    decode_state,
    nearest_titles,
)
from streams.errors import SettingsError
from streams.worker.catalog import CatalogFeed
from streams.worker.dashboard import render_dashboard, state_rows
from streams.worker.health import BrokerMonitor
from streams.worker.history import Sampler
from streams.worker.http_errors import BadRequestLog, valid_user_id
from streams.worker.inspector import render_inspector
from streams.worker.lag import ConsumerLag
from streams.worker.model_watch import ModelWatcher
from streams.worker.pipeline import Pipeline
from streams.worker.prometheus import CONTENT_TYPE, WorkerCollector, render, worker_registry
from streams.worker.routing import UserRouter
from streams.worker.stats import since_param
from streams.worker.trending import TABLE_NAME as TRENDING_TABLE
from streams.worker.wiring import Wiring

__all__ = ["ab_summary", "ranking_summary", "register", "user_summary"]

RECENT_SHOWN = 10


def _listed(recs: list[Recommendation], index: Catalog) -> list[dict[str, Any]]:
    return [
        {
            "item_id": r.item_id,
            "title": index.title_of(r.item_id),
            "score": round(r.score, 4),
            "reason": r.reason,
        }
        for r in recs
    ]


def user_summary(user_id: str, raw: bytes | None, pipeline: Pipeline) -> dict[str, Any]:
    """The JSON body of ``/users/{user_id}``. A user with no state (``found`` false) gets what
    a new user gets: the trending items (empty while nothing trends)."""
    index = pipeline.index
    variant = pipeline.variant_of(user_id)
    if raw is None:
        return {"user_id": user_id, "found": False, "events": 0,
                "recommendations": _listed(pipeline.recommend_new_user(), index),
                "model_version": pipeline.model_version}  # fmt: skip
    try:
        state = decode_state(raw)
    except CodecError as exc:
        return {"user_id": user_id, "found": True, "error": f"state does not decode: {exc}"}
    recent = [
        {
            "item_id": item,
            "title": index.title_of(item),
            "type": EventType(kind).name.lower(),
            "ts": ts,
        }
        for item, kind, ts in zip(
            state.recent_items, state.recent_types, state.recent_ts, strict=True
        )
    ][::-1][:RECENT_SHOWN]
    recs = pipeline.recommend(state, user_id=user_id)
    return {
        "user_id": user_id,
        "found": True,
        "events": state.n_events,
        "events_by_type": dict(zip(("browse", "click", "comment", "dislike"), state.n_by_type,
                                   strict=True)),
        "duplicates_dropped": state.n_duplicates,
        "long_term_version": state.long_term_version or None,
        "updated_ts": state.updated_ts,
        "interest_summary": nearest_titles(state, index, k=5),
        "recent_events": recent,
        "recommendations": _listed(recs, index),
        "model_version": pipeline.model_version_of(variant),
        "variant": variant,
    }


def ranking_summary(pipeline: Pipeline, variant: str = "A") -> str:
    """How the worker ranks ``variant``'s users now, in words (``/metrics.json``, dashboard)."""
    active = pipeline.slots[variant].sequence
    if active is None:
        return "short-term only (no sequence model)"
    return f"blend {pipeline.blend_weight:g} x sequence {active.version} + short-term"


def ab_summary(pipeline: Pipeline) -> dict[str, Any]:
    """The ``ab`` field of ``/metrics.json``: the split and what each variant serves
    (``{"enabled": false}`` without A/B)."""
    split = pipeline.split
    if split is None:
        return {"enabled": False}
    return {"enabled": True, "share_b": split.share, "salt": split.salt,
            "variants": {v: {"model_version": pipeline.model_version_of(v),
                             "ranking": ranking_summary(pipeline, v)}
                         for v in pipeline.slots}}  # fmt: skip


def register(
    wiring: Wiring,
    pipeline: Pipeline,
    feed: CatalogFeed,
    watcher: ModelWatcher | None = None,
    *,
    router: UserRouter | None = None,
    ab_watcher: ModelWatcher | None = None,
) -> None:
    """Register the views on ``wiring.app``; with a ``router``, the per-user views ask the
    worker that holds a user this one does not (without, they answer from this one alone).
    ``ab_watcher``: variant B's model watcher (A/B), whose fields ``/metrics.json`` adds."""
    app = wiring.app
    settings = wiring.settings
    if settings.bootstrap is None:
        raise SettingsError("the web views need settings.bootstrap (the broker they report on)")
    # the trending changelog is not watched: its records come from events, and a broker that
    # lost them lost those events too (watched on their own topics)
    changelogs = [table.changelog_topic.get_topic_name() for table in app.tables.values()
                  if table.name != TRENDING_TABLE]  # fmt: skip
    watched = [*settings.topics.events, settings.topics.items, *changelogs]
    monitor = BrokerMonitor(
        app, settings.bootstrap, watched, settings.partitions, settings.data_dir
    )
    broker = monitor.register().health

    def runtime() -> dict[str, Any]:
        return {
            "model_version": pipeline.model_version,
            "provider": pipeline.encoder.provider,
            "catalog_ready": feed.ready.is_set(),
            "items": len(pipeline.index),
            "ranking": ranking_summary(pipeline),
            "candidates": pipeline.candidate_summary,
            "blend_weight": pipeline.blend_weight,
            "candidate_failures": pipeline.candidate_failures,
            "sequence_failures": pipeline.sequence_failures,
            "sequence_nonfinite": pipeline.sequence_nonfinite,
            "ab": ab_summary(pipeline),
            **(watcher.metrics() if watcher is not None else {}),
            **(ab_watcher.metrics() if ab_watcher is not None else {}),
            **broker.metrics(),
        }

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        outage = broker.outage()
        if outage is not None:
            return self.json({**runtime(), **outage}, status=503)
        ok = feed.ready.is_set() and not app.should_stop
        body = {"status": "ok" if ok else "starting", **runtime()}
        return self.json(body, status=200 if ok else 503)

    sampler = Sampler(
        wiring.stats,
        ConsumerLag(app, settings.bootstrap, settings.topics.events),
        wiring.table,
    )
    app.task(sampler.run)
    registry = worker_registry(WorkerCollector(wiring.stats, sampler, runtime))
    BadRequestLog.install()

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        return self.bytes(render(registry), content_type=CONTENT_TYPE)

    @app.page("/metrics.json")
    async def metrics_json(self: View, request: Request) -> Response:
        try:
            since = since_param(request.query)
            history = since_param(request.query, "history")
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        body = {**runtime(), **wiring.stats.snapshot(since), **sampler.gauges()}
        if "history" in request.query:
            body["dashboard_rows"] = state_rows(body)
            body["history"] = sampler.history.since(history)
            body["history_now"] = time.time()
        return self.json(body)

    @app.page("/dashboard")
    async def dashboard(self: View, request: Request) -> Response:
        page = render_dashboard({**runtime(), **wiring.stats.snapshot(), **sampler.gauges()})
        return self.html(page)

    here = str(app.conf.canonical_url)

    async def summary(user_id: str, request: Request) -> dict[str, Any]:
        """The user's body from this worker's state, else from the worker that holds them
        (not for a request another worker forwarded), else the unknown-user body."""
        key = valid_user_id(user_id)
        raw = wiring.table.get(key)
        if raw is None and router is not None and not router.is_forwarded(request.headers):
            found = await router.find(user_id, key)
            if found is not None:
                return found
        # ranking runs the ONNX sequence model: off the event loop, like the agent's batches
        body = await asyncio.get_running_loop().run_in_executor(
            None, user_summary, user_id, raw, pipeline
        )
        return {**body, "served_by": here}

    @app.page("/users/{user_id}")
    async def user(self: View, request: Request, user_id: str) -> Response:
        """The user's state and current recommendations, from whichever worker holds them
        (``served_by``). A user no worker holds answers **404** with ``"found": false`` and the
        trending list in ``recommendations`` (reason ``"trending now"``): the status says there
        is no such user, as before, so a client that keys on it keeps working, and the body
        still gives a client what to show a new user."""
        try:
            body = await summary(user_id, request)
        except ValueError as exc:
            return self.json({"error": str(exc)}, status=400)
        return self.json(body, status=200 if body["found"] else 404)

    @app.page("/inspect")
    async def inspect(self: View, request: Request) -> Response:
        user_id = request.query.get("user", "").strip()
        if not user_id:
            return self.html(render_inspector("", None))
        try:
            body = await summary(user_id, request)
        except ValueError as exc:
            return self.html(render_inspector("", None, problem=str(exc)), status=400)
        return self.html(render_inspector(user_id, body), status=200 if body["found"] else 404)
