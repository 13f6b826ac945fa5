"""Hot reload of the sequence Transformer: poll the model card, load and check, swap or reject.

The card (``sequence.json``) is written last by ``interest-stream train --out`` and by
:func:`streams.worker.long_term.publish_model`, so a changed card means a complete model. It is
loaded and checked (:func:`streams.worker.long_term.load_checked`) in the caller's thread (the app
runs :meth:`ModelWatcher.poll` in its own executor thread from a timer), aligned with the item index
and swapped into the pipeline by one reference assignment: the next batch uses it. A model that
fails is rejected with its reason (log line, ``/metrics``) and the old one keeps serving; the
same card is not tried twice. With A/B (:mod:`streams.worker.ab`) a second watcher serves
variant ``B`` from its own folder the same way; its ``/metrics.json`` fields begin with ``ab_``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from streams.errors import ModelRejected
from streams.worker.long_term import ActiveSequence, card_fingerprint, load_checked
from streams.worker.pipeline import Pipeline

__all__ = ["ModelWatcher"]

log = logging.getLogger(__name__)


class ModelWatcher:
    """Polls ``folder``; a new card means: load, check, swap into ``pipeline`` (or reject).

    :meth:`poll` is blocking (run it in an executor thread); it never raises. Counters for
    ``/metrics``: ``loads`` (models put into service, the first included), ``reloads`` (models
    that replaced another), ``rejects`` and
    ``last_reject``. ``variant``: the pipeline slot it serves (``"B"``: the A/B folder).
    """

    def __init__(
        self,
        folder: Path,
        pipeline: Pipeline,
        *,
        provider: str = "auto",
        intra_op_threads: int | None = None,
        variant: str = "A",
    ) -> None:
        self.folder = Path(folder)
        self.variant = variant
        self.pipeline = pipeline
        self.provider = provider
        self.intra_op_threads = intra_op_threads
        self.loads = 0
        self.reloads = 0
        self.rejects = 0
        self.last_reject: str | None = None
        self._seen: tuple[int, int, int] | None | bool = False  # False: never polled
        self._lock = threading.Lock()

    def poll(self) -> bool:
        """Check the folder once; True when a new model was swapped in."""
        with self._lock:
            fingerprint = card_fingerprint(self.folder)
            if fingerprint == self._seen:
                return False
            self._seen = fingerprint
            if fingerprint is None:
                self._say_absent()
                return False
            try:
                return self._load()
            except Exception as exc:  # a model, however broken, must never stop the worker
                self._reject(f"{type(exc).__name__}: {exc}")
                return False

    def _load(self) -> bool:
        try:
            model = load_checked(
                self.folder,
                text_dim=self.pipeline.encoder.dim,
                probes=self.pipeline.probe_histories(),
                provider=self.provider,
                intra_op_threads=self.intra_op_threads,
            )
            old = self.current
            self.pipeline.install_sequence(model, self.variant)
        except ModelRejected as exc:
            self._reject(exc.reason)
            return False
        self.loads += 1
        if old is not None:
            self.reloads += 1
        log.info(
            "sequence model %s serving from %s (variant %s, dim %d, %d items, max_len %d; "
            "was %s); blend weight %.2f",
            model.version, self.folder, self.variant, model.dim, len(model.item_ids), model.max_len,
            old.version if old else "short-term only", self.pipeline.blend_weight,
        )  # fmt: skip
        if model.max_len > self.pipeline.params.history_len:
            log.warning(
                "the model reads %d events but the state ring keeps %d "
                "(INTEREST_STREAM_HISTORY_LEN)", model.max_len, self.pipeline.params.history_len,
            )  # fmt: skip
        return True

    def _reject(self, reason: str) -> None:
        self.rejects += 1
        self.last_reject = reason
        current = self.current
        log.error(
            "sequence model in %s rejected: %s; still serving %s",
            self.folder, reason, current.version if current else "short-term only",
        )  # fmt: skip

    def _say_absent(self) -> None:
        current = self.current
        if current is None:
            log.warning(
                "no sequence model in %s: ranking with the short-term vector only "
                "(train one with `interest-stream train --out %s`)", self.folder, self.folder,
            )  # fmt: skip
        else:
            log.warning("no model card in %s any more; keeping %s", self.folder, current.version)

    @property
    def current(self) -> ActiveSequence | None:
        """The model serving this watcher's variant now (``None``: short-term only)."""
        return self.pipeline.slots[self.variant].sequence

    def metrics(self) -> dict[str, Any]:
        """Its ``/metrics.json`` fields (``ab_``-prefixed for variant ``B``)."""
        current = self.current
        prefix = "" if self.variant == "A" else "ab_"
        return {
            f"{prefix}sequence_model_dir": str(self.folder),
            f"{prefix}sequence_model_version": current.version if current else None,
            f"{prefix}model_loads": self.loads,
            f"{prefix}model_reloads": self.reloads,
            f"{prefix}model_rejects": self.rejects,
            f"{prefix}model_last_reject": self.last_reject,
        }
