"""What one microbatch does to each user, and how a batch is sorted before any model runs.

:func:`triage` splits a batch three ways: events to apply (with their item vectors), events
already in their user's state (:meth:`interest_state.InterestState.covers`: a redelivery
after a restart, recognised by its log position however many events came since), and events
whose item is unknown (dead-lettered). :meth:`Triage.settle` then adds the redeliveries to the
users' outcomes and records the dead-lettered events' positions in their users' states, so a
replay neither applies an event twice nor dead-letters it twice. :func:`update_users` folds
the usable events into their users' states (one encoder call for the batch's comments).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from encoders import TextEncoder
from interest_state import (
    Event,
    InterestState,
    InterestStateError,
    Observation,
    Recommendation,
    UpdateParams,
    update,
)

__all__ = ["BatchResult", "Triage", "Updated", "UserOutcome", "triage", "update_users"]

Updated = tuple[InterestState, tuple[str, ...], tuple[str, ...], tuple[str, ...]]
"""A user's new state and the event ids it applied, dropped as duplicates, as redeliveries."""


@dataclass(frozen=True, slots=True)
class UserOutcome:
    """One user's batch: the new state, which event ids it applied, which it dropped as client
    duplicates and which as redeliveries (already in the state: read again after a restart),
    and the user's recommendations."""

    state: InterestState
    applied: tuple[str, ...]
    duplicates: tuple[str, ...]
    recommendations: list[Recommendation]
    redelivered: tuple[str, ...] = ()
    #: The A/B variant that ranked the list (``"A"`` without A/B, :mod:`streams.worker.ab`)
    #: and the model version that ranked it.
    variant: str = "A"
    model_version: str = ""


@dataclass(slots=True)
class BatchResult:
    users: dict[str, UserOutcome] = field(default_factory=dict)
    #: (position in the input batch, reason) of events that cannot be used.
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: The model(s) that ranked this batch's variant ``A`` users (each user's own is in their
    #: :class:`UserOutcome`).
    model_version: str = ""


@dataclass(slots=True)
class Triage:
    """A batch sorted (see the module docstring)."""

    #: (position in the batch, event, its item's vector)
    usable: list[tuple[int, Event, np.ndarray]] = field(default_factory=list)
    #: user -> their stored state and the ids of their events already in it
    again: dict[str, tuple[InterestState, list[str]]] = field(default_factory=dict)
    #: user -> log positions of their events with an unknown item
    refused: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))

    def settle(self, updated: dict[str, Updated]) -> None:
        """Add the redeliveries to ``updated`` (a user with nothing new keeps their state) and
        mark the refused events' positions in the states of users who have one."""
        for user_id, (known, ids) in self.again.items():
            state, applied, duplicates, redelivered = updated.get(user_id) or (known, (), (), ())
            updated[user_id] = (state, applied, duplicates, (*redelivered, *ids))
        for user_id, positions in self.refused.items():
            if user_id in updated:  # a user without a state gets none for a bad event
                state, applied, duplicates, redelivered = updated[user_id]
                updated[user_id] = (state.with_offsets(positions), applied, duplicates,
                                    redelivered)  # fmt: skip


def triage(
    events: Sequence[Event],
    states: Mapping[str, InterestState | None],
    vector_of: Callable[[str], np.ndarray | None],
    rejected: list[tuple[int, str]],
) -> Triage:
    """Sort ``events`` (see the module docstring); unknown items are appended to ``rejected``
    as ``(position, reason)``."""
    out = Triage()
    for position, event in enumerate(events):
        known = states.get(event.user_id)
        if known is not None and known.covers(event.source, event.offset):
            out.again.setdefault(event.user_id, (known, []))[1].append(event.event_id)
            continue
        vector = vector_of(event.item_id)
        if vector is None:
            rejected.append((position, f"unknown item_id {event.item_id!r}"))
            out.refused[event.user_id].append((event.source, event.offset))
        else:
            out.usable.append((position, event, vector))
    return out


def update_users(
    encoder: TextEncoder,
    params: UpdateParams,
    usable: Sequence[tuple[int, Event, np.ndarray]],
    states: Mapping[str, InterestState | None],
    rejected: list[tuple[int, str]],
) -> dict[str, Updated]:
    """Each user's ``usable`` events folded into their state (one update call per user, the
    batch's comment texts in one encoder call); a user whose update fails has their events
    appended to ``rejected`` as ``(position, reason)``."""
    comments = [e for _, e, _ in usable if e.text is not None]
    vectors = encoder.encode([e.text or "" for e in comments]) if comments else None
    texts = {e.event_id: vectors[i] for i, e in enumerate(comments)} if vectors is not None else {}
    per_user: dict[str, list[Observation]] = defaultdict(list)
    for _, event, vector in usable:
        per_user[event.user_id].append(
            Observation(event=event, item_vector=vector, text_vector=texts.get(event.event_id))
        )
    positions = {id(e): p for p, e, _ in usable}
    updated: dict[str, Updated] = {}
    for user_id, observations in per_user.items():
        state = states.get(user_id) or InterestState.empty(encoder.dim)
        try:
            new_state, outcome = update(state, observations, params)
        except InterestStateError as exc:
            rejected.extend((positions[id(o.event)], str(exc)) for o in observations)
            continue
        updated[user_id] = (new_state, outcome.applied, outcome.duplicates, outcome.redelivered)
    return updated
