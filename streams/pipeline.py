"""The model side of one microbatch, free of Faust: resolve vectors, encode, update, rank.

``Pipeline.process`` is blocking numpy/ONNX work; the agent runs it in an executor thread so
the consumer keeps fetching meanwhile. One call does the expensive work once for the batch:
all comment texts in one encoder call, all touched users ranked in one matrix product.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from encoders import ItemIndex, TextEncoder
from interest_state import (
    Event,
    InterestState,
    InterestStateError,
    Observation,
    Recommendation,
    UpdateParams,
    rank,
    update,
)
from streams.schemas import ItemMessage

__all__ = ["BatchResult", "Pipeline", "UserOutcome"]


@dataclass(frozen=True, slots=True)
class UserOutcome:
    state: InterestState
    applied: tuple[str, ...]
    duplicates: tuple[str, ...]
    recommendations: list[Recommendation]


@dataclass(slots=True)
class BatchResult:
    users: dict[str, UserOutcome] = field(default_factory=dict)
    #: (position in the input batch, reason) of events that cannot be used.
    rejected: list[tuple[int, str]] = field(default_factory=list)


class Pipeline:
    """Text encoder + item index + update/ranking parameters of one worker."""

    def __init__(
        self,
        encoder: TextEncoder,
        params: UpdateParams,
        top_k: int = 10,
        index: ItemIndex | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index or ItemIndex(encoder.dim)
        self.params = params
        self.top_k = top_k
        self._index_lock = threading.Lock()

    @property
    def model_version(self) -> str:
        return self.encoder.model_version

    def add_items(self, items: Sequence[ItemMessage]) -> None:
        """Encode catalog items (one encoder call) and make them recommendable at once."""
        if not items:
            return
        latest = {item.item_id: item for item in items}  # a compacted topic may repeat keys
        chosen = list(latest.values())
        vectors = self.encoder.encode([item.text for item in chosen])
        with self._index_lock:
            self.index.upsert([i.item_id for i in chosen], [i.title for i in chosen], vectors)

    def process(
        self, events: Sequence[Event], states: Mapping[str, InterestState | None]
    ) -> BatchResult:
        result = BatchResult()
        usable: list[tuple[int, Event, np.ndarray]] = []
        for position, event in enumerate(events):
            vector = self.index.vector(event.item_id)
            if vector is None:
                result.rejected.append((position, f"unknown item_id {event.item_id!r}"))
            else:
                usable.append((position, event, vector))
        texts = self._encode_comments([e for _, e, _ in usable])
        per_user: dict[str, list[Observation]] = defaultdict(list)
        for _, event, vector in usable:
            per_user[event.user_id].append(
                Observation(event=event, item_vector=vector, text_vector=texts.get(event.event_id))
            )
        positions = {id(e): p for p, e, _ in usable}
        new_states: dict[str, tuple[InterestState, tuple[str, ...], tuple[str, ...]]] = {}
        for user_id, observations in per_user.items():
            state = states.get(user_id) or InterestState.empty(self.encoder.dim)
            try:
                new_state, outcome = update(state, observations, self.params)
            except InterestStateError as exc:
                result.rejected.extend((positions[id(o.event)], str(exc)) for o in observations)
                continue
            new_states[user_id] = (new_state, outcome.applied, outcome.duplicates)
        users = list(new_states)
        ranked = rank([new_states[u][0] for u in users], self.index, self.top_k)
        for user_id, recs in zip(users, ranked, strict=True):
            state, applied, duplicates = new_states[user_id]
            result.users[user_id] = UserOutcome(state, applied, duplicates, recs)
        return result

    def _encode_comments(self, events: Sequence[Event]) -> dict[str, np.ndarray]:
        comments = [e for e in events if e.text is not None]
        if not comments:
            return {}
        vectors = self.encoder.encode([e.text or "" for e in comments])
        return {e.event_id: vectors[i] for i, e in enumerate(comments)}

    def recommend(self, state: InterestState, k: int | None = None) -> list[Recommendation]:
        return rank([state], self.index, k or self.top_k)[0]
