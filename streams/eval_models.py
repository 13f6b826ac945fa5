"""The models the offline evaluator runs side by side, and what they may read.

:class:`PopularityModel` is the floor; :class:`ShortTermModel` is the stream's decayed
short-term vector, replayed through the very same :func:`interest_state.update` and ranked
with :func:`interest_state.rank`; :class:`TransformerModel` is the sequence Transformer run
through its exported ONNX graph by :class:`encoders.sequence.SequenceModel`, the runtime the
stream uses (never the torch module).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

import numpy as np

from encoders import EncoderError, ItemIndex, TextEncoder
from encoders.sequence import SequenceEvent, SequenceModel
from interest_state import (
    Event,
    EventType,
    InterestState,
    InterestStateError,
    Observation,
    UpdateParams,
    rank,
    update,
)
from interest_state.params import MAX_RING_LEN
from streams.datasets import EventRecord, ItemRecord
from streams.errors import StreamError

__all__ = [
    "BlendModel",
    "EvaluationError",
    "PopularityModel",
    "Recommender",
    "ShortTermModel",
    "TrainData",
    "TransformerModel",
    "UserContext",
    "default_models",
    "events_fingerprint",
    "to_sequence",
]


class EvaluationError(StreamError):
    """The data set cannot be evaluated, or a model broke the ranking contract."""


@dataclass(frozen=True, slots=True)
class UserContext:
    """What a model may read about one user at ranking time: the events before the target."""

    user_id: str
    events: tuple[EventRecord, ...]

    def seen(self) -> frozenset[str]:
        return frozenset(event.item_id for event in self.events)


@dataclass(frozen=True, slots=True)
class TrainData:
    """What :meth:`Recommender.fit` may read: the catalog and the training events only."""

    items: tuple[ItemRecord, ...]
    events: tuple[EventRecord, ...]


class Recommender(Protocol):
    """A model the evaluator can run: fitted once, then asked for many users at a time."""

    name: str

    def fit(self, data: TrainData) -> None:
        """Learn from training events only (never a validation or test event)."""
        ...

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        """Top-``k`` item ids per user, best first, over the whole catalog.

        With ``exclude_seen`` no item of the user's context may be returned.
        """
        ...


class PopularityModel:
    """Items by how often they occur in the training events; ties go by catalog order."""

    name = "popularity"

    def __init__(self) -> None:
        self._order: list[str] = []

    def fit(self, data: TrainData) -> None:
        counts = Counter(event.item_id for event in data.events)
        position = {item.item_id: n for n, item in enumerate(data.items)}
        self._order = sorted(position, key=lambda item_id: (-counts[item_id], position[item_id]))

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        ranked: list[list[str]] = []
        for user in users:
            seen = user.seen() if exclude_seen else frozenset()
            ranked.append(list(islice((i for i in self._order if i not in seen), k)))
        return ranked


class ShortTermModel:
    """The stream's decayed short-term vector: :func:`update` replays, :func:`rank` ranks.

    The catalog is encoded once by ``fit`` into an :class:`ItemIndex`, as the catalog feed
    does. The default ``history_len`` is the largest ring, so the seen-filter of :func:`rank`
    covers the whole context (it does not change the vector); context items beyond the ring
    are filtered here.
    """

    name = "short-term-decay"

    def __init__(self, encoder: TextEncoder, params: UpdateParams | None = None) -> None:
        self.encoder = encoder
        self.params = params or UpdateParams(history_len=MAX_RING_LEN)
        self.index = ItemIndex(encoder.dim)
        self._comment_vectors: dict[str, np.ndarray] = {}
        self._states: dict[tuple[str, int, str], InterestState] = {}

    def fit(self, data: TrainData) -> None:
        fresh = [item for item in data.items if item.item_id not in self.index]
        if fresh:
            vectors = self.encoder.encode([item.text for item in fresh])
            self.index.upsert([i.item_id for i in fresh], [i.title for i in fresh], vectors)
        self._states.clear()

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        self._encode_comments(users)
        states = [self._state(user) for user in users]
        seen = [user.seen() if exclude_seen else frozenset() for user in users]
        beyond_ring = max(
            (len(s - st.seen_items()) for s, st in zip(seen, states, strict=True)), default=0
        )
        recs = rank(states, self.index, k + beyond_ring, exclude_seen=exclude_seen)
        return [
            [r.item_id for r in user_recs if r.item_id not in user_seen][:k]
            for user_recs, user_seen in zip(recs, seen, strict=True)
        ]

    def scores(self, users: Sequence[UserContext], ids: Sequence[str]) -> np.ndarray:
        """[len(users), len(ids)] similarity of each user's short-term vector to every item
        (0 for a user without one, -inf for an id not in the index); nothing is masked."""
        self._encode_comments(users)
        vectors = [self._state(user).interest_vector(0.0) for user in users]
        query = np.stack(
            [np.zeros(self.index.dim, np.float32) if v is None else v for v in vectors]
        )
        found, rows = self.index.search(query, len(self.index))
        col = {item_id: n for n, item_id in enumerate(ids)}
        col_of_row = np.array(
            [col.get(self.index.item_id_at(r), -1) for r in range(len(self.index))], np.int64
        )
        out = np.full((len(users), len(ids)), -np.inf, dtype=np.float32)
        for n in range(len(users)):
            cols = col_of_row[rows[n]]
            out[n, cols[cols >= 0]] = found[n][cols >= 0]
        return out

    def _encode_comments(self, users: Sequence[UserContext]) -> None:
        """One encoder call for every comment text not encoded yet (as the pipeline does)."""
        todo = {
            e.event_id: e.text
            for user in users
            for e in user.events
            if e.event_type == "comment" and e.text and e.event_id not in self._comment_vectors
        }
        if todo:
            vectors = self.encoder.encode(list(todo.values()))
            self._comment_vectors.update(zip(todo, vectors, strict=True))

    def _state(self, user: UserContext) -> InterestState:
        last = user.events[-1].event_id if user.events else ""
        key = (user.user_id, len(user.events), last)
        if key not in self._states:
            self._states[key] = self._replay(user)
        return self._states[key]

    def _replay(self, user: UserContext) -> InterestState:
        observations = []
        for record in user.events:
            vector = self.index.vector(record.item_id)
            if vector is not None:  # the stream dead-letters events of unknown items
                text_vector = self._comment_vectors.get(record.event_id)
                observations.append(Observation(_to_event(record), vector, text_vector))
        try:
            state, _ = update(InterestState.empty(self.index.dim), observations, self.params)
        except InterestStateError as exc:
            raise EvaluationError(f"user {user.user_id!r}: {exc}") from exc
        return state


def _to_event(record: EventRecord) -> Event:
    return Event(
        event_id=record.event_id,
        user_id=record.user_id,
        item_id=record.item_id,
        event_type=EventType[record.event_type.upper()],
        ts=record.ts,
        dwell_ms=record.dwell_ms,
        text=record.text,
        context=record.context or {},
    )


def to_sequence(events: Iterable[EventRecord]) -> tuple[SequenceEvent, ...]:
    """Events as the sequence model reads them (item, type, time), order kept."""
    return tuple(SequenceEvent(e.item_id, e.event_type, e.ts) for e in events)


def events_fingerprint(events: Iterable[EventRecord]) -> str:
    """sha256 of the (user, item, type, ts) tuples in order: which events a model learned from."""
    digest = hashlib.sha256()
    for e in events:
        digest.update(f"{e.user_id}\t{e.item_id}\t{e.event_type}\t{e.ts!r}\n".encode())
    return digest.hexdigest()


def top_k(scores: np.ndarray, ids: Sequence[str], k: int) -> list[list[str]]:
    """Best ``k`` ids per row, best first; ``-inf`` scores are never returned."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k else np.zeros((len(scores), 0), int)
    ranked: list[list[str]] = []
    for row, cols in zip(scores, part, strict=True):
        order = cols[np.argsort(-row[cols], kind="stable")]
        ranked.append([ids[c] for c in order if np.isfinite(row[c])])
    return ranked


