"""The models the offline evaluator runs side by side, and what they may read.

:class:`PopularityModel` is the floor; :class:`ShortTermModel` is the stream's decayed
short-term vector, replayed through the very same :func:`interest_state.update` and ranked
with :func:`interest_state.rank`. The stream with a sequence model (the Transformer and its
blends) is in :mod:`streams.offline.transformer`, peer systems' stored rankings in
:mod:`streams.offline.peers`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

import numpy as np

from encoders import ItemIndex, TextEncoder
from encoders.runtime.sequence import DISLIKE, SequenceEvent
from interest_state import (
    Event,
    EventType,
    InterestState,
    InterestStateError,
    Observation,
    Recommendation,
    UpdateParams,
    rank,
    update,
)
from interest_state.params import MAX_RING_LEN
from streams.contract import EventRecord, ItemRecord
from streams.errors import EvaluationError

__all__ = [
    "ContextKey",
    "PopularityModel",
    "Recommender",
    "ShortTermModel",
    "TrainData",
    "UserContext",
    "beyond_ring_filtered",
    "context_key",
    "events_fingerprint",
    "ids_of",
    "to_sequence",
]


@dataclass(frozen=True, slots=True)
class UserContext:
    """What a model may read about one user at ranking time: the events before the target."""

    user_id: str
    events: tuple[EventRecord, ...]
    stage: str = ""
    """``validation`` or ``test`` when the evaluator asks (peers store one ranking per stage)."""

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
    """Items by how often they occur in the training events (dislikes not counted); ties go by
    catalog order."""

    name = "popularity"

    def __init__(self) -> None:
        self._order: list[str] = []

    def fit(self, data: TrainData) -> None:
        counts = Counter(e.item_id for e in data.events if e.event_type != DISLIKE)
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
    are filtered here. Without an ``encoder`` only items already in ``index`` are known.
    """

    name = "short-term-decay"

    def __init__(
        self,
        encoder: TextEncoder | None,
        params: UpdateParams | None = None,
        *,
        index: ItemIndex | None = None,
    ) -> None:
        if index is None:
            if encoder is None:
                raise EvaluationError("ShortTermModel needs a text encoder or an item index")
            index = ItemIndex(encoder.dim)
        self.encoder = encoder
        self.params = params or UpdateParams(history_len=MAX_RING_LEN)
        self.index = index
        self._comment_vectors: dict[str, np.ndarray] = {}
        self._states: dict[ContextKey, InterestState] = {}
        self._fitted_on: TrainData | None = None

    def fit(self, data: TrainData) -> None:
        """Encode the catalog items not in the index yet; a refit on the same data keeps the
        replayed states (models that share this replay fit it again)."""
        if data is self._fitted_on:
            return
        fresh = [item for item in data.items if item.item_id not in self.index]
        if fresh and self.encoder is not None:
            vectors = self.encoder.encode([item.text for item in fresh])
            self.index.upsert([i.item_id for i in fresh], [i.title for i in fresh], vectors)
        self._states.clear()
        self._fitted_on = data

    @property
    def catalog(self) -> ItemIndex:
        """The text item index ranking reads (filled by :meth:`fit`)."""
        return self.index

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        return ids_of(self.recommend(users, k, exclude_seen=exclude_seen))

    def recommend(
        self, users: Sequence[UserContext], k: int, *, exclude_seen: bool
    ) -> list[list[Recommendation]]:
        """:meth:`rank` with the scores and reasons :func:`rank` gives."""
        states = self.states(users)
        return beyond_ring_filtered(
            users,
            states,
            k,
            exclude_seen,
            lambda kk: rank(states, self.index, kk, exclude_seen=exclude_seen),
        )

    def states(self, users: Sequence[UserContext]) -> list[InterestState]:
        """Each user's context replayed through :func:`update` (cached per context)."""
        self._encode_comments(users)
        return [self._state(user) for user in users]

    def _encode_comments(self, users: Sequence[UserContext]) -> None:
        """One encoder call for every comment text not encoded yet (as the pipeline does)."""
        if self.encoder is None:
            return
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
        key = context_key(user)
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


ContextKey = tuple[str, int, str]


def context_key(user: UserContext) -> ContextKey:
    """(user, number of events, last event id): what a replayed state depends on."""
    return (user.user_id, len(user.events), user.events[-1].event_id if user.events else "")


def beyond_ring_filtered(
    users: Sequence[UserContext],
    states: Sequence[InterestState],
    k: int,
    exclude_seen: bool,
    ranker: Callable[[int], list[list[Recommendation]]],
) -> list[list[Recommendation]]:
    """Top-``k`` per user from ``ranker(k')``, with the context items the state ring no
    longer holds filtered out too (``k'`` is ``k`` plus the most such items of any user)."""
    seen = [user.seen() if exclude_seen else frozenset() for user in users]
    beyond = max((len(s - st.seen_items()) for s, st in zip(seen, states, strict=True)), default=0)
    ranked = ranker(k + beyond)
    return [
        [r for r in recs if r.item_id not in user_seen][:k]
        for recs, user_seen in zip(ranked, seen, strict=True)
    ]


def ids_of(ranked: Sequence[Sequence[Recommendation]]) -> list[list[str]]:
    """The item ids of each list, order kept."""
    return [[r.item_id for r in recs] for recs in ranked]


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
