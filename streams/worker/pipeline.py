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
throughout. With an A/B ``split`` the pipeline serves a second model, variant ``B``
(:mod:`streams.worker.variants`): each user is ranked by their variant's model, and their
outcome names the variant and the version that ranked them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from encoders import EncoderError, ItemIndex, TextEncoder
from encoders.index.ann import AnnIndex
from encoders.index.device import DeviceIndex
from encoders.runtime.sequence import SequenceEvent, SequenceModel
from interest_state import Event, InterestState, Recommendation, UpdateParams, rank, rank_blended
from interest_state.blend_ann import rank_approx, rank_blended_approx
from streams.contract import ItemRecord
from streams.worker.ab import Split
from streams.worker.candidates import candidate_kind, describe, new_candidate_index
from streams.worker.items import encode_items, live_known, live_long_items
from streams.worker.lists import ApproxSearch, ListMaker
from streams.worker.long_term import ActiveSequence, AlignedItems, ring_history
from streams.worker.outcomes import BatchResult, UserOutcome, triage, update_users
from streams.worker.variants import Slot, group_by_variant, long_terms, served_version
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
        split: Split | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index or ItemIndex(encoder.dim)
        self.params = params
        self.top_k = top_k
        #: Catalog text vectors by content (``None``: every catalog text is encoded).
        self.vector_cache = vector_cache
        #: item id -> the catalog's ``vector``, for sequence models that take item vectors
        self.item_vectors: dict[str, np.ndarray] = {}
        self.blend_weight = blend_weight
        #: What a list holds beyond the ranking's best (:mod:`streams.worker.lists`).
        self.lists = ListMaker(
            self.index,
            mmr_lambda=mmr_lambda,
            personal_after=personal_after,
            interest_slots=interest_slots,
            explore_slots=explore_slots,
        )
        #: Catalogs of at least this many items are ranked over candidates (exact
        #: standardisation and rescoring, :mod:`interest_state.blend_ann`) from
        #: ``candidate_index``; smaller ones exactly. 0: always exact.
        self.ann_min_items = ann_min_items
        self._candidate_choice = candidate_index
        self.candidate_index = candidate_kind(candidate_index, encoder.provider)
        self._index_threads = index_threads  # the device index's, on the CPU provider
        #: The A/B split (``None``: no A/B, every user is ``A``) and each variant's models.
        self.split = split
        self.slots = {v: Slot(v) for v in ("A", "B")[: 1 if split is None else 2]}
        self.text_ann = self._new_index(encoder.dim) if ann_min_items else None
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
        indexes = (self.text_ann, *(slot.long_ann for slot in self.slots.values()))
        kinds = dict.fromkeys(describe(i) for i in indexes if i is not None)
        return f"{' + '.join(kinds) or 'none yet'} from {self.ann_min_items:,} items"

    @property
    def sequence(self) -> ActiveSequence | None:
        """The sequence model the next batch ranks variant ``A`` with (``None``: short-term)."""
        return self.slots["A"].sequence

    @property
    def long_ann(self) -> AnnIndex | DeviceIndex | None:
        """Variant ``A``'s long-term candidate index."""
        return self.slots["A"].long_ann

    @long_ann.setter
    def long_ann(self, index: AnnIndex | DeviceIndex | None) -> None:
        self.slots["A"].long_ann = index

    @property
    def model_version(self) -> str:
        return served_version(self.encoder, self.slots["A"].sequence)

    def model_version_of(self, variant: str) -> str:
        """What ranks ``variant``'s users now (``<text>`` or ``<text>+<sequence>``)."""
        return served_version(self.encoder, self.slots[variant].sequence)

    def variant_of(self, user_id: str) -> str:
        """The user's A/B variant (``"A"`` without A/B)."""
        return "A" if self.split is None else self.split.variant(user_id)

    def install_sequence(self, model: SequenceModel, variant: str = "A") -> ActiveSequence:
        """Align ``model``'s items with the index and swap it into ``variant``'s slot (the next
        batch uses it).

        Check the model first (:func:`streams.worker.long_term.load_checked`); rows it cannot give a
        finite vector stay short-term only.
        """
        slot = self.slots[variant]
        with self._index_lock:  # no catalog item can arrive between alignment and swap
            items = AlignedItems.build(model, self.index, tags=self.lists.tags,
                                       vectors=self.item_vectors)  # fmt: skip
            if self.text_ann is not None:
                slot.long_ann = self._synced_long_index(items, model.dim, slot.long_ann)
            active = ActiveSequence(model, items)
            slot.sequence = active
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
        for i in chosen:  # for the models that take item vectors, when one is (re)installed
            if i.vector is None:
                self.item_vectors.pop(i.item_id, None)
            else:
                self.item_vectors[i.item_id] = np.asarray(i.vector, np.float32)
        with self._index_lock:
            self.index.upsert(ids, [i.title for i in chosen], vectors)
            placed = [
                (row, n) for n, i in enumerate(ids) if (row := self.index.row_of(i)) is not None
            ]
            for active in (s.sequence for s in self.slots.values() if s.sequence is not None):
                active.items.write([row for row, _ in placed], [ids[n] for _, n in placed],
                                   vectors[[n for _, n in placed]],
                                   tags=[chosen[n].tags for _, n in placed],
                                   vectors=[chosen[n].vector for _, n in placed])  # fmt: skip
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

    def _synced_long_index(
        self, items: AlignedItems, dim: int, index: AnnIndex | DeviceIndex | None
    ) -> AnnIndex | DeviceIndex | None:
        """The long-term candidate index (``index``, or a new one) synced to a new model's
        ``items`` (under the index lock), or ``None`` when it fails: the model is served anyway,
        its long-term scores computed exactly (see :meth:`_index_failed`)."""
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
            for slot in self.slots.values():
                if slot.sequence is not None and slot.long_ann is not None:
                    snap = slot.sequence.items.snapshot()
                    slot.long_ann.sync(snap.vectors, self._live(snap.known), version=snap.version,
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
        self.text_ann = None
        for slot in self.slots.values():
            slot.long_ann = None
        threading.Thread(target=self._build_faiss, name="faiss-fallback", daemon=True).start()

    def _build_faiss(self) -> None:
        """Faiss indexes over the catalog and the current sequence model's items, swapped in
        whole (the fallback of :meth:`_index_failed`)."""
        with self._index_lock:
            try:
                text = self._new_index(self.encoder.dim)
                vectors = self.index.vectors_view()
                text.sync(vectors, self._live(None, len(vectors)))
                long: dict[str, AnnIndex | DeviceIndex] = {}
                for slot in self.slots.values():
                    if slot.sequence is not None:
                        snap = slot.sequence.items.snapshot()
                        long[slot.variant] = self._new_index(int(snap.vectors.shape[1]))
                        long[slot.variant].sync(snap.vectors, self._live(snap.known),
                                                version=snap.version)  # fmt: skip
            except Exception:  # faiss too: exact ranking from now on, said once
                log.exception("faiss candidates could not be built; every batch is ranked "
                              "exactly")  # fmt: skip
                self.ann_min_items = 0
                return
            finally:
                self._replacing = False
            self.text_ann = text
            for slot in self.slots.values():
                slot.long_ann = long.get(slot.variant)
            self._unsynced.clear()
        log.info("faiss candidates in place of the device index (%d items)", len(self.index))

    def process(
        self, events: Sequence[Event], states: Mapping[str, InterestState | None]
    ) -> BatchResult:
        result = BatchResult(model_version=self.model_version)
        sorted_ = triage(events, states, self.index.vector, result.rejected)
        updated = update_users(self.encoder, self.params, sorted_.usable, states, result.rejected)
        sorted_.settle(updated)
        users = list(updated)
        fresh: list[InterestState] = []
        for variant, members in group_by_variant(users, self.split).items():
            ranked_states, ranked, version = self._rank(
                [updated[users[n]][0] for n in members], self.slots[variant], self.top_k
            )
            if variant == "A":
                result.model_version = version
            for n, state, recs in zip(members, ranked_states, ranked, strict=True):
                _, applied, duplicates, redelivered = updated[users[n]]
                result.users[users[n]] = UserOutcome(state, applied, duplicates, recs, redelivered,
                                                     variant, version)  # fmt: skip
            fresh.extend(s for s in ranked_states[:2] if s.recent_items)
        self._probes = (*fresh[:2], *self._probes)[:PROBES_KEPT]
        return result

    def _rank(
        self, states: list[InterestState], slot: Slot, k: int
    ) -> tuple[list[InterestState], list[list[Recommendation]], str]:
        """States (with their long-term vectors from ``slot``'s model), their recommendations
        (the best :meth:`ListMaker.candidates` made into lists of ``k``), the model version."""
        states, ranked, version = self._rank_candidates(states, slot, self.lists.candidates(k))
        ann, large = self.text_ann, len(self.index) >= self.ann_min_items > 0
        near = ApproxSearch(self.index, ann) if ann is not None and large else None
        return states, self.lists.finish(states, ranked, k, search_in=near), version

    def _rank_candidates(
        self, states: list[InterestState], slot: Slot, k: int
    ) -> tuple[list[InterestState], list[list[Recommendation]], str]:
        active, long_ann = slot.sequence, slot.long_ann  # each read once for the batch
        if active is not None and states:
            found = long_terms(states, active)
            states, active = found.states, found.active
            self.sequence_failures += int(found.active is None)
            self.sequence_nonfinite += found.nonfinite
        text_ann, deleted = self.text_ann, self.index.deleted_rows
        approx = (
            text_ann is not None
            and len(self.index) >= self.ann_min_items
            and (not len(deleted) or (not self._unsynced and int(deleted[-1]) < text_ann.covered))
        )
        version = served_version(self.encoder, active)
        if approx:  # (deleted rows a candidate index may still hold: ranked exactly meanwhile)
            try:
                return states, self._rank_approx(states, active, long_ann, k), version
            except EncoderError as exc:  # e.g. the GPU index out of memory: exact, slower
                self._index_failed("failed on a batch, ranked exactly", exc)
        if active is None:
            return states, rank(states, self.index, k), version
        ranked = rank_blended(states, self.index, active.long_items(), k, weight=self.blend_weight)
        return states, ranked, version

    def _rank_approx(self, states: list[InterestState], active: ActiveSequence | None,
                     long_ann: AnnIndex | DeviceIndex | None, k: int
                     ) -> list[list[Recommendation]]:  # fmt: skip
        if active is None:
            return rank_approx(states, self.index, self.text_ann, k)
        long_items = live_long_items(self.index.deleted_rows, active.long_items())
        return rank_blended_approx(
            states, self.index, long_items, self.text_ann, long_ann, k, weight=self.blend_weight
        )

    def recommend(
        self, state: InterestState, k: int | None = None, *, user_id: str | None = None
    ) -> list[Recommendation]:
        """What the stream would send this user now (the long-term vector recomputed), by
        ``user_id``'s variant (``A`` when not given)."""
        slot = self.slots[self.variant_of(user_id) if user_id is not None else "A"]
        return self._rank([state], slot, k or self.top_k)[1][0]

    def recommend_new_user(self, k: int | None = None) -> list[Recommendation]:
        """What a user the worker has never seen gets: the trending list (empty without a
        trending source)."""
        return self.lists.for_new_user(k or self.top_k)