class TransformerModel:
    """The sequence Transformer through its ONNX export (:class:`SequenceModel`).

    ``fit`` trains nothing: it checks that the model card's training-events fingerprint is the
    one of this split (a model that saw validation or test events would score too well) and
    lines the model's item matrix up with the catalog. Catalog items the model does not know
    get their vector from their text when an ``encoder`` is given, and are never ranked
    otherwise.
    """

    def __init__(
        self, model: SequenceModel, encoder: TextEncoder | None = None, *, name: str = "transformer"
    ) -> None:
        self.model = model
        self.encoder = encoder
        self.name = name
        self._ids: list[str] = []
        self._col: dict[str, int] = {}
        self._matrix = np.zeros((0, model.dim), dtype=np.float32)

    def fit(self, data: TrainData) -> None:
        expected = self.model.card.get("data", {}).get("train_fingerprint")
        if expected is not None and expected != events_fingerprint(data.events):
            raise EvaluationError(
                f"{self.name}: model {self.model.version} was trained on other events than this "
                "split's training events; train it on the same files (interest-stream train)"
            )
        self._ids = [item.item_id for item in data.items]
        self._col = {item_id: n for n, item_id in enumerate(self._ids)}
        matrix = np.full((len(self._ids), self.model.dim), np.nan, dtype=np.float32)
        cold: list[ItemRecord] = []
        for n, item in enumerate(data.items):
            row = self.model.row_of.get(item.item_id)
            if row is None:
                cold.append(item)
            else:
                matrix[n] = self.model.items[row - 1]
        if cold and self.encoder is not None:
            vectors = self.model.item_vectors_from_text(self.encoder.encode([i.text for i in cold]))
            matrix[[self._col[i.item_id] for i in cold]] = vectors
        self._matrix = matrix

    def scores(self, users: Sequence[UserContext], *, exclude_seen: bool) -> np.ndarray:
        """[len(users), n_catalog] inner products; seen (when excluded) and unknown are -inf."""
        vectors = self.model.encode_users([to_sequence(user.events) for user in users])
        scores = vectors @ np.nan_to_num(self._matrix).T
        scores[:, np.isnan(self._matrix[:, 0])] = -np.inf
        if exclude_seen:
            for n, user in enumerate(users):
                cols = [self._col[i] for i in user.seen() if i in self._col]
                scores[n, cols] = -np.inf
        return scores

    @property
    def item_ids(self) -> list[str]:
        return self._ids

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        return top_k(self.scores(users, exclude_seen=exclude_seen), self._ids, k)


