"""What one microbatch does to each user, and how a batch is sorted before any model runs.

:func:`triage` splits a batch three ways: events to apply (with their item vectors), events
already in their user's state (:meth:`interest_state.InterestState.covers`: a redelivery
after a restart, recognised by its log position however many events came since), and events
whose item is unknown (dead-lettered). :meth:`Triage.settle` then adds the redeliveries to the
users' outcomes and records the dead-lettered events' positions in their users' states, so a
replay neither applies an event twice nor dead-letters it twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from interest_state import Event, InterestState, Recommendation

__all__ = ["BatchResult", "Triage", "Updated", "UserOutcome", "triage"]

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


@dataclass(slots=True)
class BatchResult:
    users: dict[str, UserOutcome] = field(default_factory=dict)
    #: (position in the input batch, reason) of events that cannot be used.
    rejected: list[tuple[int, str]] = field(default_factory=list)
    #: The model(s) that ranked this batch.
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
