"""The model side of one microbatch, free of Faust: resolve vectors, encode, update, rank.

``Pipeline.process`` is blocking numpy/ONNX work; the agent runs it in an executor thread so
the consumer keeps fetching meanwhile. One call does the expensive work once for the batch:
all comment texts in one encoder call, the sequence Transformer once for every touched user
(from their state rings), all touched users ranked in one matrix product per score.

With a sequence model (:class:`streams.worker.long_term.ActiveSequence`) a batch is ranked by
:func:`interest_state.rank_blended` (``blend_weight`` x long-term + the rest short-term,
standardised), and ``model_version`` names both models (``<text>+<sequence>``); without one, by
:func:`interest_state.rank` on the short-term vector. A model is swapped in between batches by
one reference assignment (:meth:`Pipeline.install_sequence`): a batch reads it once and uses it
throughout.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from encoders import EncoderError, ItemIndex, TextEncoder
from encoders.index.ann import AnnIndex
from encoders.index.device import DeviceIndex
from encoders.runtime.sequence import SequenceEvent, SequenceModel
from interest_state import (
    Event,
    InterestState,
    InterestStateError,
    Observation,
    Recommendation,
    UpdateParams,
    rank,
    rank_blended,
    update,
)
from interest_state.blend_ann import rank_approx, rank_blended_approx
from streams.contract import ItemRecord
from streams.worker.candidates import candidate_kind, describe, new_candidate_index
from streams.worker.items import encode_items, live_known, live_long_items
from streams.worker.lists import ApproxSearch, ListMaker
from streams.worker.long_term import ActiveSequence, AlignedItems, ring_history
from streams.worker.outcomes import BatchResult, Updated, UserOutcome, triage
from streams.worker.vector_cache import VectorCache

log = logging.getLogger(__name__)

PROBES_KEPT = 8
"""Recent real histories kept to probe a new sequence model before it is swapped in."""

__all__ = ["Pipeline", "candidate_kind"]


class Pipeline:
    """Text encoder + item index + update/ranking parameters (+ a sequence model) of one worker."""

    def __init__(
        self,
        encoder: TextEncoder,
        params: UpdateParams,
        top_k: int = 10,
        index: ItemIndex | None = None,
        *,
        blend_weight: float = 0.95,
        sequence: SequenceModel | None = None,
        ann_min_items: int = 20_000,
        candidate_index: str = "auto",
        index_threads: int | None = None,
        vector_cache: VectorCache | None = None,
        mmr_lambda: float = 1.0,
        personal_after: int = 5,
        interest_slots: int = 0,
        explore_slots: int = 0,
    ) -> None:
        self.encoder = encoder
        self.index = index or ItemIndex(encoder.dim)
        self.params = params
        self.top_k = top_k
        #: Catalog text vectors by content (``None``: every catalog text is encoded).
        self.vector_cache = vector_cache
        self.blend_weight = blend_weight
        #: What a list holds beyond the ranking's best (:mod:`streams.worker.lists`).
        self.lists = ListMaker(self.index, mmr_lambda=mmr_lambda, personal_after=personal_after,
                               interest_slots=interest_slots, explore_slots=explore_slots)
        #: Catalogs of at least this many items are ranked over candidates (exact
        #: standardisation and rescoring, :mod:`interest_state.blend_ann`) from
        #: ``candidate_index``; smaller ones exactly. 0: always exact.
        self.ann_min_items = ann_min_items
        self._candidate_choice = candidate_index
        self.candidate_index = candidate_kind(candidate_index, encoder.provider)
        self._index_threads = index_threads  # the device index's, on the CPU provider
        self.text_ann = self._new_index(encoder.dim) if ann_min_items else None
        self.long_ann: AnnIndex | DeviceIndex | None = None
        #: Batches ranked short-term only because the sequence model failed on them, and user
        #: vectors it returned non-finite (those users ranked short-term only); on /metrics.
        #: Batches ranked exactly because the candidate index failed on them, and catalog
        #: updates it could not take.
        self.candidate_failures = 0
        self.sequence_failures = 0
        self.sequence_nonfinite = 0
        self._index_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._unsynced: set[int] = set()  # catalog rows a failed sync did not take
        self._replacing = False  # a failed device index (auto) is being replaced by faiss
        self._sequence: ActiveSequence | None = None
        self._probes: tuple[InterestState, ...] = ()  # states: histories built only on demand
        if sequence is not None:
            self.install_sequence(sequence)

    def _new_index(self, dim: int) -> AnnIndex | DeviceIndex:
        """The candidate index for ``dim``-wide vectors (see :func:`new_candidate_index`)."""
        index, self.candidate_index = new_candidate_index(
            self.candidate_index, self._candidate_choice, dim, self.encoder.provider,
            threads=self._index_threads, ann_min_items=self.ann_min_items)  # fmt: skip
        return index

    @property
    def candidate_summary(self) -> str:
        """Where a large catalog's candidates come from, in words (``/metrics``)."""
        if not self.ann_min_items:
            return "none: every catalog is ranked exactly"
        if self._replacing:
            return "faiss IVF-PQ being built after the device index failed (exact meanwhile)"
        kinds = dict.fromkeys(describe(i) for i in (self.text_ann, self.long_ann) if i is not None)
        return f"{' + '.join(kinds) or 'none yet'} from {self.ann_min_items:,} items"

    @property
    def sequence(self) -> ActiveSequence | None:
        """The sequence model the next batch ranks with (``None``: short-term only)."""
        return self._sequence

    @property
    def model_version(self) -> str:
        return _version(self.encoder, self._sequence)

    def install_sequence(self, model: SequenceModel) -> ActiveSequence:
        """Align ``model``'s items with the index and swap it in (the next batch uses it).

        Check the model first (:func:`streams.worker.long_term.load_checked`); rows it cannot give a
        finite vector stay short-term only.
        """
        with self._index_lock:  # no catalog item can arrive between alignment and swap
            items = AlignedItems.build(model, self.index)
            if self.text_ann is not None:
                self.long_ann = self._synced_long_index(items, model.dim)
            active = ActiveSequence(model, items)
            self._sequence = active
        missing = len(items) - int(items.snapshot().known.sum())
        if missing:
            log.warning(
                "%d catalog items have no vector in sequence model %s", missing, model.version
            )
        return active

    def probe_histories(self) -> list[tuple[SequenceEvent, ...]]:
        """A few recent real histories (to check a new model on before swapping it in)."""
        return [ring_history(s) for s in self._probes]  # a tuple replaced whole per batch

    def add_items(self, items: Sequence[ItemRecord]) -> list[tuple[ItemRecord, str]]:
        """Encode catalog items (one encoder call, for the texts not in the vector cache) and
        make them recommendable at once (a deleted one comes back). Returns the items that could
        not be encoded, with the reason (see :func:`streams.worker.items.encode_items`); the
        others are indexed."""
        if not items:
            return []
        latest = {item.item_id: item for item in items}  # a compacted topic may repeat keys
        chosen, vectors, failed = encode_items(
            self.encoder, list(latest.values()), self.vector_cache
        )
        if not chosen:
            return failed
        ids = [i.item_id for i in chosen]
        self.lists.set_tags((i.item_id, i.tags) for i in chosen)
        with self._index_lock:
            self.index.upsert(ids, [i.title for i in chosen], vectors)
            if self._sequence is not None:
                placed = [
                    (row, n) for n, i in enumerate(ids) if (row := self.index.row_of(i)) is not None
                ]
                self._sequence.items.write(
                    [row for row, _ in placed],
                    [ids[n] for _, n in placed],
                    vectors[[n for _, n in placed]],
                )
            self._sync_ann([row for i in ids if (row := self.index.row_of(i)) is not None])
        return failed

    def delete_items(self, item_ids: Sequence[str]) -> int:
        """Delete catalog items (the ``items`` topic's tombstones): no ranking returns them and
        no explanation names them from now on; unknown ids are ignored. Returns how many were
        deleted. Their rows stay (see :class:`encoders.ItemIndex`); the candidate indexes drop
        them at once, or with the next sync that succeeds (ranked exactly until then)."""
        with self._index_lock:
            rows = self.index.delete(item_ids)
            if rows:
                self._sync_ann(rows)
        return len(rows)

    def _synced_long_index(self, items: AlignedItems, dim: int) -> AnnIndex | DeviceIndex | None:
        """The long-term candidate index synced to a new model's ``items`` (under the index
        lock), or ``None`` when it fails: the model is served anyway, its long-term scores
        computed exactly (see :meth:`_index_failed`)."""
        index = self.long_ann
        snap = items.snapshot()
        try:
            if index is None or index.dim != dim:
                index = self._new_index(dim)
            index.sync(snap.vectors, self._live(snap.known), version=snap.version)
        except EncoderError as exc:
            self._index_failed(f"could not take sequence model {snap.version}'s items", exc)
            return None
        return index

    def _sync_ann(self, rows: list[int]) -> None:
        """Bring the candidate indexes up to the catalog (under the index lock). Rows an index
        fails to take are kept and offered again with the next sync; until then a new row is
        scored exactly and a replaced one keeps its old vector there (see :meth:`_index_failed`
        for what else happens)."""
        if self.text_ann is None:
            return
        touched = sorted(self._unsynced.union(rows))
        try:
            vectors = self.index.vectors_view()
            self.text_ann.sync(vectors, self._live(None, len(vectors)), touched=touched)
            if self._sequence is not None and self.long_ann is not None:
                snap = self._sequence.items.snapshot()
                self.long_ann.sync(snap.vectors, self._live(snap.known), version=snap.version,
                                   touched=touched)  # fmt: skip
        except EncoderError as exc:
            self._unsynced.update(rows)
            self._index_failed(f"could not take {len(rows)} catalog rows", exc)
            return
        self._unsynced.clear()

    def _live(self, known: np.ndarray | None, n: int = 0) -> np.ndarray | None:
        """``known`` (``None``: all ``n`` rows) without the deleted rows (under the index lock)."""
        return live_known(self.index.deleted_rows, n if known is None else len(known), known)

    def _index_failed(self, what: str, exc: Exception) -> None:
        """Count and log a candidate-index failure. A device index that ``auto`` chose is
        replaced by faiss at the first one (built on a thread of its own, under the index lock;
        batches are ranked exactly meanwhile); one named in the settings stays and is retried."""
        with self._count_lock:
            self.candidate_failures += 1
        log.error("candidate index %s: %s", what, exc)
        if self._candidate_choice != "auto" or self.candidate_index != "device":
            return
        with self._count_lock:
            if self._replacing:
                return
            self._replacing = True
        log.error("the device item index failed: faiss candidates replace it (exact ranking "
                  "until they are built)")  # fmt: skip
        self.candidate_index = "faiss"
        self.text_ann = self.long_ann = None
        threading.Thread(target=self._build_faiss, name="faiss-fallback", daemon=True).start()

    def _build_faiss(self) -> None:
        """Faiss indexes over the catalog and the current sequence model's items, swapped in
        whole (the fallback of :meth:`_index_failed`)."""
        with self._index_lock:
            try:
                text = self._new_index(self.encoder.dim)
                vectors = self.index.vectors_view()
                text.sync(vectors, self._live(None, len(vectors)))
                long = None
                if self._sequence is not None:
                    snap = self._sequence.items.snapshot()
                    long = self._new_index(int(snap.vectors.shape[1]))
                    long.sync(snap.vectors, self._live(snap.known), version=snap.version)
            except Exception:  # faiss too: exact ranking from now on, said once
                log.exception("faiss candidates could not be built; every batch is ranked "
                              "exactly")  # fmt: skip
                self.ann_min_items = 0
                return
            finally:
                self._replacing = False
            self.text_ann, self.long_ann = text, long
            self._unsynced.clear()
        log.info("faiss candidates in place of the device index (%d items)", len(self.index))

    def process(
        self, events: Sequence[Event], states: Mapping[str, InterestState | None]
    ) -> BatchResult:
        result = BatchResult()
        sorted_ = triage(events, states, self.index.vector, result.rejected)
        updated = self._update(sorted_.usable, states, result)
        sorted_.settle(updated)
        users = list(updated)
        ranked_states, ranked, result.model_version = self._rank(
            [updated[u][0] for u in users], self._sequence, self.top_k
        )
        for user_id, state, recs in zip(users, ranked_states, ranked, strict=True):
            _, applied, duplicates, redelivered = updated[user_id]
            result.users[user_id] = UserOutcome(state, applied, duplicates, recs, redelivered)
        fresh = tuple(s for s in ranked_states[:2] if s.recent_items)
        self._probes = (*fresh, *self._probes)[:PROBES_KEPT]
        return result

    def _update(
        self,
        usable: Sequence[tuple[int, Event, np.ndarray]],
        states: Mapping[str, InterestState | None],
        result: BatchResult,
    ) -> dict[str, Updated]:
        """Each user's events folded into their state (one update call per user)."""
        texts = self._encode_comments([e for _, e, _ in usable])
        per_user: dict[str, list[Observation]] = defaultdict(list)
        for _, event, vector in usable:
            per_user[event.user_id].append(
                Observation(event=event, item_vector=vector, text_vector=texts.get(event.event_id))
            )
        positions = {id(e): p for p, e, _ in usable}
        updated: dict[str, Updated] = {}
        for user_id, observations in per_user.items():
            state = states.get(user_id) or InterestState.empty(self.encoder.dim)
            try:
                new_state, outcome = update(state, observations, self.params)
            except InterestStateError as exc:
                result.rejected.extend((positions[id(o.event)], str(exc)) for o in observations)
                continue
            updated[user_id] = (new_state, outcome.applied, outcome.duplicates, outcome.redelivered)
        return updated

    def _rank(
        self, states: list[InterestState], active: ActiveSequence | None, k: int
    ) -> tuple[list[InterestState], list[list[Recommendation]], str]:
        """States (with their long-term vectors), their recommendations (the best
        :meth:`ListMaker.candidates` made into lists of ``k``), the model version."""
        states, ranked, version = self._rank_candidates(states, active, self.lists.candidates(k))
        ann, large = self.text_ann, len(self.index) >= self.ann_min_items > 0
        near = ApproxSearch(self.index, ann) if ann is not None and large else None
        return states, self.lists.finish(states, ranked, k, search_in=near), version

    def _rank_candidates(
        self, states: list[InterestState], active: ActiveSequence | None, k: int
    ) -> tuple[list[InterestState], list[list[Recommendation]], str]:
        if active is not None and states:
            states, active = self._long_terms(states, active)
        text_ann, deleted = self.text_ann, self.index.deleted_rows
        approx = text_ann is not None and len(self.index) >= self.ann_min_items and (
            not len(deleted) or (not self._unsynced and int(deleted[-1]) < text_ann.covered))
        if approx:  # (deleted rows a candidate index may still hold: ranked exactly meanwhile)
            try:
                return states, self._rank_approx(states, active, k), _version(self.encoder, active)
            except EncoderError as exc:  # e.g. the GPU index out of memory: exact, slower
                self._index_failed("failed on a batch, ranked exactly", exc)
        if active is None:
            return states, rank(states, self.index, k), _version(self.encoder, None)
        ranked = rank_blended(states, self.index, active.long_items(), k, weight=self.blend_weight)
        return states, ranked, _version(self.encoder, active)

    def _rank_approx(self, states: list[InterestState], active: ActiveSequence | None, k: int
                     ) -> list[list[Recommendation]]:  # fmt: skip
        if active is None:
            return rank_approx(states, self.index, self.text_ann, k)
        long_items = live_long_items(self.index.deleted_rows, active.long_items())
        return rank_blended_approx(states, self.index, long_items, self.text_ann,
                                   self.long_ann, k, weight=self.blend_weight)

    def _long_terms(
        self, states: list[InterestState], active: ActiveSequence
    ) -> tuple[list[InterestState], ActiveSequence | None]:
        """Run the sequence model; on failure the batch is ranked short-term only (no event is
        lost for it), a non-finite user vector leaves that user short-term only."""
        try:
            with_long, nonfinite = active.with_long_terms(states)
        except (EncoderError, InterestStateError) as exc:
            log.error("sequence model %s failed on a batch: %s", active.version, exc)
            self.sequence_failures += 1
            return states, None
        if nonfinite:
            log.warning("sequence model %s: %d non-finite user vectors, ranked short-term only",
                        active.version, nonfinite)  # fmt: skip
            self.sequence_nonfinite += nonfinite
        return with_long, active

    def _encode_comments(self, events: Sequence[Event]) -> dict[str, np.ndarray]:
        comments = [e for e in events if e.text is not None]
        if not comments:
            return {}
        vectors = self.encoder.encode([e.text or "" for e in comments])
        return {e.event_id: vectors[i] for i, e in enumerate(comments)}

    def recommend(self, state: InterestState, k: int | None = None) -> list[Recommendation]:
        """What the stream would send this user now (the long-term vector recomputed)."""
        return self._rank([state], self._sequence, k or self.top_k)[1][0]

    def recommend_new_user(self, k: int | None = None) -> list[Recommendation]:
        """What a user the worker has never seen gets: the trending list (empty without a
        trending source)."""
        return self.lists.for_new_user(k or self.top_k)


def _version(encoder: TextEncoder, active: ActiveSequence | None) -> str:
    return encoder.model_version if active is None else f"{encoder.model_version}+{active.version}"