class BlendModel:
    """``weight`` x Transformer + (1 - ``weight``) x short-term, each score row standardised
    per user (the two live in different spaces with different scales)."""

    def __init__(self, long: TransformerModel, short: ShortTermModel, weight: float) -> None:
        if not 0.0 <= weight <= 1.0:
            raise EvaluationError(f"blend weight must be in [0, 1], got {weight}")
        self.long, self.short, self.weight = long, short, weight
        self.name = f"blend-{weight:g}"

    def fit(self, data: TrainData) -> None:
        self.long.fit(data)
        self.short.fit(data)

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        ids = self.long.item_ids
        long = _standardise(self.long.scores(users, exclude_seen=exclude_seen))
        short = _standardise(self.short.scores(users, ids))
        blend = self.weight * long + (1.0 - self.weight) * np.nan_to_num(short, neginf=-1e3)
        return top_k(blend, ids, k)


def _standardise(scores: np.ndarray) -> np.ndarray:
    """Per row: (x - mean) / std over the finite entries; -inf stays -inf."""
    finite = np.isfinite(scores)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    values = np.where(finite, scores, 0.0)
    mean = values.sum(axis=1, keepdims=True) / count
    var = (np.where(finite, scores - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count
    out: np.ndarray = np.where(finite, (scores - mean) / np.sqrt(var + 1e-12), -np.inf)
    return out


def default_models(
    model_dir: Path,
    *,
    params: UpdateParams | None = None,
    provider: str = "auto",
    sequence_dir: Path | None = None,
    blend_weights: Sequence[float] = (),
) -> list[Recommender]:
    """Popularity, the stream's short-term model on the text encoder in ``model_dir`` and,
    with ``sequence_dir``, the Transformer and its blends with the short-term vector."""
    try:
        encoder = TextEncoder.load(model_dir, provider=provider)
        sequence = (
            SequenceModel.load(sequence_dir, provider=provider)
            if sequence_dir is not None
            else None
        )
    except EncoderError as exc:
        raise EvaluationError(f"cannot load a model: {exc}") from exc
    short = ShortTermModel(encoder, params)
    models: list[Recommender] = [PopularityModel(), short]
    if sequence is not None:
        long = TransformerModel(sequence, encoder)
        models.append(long)
        models.extend(BlendModel(long, short, weight) for weight in blend_weights)
    elif blend_weights:
        raise EvaluationError("a blend needs a sequence model (--sequence-model)")
    return models
