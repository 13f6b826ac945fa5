"""The sequence Transformer in the stream: histories from the state ring, the item matrix aligned
with the item index, and the checked hot reload of a model folder. Free of Faust.

A user's history for the model is their state's ring (``recent_items`` / ``recent_types`` /
``recent_ts``, ``history_len`` events). :class:`ActiveSequence` is one loaded model with its
item matrix aligned row for row with the stream's :class:`ItemIndex`: items the model knows take
their row of ``items.npy``, the others their vector from text (``item_vectors_from_text``), so
a brand-new catalog item is scored at once. A model trained with tags or item vectors adds them
to a new item's text vector when the caller passes them (``tags`` / ``vectors`` of
:meth:`AlignedItems.write` and :meth:`AlignedItems.build`); an item without them (or a caller
that passes none) gets its text vector alone, the documented fallback. The pipeline and the
offline evaluator both call :meth:`ActiveSequence.with_long_terms` (one ``encode_users`` per
batch) and then :func:`interest_state.rank_blended`.

:func:`load_checked` loads a model folder and checks it can serve (the hot reload of
:mod:`streams.worker.model_watch` swaps in only models that pass). ``interest-stream train --out``
writes the model card (``sequence.json``) last, after the graph, the item matrix and the text
projection; to publish a model by hand, use :func:`publish_model` (files first, the card last,
each renamed into place). A model that fails raises :class:`streams.errors.ModelRejected`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encoders import EncoderError, ItemIndex
from encoders.runtime.sequence import (
    CARD_FILE,
    ITEMS_FILE,
    SEQUENCE_FILE,
    TEXT_PROJ_FILE,
    SequenceEvent,
    SequenceModel,
)
from interest_state import EventType, InterestState, LongTermItems
from streams.errors import ModelRejected

__all__ = [
    "ActiveSequence",
    "AlignedItems",
    "card_fingerprint",
    "load_checked",
    "publish_model",
    "ring_history",
]

log = logging.getLogger(__name__)

_EVENT_NAMES = {int(kind): kind.name.lower() for kind in EventType}
"""A state's stored event type (the int) -> the event's name, as the sequence model reads it."""
MODEL_FILES = (SEQUENCE_FILE, ITEMS_FILE, TEXT_PROJ_FILE, CARD_FILE)
"""In publishing order: the card last."""


def ring_history(state: InterestState) -> tuple[SequenceEvent, ...]:
    """The state's ring as the sequence model reads it, oldest first. Dislikes are in it; a
    model trained without them leaves them out (:func:`encoders.runtime.sequence.features`), and
    for such a model a dislike acts through the short-term vector, the interests and the list
    (its neighbours move down) only."""
    return tuple(
        SequenceEvent(item, _EVENT_NAMES[kind], ts)
        for item, kind, ts in zip(
            state.recent_items, state.recent_types, state.recent_ts, strict=True
        )
    )


class AlignedItems:
    """The model's item vectors, one row per :class:`ItemIndex` row (grows with the index).

    One writer (under the pipeline's index lock), any number of readers: rows are written
    before the count that publishes them, as in :class:`ItemIndex`.
    """

    def __init__(self, model: SequenceModel, capacity: int = 1024) -> None:
        self.model = model
        buffer = np.zeros((max(capacity, 1), model.dim), dtype=np.float32)
        self._view: tuple[np.ndarray, np.ndarray, int] = (buffer, np.zeros(len(buffer), bool), 0)

    @classmethod
    def build(
        cls,
        model: SequenceModel,
        index: ItemIndex,
        *,
        tags: Mapping[str, Sequence[str]] | None = None,
        vectors: Mapping[str, npt.ArrayLike] | None = None,
    ) -> AlignedItems:
        """Rows for every item the index holds now (hold the index lock); ``tags`` and
        ``vectors``: the catalog's, by item id, for the items the model never saw."""
        text = index.vectors_view()  # rows [0, n) as they are now, no copy
        n = len(text)
        aligned = cls(model, capacity=max(1024, n))
        if n:
            ids = [index.item_id_at(row) for row in range(n)]
            aligned.write(
                list(range(n)), ids, text,
                tags=[tags.get(i, ()) for i in ids] if tags is not None else None,
                vectors=[vectors.get(i) for i in ids] if vectors is not None else None,
            )  # fmt: skip
        return aligned

    def write(
        self,
        rows: Sequence[int],
        item_ids: Sequence[str],
        text_vectors: np.ndarray,
        *,
        tags: Sequence[Sequence[str]] | None = None,
        vectors: Sequence[npt.ArrayLike | None] | None = None,
    ) -> None:
        """Set the rows of these items: their model row, else their vector from text (plus
        their ``tags`` and ``vectors``, in ``item_ids`` order, for a model that uses them)."""
        values, known = self._vectors_for(item_ids, text_vectors, tags, vectors)
        buffer, flags, n = self._view
        top = max([n, *(r + 1 for r in rows)])
        if top > len(buffer):
            size = len(buffer)
            while size < top:
                size *= 2
            grown, grown_flags = np.zeros((size, buffer.shape[1]), np.float32), np.zeros(size, bool)
            grown[:n], grown_flags[:n] = buffer[:n], flags[:n]
            buffer, flags = grown, grown_flags
        index = np.asarray(rows, dtype=np.int64)
        buffer[index] = values
        flags[index] = known
        self._view = (buffer, flags, top)  # publish

    def _vectors_for(
        self,
        item_ids: Sequence[str],
        text_vectors: np.ndarray,
        tags: Sequence[Sequence[str]] | None,
        extra: Sequence[npt.ArrayLike | None] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        model = self.model
        vectors = np.zeros((len(item_ids), model.dim), dtype=np.float32)
        known = np.zeros(len(item_ids), dtype=bool)
        cold: list[int] = []
        for n, item_id in enumerate(item_ids):
            row = model.row_of.get(item_id)
            if row is None:
                cold.append(n)
            else:
                vectors[n], known[n] = model.items[row - 1], True
        if cold:
            try:
                vectors[cold] = model.item_vectors_from_text(
                    np.asarray(text_vectors)[cold],
                    tags=[tags[n] for n in cold] if tags is not None else None,
                    vectors=[extra[n] for n in cold] if extra is not None else None,
                )
                known[cold] = True
            except EncoderError as exc:  # no text projection: those items stay short-term only
                log.debug("no long-term vectors for %d new items: %s", len(cold), exc)
        known &= np.isfinite(vectors).all(axis=1)
        return vectors, known

    def snapshot(self) -> LongTermItems:
        buffer, flags, n = self._view
        return LongTermItems(self.model.version, buffer[:n], flags[:n])

    def __len__(self) -> int:
        return self._view[2]


@dataclass(frozen=True, slots=True, eq=False)
class ActiveSequence:
    """A checked model and its aligned item matrix: what one batch ranks with."""

    model: SequenceModel
    items: AlignedItems

    @property
    def version(self) -> str:
        return self.model.version

    def with_long_terms(self, states: Sequence[InterestState]) -> tuple[list[InterestState], int]:
        """Each state with its long-term vector from its ring: one ``encode_users`` call.

        A user whose ring holds no item the model knows gets no vector (``None``), and so does
        one whose vector is not finite (a model can pass the load-time probe and still overflow
        on some history): that user is ranked by the short-term vector alone. Returns the
        states and how many vectors were not finite.
        """
        if not states:
            return [], 0
        vectors = self.model.encode_users([ring_history(state) for state in states])
        finite = np.isfinite(vectors).all(axis=1)
        return [
            state.with_long_term(vector if ok and vector.any() else None, self.version)
            for state, vector, ok in zip(states, vectors, finite, strict=True)
        ], int((~finite).sum())

    def long_items(self) -> LongTermItems:
        return self.items.snapshot()


# --------------------------------------------------------------------------- loading and checks


def card_fingerprint(folder: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of the model card, or ``None`` when there is none."""
    try:
        st = os.stat(Path(folder) / CARD_FILE)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def load_checked(
    folder: Path,
    *,
    text_dim: int,
    probes: Sequence[Sequence[SequenceEvent]] = (),
    provider: str = "auto",
    intra_op_threads: int | None = None,
) -> SequenceModel:
    """Load the model in ``folder`` and check it can serve; raise :class:`ModelRejected`.

    Checks: it loads; the graph (and any file with a digest in the card's ``sha256_files``)
    is the one the card names (sha256); ``item_ids`` is not empty
    and the item matrix finite; user vectors of ``probes`` (real histories) plus two histories
    of the model's own items are finite with the model's dimension; the text projection, when
    there is one, takes ``text_dim``-dim text vectors and gives finite item vectors.
    """
    try:
        model = SequenceModel.load(folder, provider=provider, intra_op_threads=intra_op_threads)
    except EncoderError as exc:
        raise ModelRejected(f"does not load: {exc}") from exc
    _check_digest(folder, model.card)
    if not model.item_ids or model.dim < 1:
        raise ModelRejected(f"no items (item matrix {model.items.shape})")
    if not np.isfinite(model.items).all():
        bad = int((~np.isfinite(model.items).all(axis=1)).sum())
        raise ModelRejected(f"{ITEMS_FILE} has {bad} rows with NaN or infinity")
    _check_probe(model, probes)
    _check_text_projection(model, text_dim, (Path(folder) / TEXT_PROJ_FILE).is_file())
    return model


def _check_digest(folder: Path, card: dict[str, Any]) -> None:
    """The card's ``sha256`` (of the graph) and, when it has them, ``sha256_files``
    (file name -> sha256) must match the files: no half-written or mixed-up folder."""
    expected = {SEQUENCE_FILE: card.get("sha256")}
    files = card.get("sha256_files")
    if isinstance(files, dict):
        expected.update({str(name): digest for name, digest in files.items()})
    for name, want in expected.items():
        if want is None:
            continue
        try:
            digest = hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise ModelRejected(f"{name}, named by the card, cannot be read: {exc}") from exc
        if digest != want:
            raise ModelRejected(
                f"{name} is not the file the card names (sha256 {digest[:12]}, card "
                f"{str(want)[:12]}): a half-written or mixed-up folder"
            )


def _check_probe(model: SequenceModel, probes: Sequence[Sequence[SequenceEvent]]) -> None:
    own = [
        tuple(
            SequenceEvent(item_id, "click", 1.0e9 + 60.0 * n)
            for n, item_id in enumerate(model.item_ids[: model.max_len])
        ),
        (SequenceEvent(model.item_ids[-1], "browse", 1.0e9),),
    ]
    histories = [*probes, *own]
    try:
        vectors = model.encode_users(histories)
    except EncoderError as exc:
        raise ModelRejected(f"fails on a probe batch: {exc}") from exc
    if vectors.shape != (len(histories), model.dim):
        raise ModelRejected(
            f"user vectors of shape {vectors.shape}, expected {(len(histories), model.dim)}"
        )
    if not np.isfinite(vectors).all():
        raise ModelRejected("user vectors with NaN or infinity on a probe batch")


def _check_text_projection(model: SequenceModel, text_dim: int, present: bool) -> None:
    if not present:
        log.warning(
            "sequence model %s has no %s: items it never saw are ranked short-term only",
            model.version, TEXT_PROJ_FILE,
        )  # fmt: skip
        return
    try:
        vectors = model.item_vectors_from_text(np.full((2, text_dim), 0.1, np.float32))
    except EncoderError as exc:
        raise ModelRejected(f"text projection does not fit the text encoder: {exc}") from exc
    if not np.isfinite(vectors).all():
        raise ModelRejected(f"{TEXT_PROJ_FILE} gives NaN or infinite item vectors")


def publish_model(source: Path, target: Path) -> None:
    """Copy a model folder into ``target`` so that a watcher never loads a half-copied model.

    Each file is copied under a temporary name and renamed into place (a file the source lacks
    is removed from ``target``); the card goes last, and the watcher only looks at the card.
    """
    source, target = Path(source), Path(target)
    if not (source / CARD_FILE).is_file():
        raise ModelRejected(f"no model card in {source}: nothing to publish")
    target.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (source / name).is_file():
            tmp = target / f".{name}.tmp"
            shutil.copyfile(source / name, tmp)
            os.replace(tmp, target / name)
        else:
            (target / name).unlink(missing_ok=True)
    card = json.loads((target / CARD_FILE).read_text(encoding="utf-8"))
    log.info("published sequence model %s to %s", card.get("version"), target)
