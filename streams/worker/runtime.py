"""Starting a worker: broker address, topics, model, Faust worker — in that order."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from pathlib import Path

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from encoders import (
    CUDA,
    INT8_FILE,
    ExportError,
    ModelNotFoundError,
    TextEncoder,
    choose_providers,
    default_model_source,
    export_text_encoder,
    is_exported,
    limit_ann_threads,
    optimize_fp16,
    quantize_int8,
    read_fp16_card,
    usable_cpu_count,
)
from interest_state import UpdateParams
from streams.errors import SettingsError, StreamError
from streams.settings import Settings
from streams.worker.ab import Split
from streams.worker.app import create_app, topic_specs
from streams.worker.kafka_auth import client_options
from streams.worker.model_watch import ModelWatcher
from streams.worker.pipeline import Pipeline
from streams.worker.topics import ensure_topics
from streams.worker.vector_cache import VectorCache

__all__ = [
    "ab_split",
    "build_ab_watcher",
    "build_pipeline",
    "build_watcher",
    "check_guarantee",
    "ensure_model",
    "forget_local_state",
    "limit_blas_threads",
    "prepare_topics",
    "run_worker",
]

log = logging.getLogger(__name__)


def ensure_model(settings: Settings, source: Path | None = None, *, fp16: bool = False) -> Path:
    """Export the text encoder into ``settings.resolved_model_dir`` unless it is already there;
    quantise it when the int8 encoder is chosen; build the fused fp16 graph when asked or when
    the encoder will run on CUDA (a worker without the ``onnx`` package then runs float32)."""
    out = settings.resolved_model_dir
    if not is_exported(out):
        _export(out, source)
    if settings.encoder_int8 and not (out / INT8_FILE).is_file():
        log.info("int8 encoder: quantising %s", out / INT8_FILE)
        quantize_int8(out)
    on_cuda = not settings.encoder_int8 and choose_providers(settings.provider)[0] == CUDA
    if (fp16 or on_cuda) and read_fp16_card(out) is None:
        try:  # an export is never redone here: it may come from a --source of the user's
            log.info("fp16 graph: fused and converted in %s", optimize_fp16(out))
        except ExportError as exc:  # missing onnx, an old export, a graph that does not fuse
            if fp16:
                raise
            log.warning("no fp16 graph, the float32 one runs on CUDA: %s", exc)
    return out


def _export(out: Path, source: Path | None) -> None:
    src = source or default_model_source()
    report = export_text_encoder(src, out)
    log.info(
        "exported %s to %s in %.1fs (max |torch - onnx| = %.2e)",
        report.source,
        out,
        report.seconds,
        report.max_abs_diff,
    )


def build_pipeline(settings: Settings) -> Pipeline:
    model_dir = settings.resolved_model_dir
    try:
        encoder = TextEncoder.load(
            model_dir, provider=settings.provider, quantized=settings.encoder_int8
        )
    except ModelNotFoundError as exc:
        raise StreamError(f"{exc}\nrun `interest-stream export` first") from exc
    log.info("text encoder %s on %s", encoder.model_version, encoder.provider)
    params = UpdateParams(half_life_s=settings.half_life_s, history_len=settings.history_len,
                          interests=settings.interests,
                          negative_dwell_ms=settings.negative_dwell_ms)  # fmt: skip
    cache = VectorCache.for_encoder(settings.vector_cache_dir, encoder) \
        if settings.vector_cache else None  # fmt: skip
    log.info("catalog vector cache: %s", cache.folder if cache is not None else "off")
    return Pipeline(encoder, params, top_k=settings.top_k, blend_weight=settings.blend_weight,
                    ann_min_items=settings.ann_min_items,
                    candidate_index=settings.candidate_index,
                    index_threads=settings.blas_threads or None, vector_cache=cache,
                    mmr_lambda=settings.mmr_lambda, personal_after=settings.personal_after,
                    interest_slots=settings.interest_slots,
                    explore_slots=settings.explore_slots, split=ab_split(settings))


def ab_split(settings: Settings) -> Split | None:
    """The A/B split of ``settings`` (``None`` without ``INTEREST_STREAM_AB_MODEL_DIR``)."""
    if settings.ab_model_dir is None:
        return None
    split = Split(settings.ab_share, settings.ab_salt)
    log.info("A/B: %.1f %% of users served by variant B from %s (salt %r)",
             100 * split.share, settings.ab_model_dir, split.salt)  # fmt: skip
    return split


def build_watcher(settings: Settings, pipeline: Pipeline) -> ModelWatcher:
    """The sequence model watcher, polled once now: the worker starts with the model that is
    there (or short-term only, saying so), and the app's timer picks up later ones.

    On up to 2 cores the sequence model runs on one intra-op thread: its graph is small (a few
    users x 50 steps per microbatch), a second thread only adds hand-offs, and the other core
    is the event loop's and the broker's. ``Pipeline.process`` on ml-100k, 2 cores,
    alternating runs: 1.41-1.59 vs 1.56-1.67 ms per 8-event batch, 2.81-3.46 vs 3.25-3.54 ms
    per 64. Bigger machines keep onnxruntime's default (not measured there).
    """
    return _polled(settings, pipeline, settings.resolved_sequence_model_dir, "A")


def build_ab_watcher(settings: Settings, pipeline: Pipeline) -> ModelWatcher | None:
    """The watcher of variant B's folder (``None`` without A/B), polled once now, like
    :func:`build_watcher`."""
    if settings.ab_model_dir is None:
        return None
    if pipeline.split is None:
        raise SettingsError("INTEREST_STREAM_AB_MODEL_DIR is set but the pipeline has no split")
    return _polled(settings, pipeline, settings.ab_model_dir, "B")


def _polled(settings: Settings, pipeline: Pipeline, folder: Path, variant: str) -> ModelWatcher:
    watcher = ModelWatcher(
        folder, pipeline, provider=settings.provider,
        intra_op_threads=1 if usable_cpu_count() <= 2 else None, variant=variant,
    )  # fmt: skip
    watcher.poll()
    return watcher


def limit_blas_threads(threads: int) -> None:
    """Cap numpy's BLAS pool (0 leaves it alone).

    A worker's matrix products are small (a few users x the catalog), and a BLAS pool as wide
    as the machine spins against the event loop and ONNX Runtime for each of them: on 2 cores,
    one BLAS thread made ``Pipeline.process`` 2.3x faster (5,535 vs 2,430 events/s).
    """
    if threads > 0:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
        limit_ann_threads(threads)  # faiss's OpenMP pool likewise (small adds ran 10x slower)
        log.info("numpy BLAS and faiss limited to %d thread(s)", threads)


def prepare_topics(settings: Settings) -> None:
    if not settings.bootstrap:
        raise StreamError("no bootstrap server: start a broker first")
    asyncio.run(ensure_topics(
        settings.bootstrap, topic_specs(settings), settings.broker_wait_s,
        replication=settings.replication_factor,
        cleanup_policy=settings.compacted_cleanup_policy,
        client_options=client_options(settings),
    ))


def check_guarantee(settings: Settings, timeout_s: float = 15.0) -> None:
    """Refuse to start ``exactly_once`` on a broker without Kafka transactions.

    Faust's transactional producers first ask the broker for a producer id of a transactional
    id (InitProducerId) when the first event is sent. This asks the same now, with a producer
    of its own, so a broker without transactions stops the worker at start with a
    :class:`SettingsError` naming the setting and the broker, not at the first event. Tansu
    0.6.0, the embedded broker, lists the transaction APIs among its versions but answers
    InitProducerId for a transactional id with an error, so its API versions are not enough.
    """
    if settings.processing_guarantee != "exactly_once":
        return
    if not settings.bootstrap:
        raise StreamError("no bootstrap server: start a broker first")
    asyncio.run(_init_transactions(settings.bootstrap, settings, timeout_s))
    log.info("processing guarantee exactly_once: %s gave a transactional producer id",
             settings.bootstrap)


async def _init_transactions(bootstrap: str, settings: Settings, timeout_s: float) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"{settings.app_id}-guarantee-check",
        request_timeout_ms=int(timeout_s * 1000),
        **client_options(settings),
    )
    try:
        await asyncio.wait_for(producer.start(), timeout_s)
    except (KafkaError, TimeoutError, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise SettingsError(
            f"INTEREST_STREAM_PROCESSING_GUARANTEE=exactly_once needs Kafka transactions, and "
            f"the broker at {bootstrap} gave no producer id for a transactional id "
            f"(InitProducerId, {timeout_s:g} s allowed): {reason}. The embedded broker (Tansu) "
            "has no transactions: "
            "run at_least_once there (the default), or use a Kafka cluster with transactions "
            "(one broker needs transaction.state.log.replication.factor=1 and "
            "transaction.state.log.min.isr=1)"
        ) from exc
    finally:
        await producer.stop()


def forget_local_state(settings: Settings) -> None:
    """Remove the worker's local table files.

    Used when the broker is a fresh embedded one: it is memory-only, so its changelog starts
    empty and local state from an earlier broker would contradict it (faust refuses to start
    when a persisted offset is beyond the changelog's end).
    """
    if settings.data_dir.exists():
        log.info("fresh embedded broker: removing local state in %s", settings.data_dir)
        shutil.rmtree(settings.data_dir)


def run_worker(settings: Settings) -> None:
    """Run one worker until it is stopped; exits non-zero when the worker crashes."""
    prepare_topics(settings)
    check_guarantee(settings)  # before the model and faust: a broker without transactions
    ensure_model(settings)  # the export, its int8 copy when asked for, the fp16 graph on CUDA
    limit_blas_threads(settings.blas_threads)
    pipeline = build_pipeline(settings)
    watcher, ab_watcher = build_watcher(settings, pipeline), build_ab_watcher(settings, pipeline)
    app = create_app(settings, pipeline, watcher, ab_watcher)
    os.makedirs(settings.data_dir, exist_ok=True)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    log.info("web view on http://%s:%d/", settings.web_host, settings.web_port)
    worker.execute_from_commandline()
