"""The update rule: observations in, a new state out (pure, deterministic, idempotent).

Time decay is exact with respect to event time. With ``T = updated_ts`` the state holds
``short_term = sum_i w_i * v_i * 0.5 ** ((T - t_i) / half_life)`` over every applied event
``i``, whatever order the events arrived in:

* an event at or after ``T`` decays the state to its time and is added at full weight;
* an older event (out of order) is added with its weight decayed to ``T``, so the state
  never moves backwards in time.

Two kinds of repeat change nothing:

* a *redelivery*: an event with a log position (``Event.source``/``offset``) at or below the
  highest offset of that log already in the state (``applied_offsets``). A log delivers in
  order and a consumer replays it from a committed offset, so this holds for any number of
  events since, whatever the commit policy; nothing but ``applied_offsets`` records it.
* a *duplicate*: an event whose event-id hash is in ``recent_event_ids`` (or that repeats
  within one call): the client sent it twice, at two positions. It counts in
  ``n_duplicates``. The ring holds the last ``dedupe_len`` hashes: a client's resend after
  that many newer events is applied again.
Within one call, observations are applied in event-time order, so a shuffled batch gives the
same state as a sorted one. Every observation is checked before any is applied.

Negative signals (a dislike, a browse shorter than ``negative_dwell_ms``) subtract their
vector from the short-term sum without adding to its weight, and take their weight off the
interest centroid nearest to them (:mod:`interest_state.interests`); positive events join or
start a centroid. A short-term vector may therefore point away from what a user disliked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .arrays import frozen_vector
from .errors import ObservationError
from .events import EventType, Observation, event_id_hash
from .interests import Centroids
from .params import UpdateParams
from .state import MAX_COMMENT_CHARS, N_EVENT_TYPES, InterestState


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """Which event ids one :func:`update` call applied, and which it dropped as duplicates or
    redeliveries."""

    applied: tuple[str, ...]
    duplicates: tuple[str, ...]
    redelivered: tuple[str, ...] = ()


@dataclass(slots=True)
class _Accumulator:
    """Mutable scratch space for one call (never escapes :func:`update`)."""

    short: npt.NDArray[np.float64]
    weight: float
    ref_ts: float
    half_life_s: float
    centroids: Centroids
    history: list[tuple[float, int, str]] = field(default_factory=list)
    hashes: list[int] = field(default_factory=list)
    by_type: list[int] = field(default_factory=lambda: [0] * N_EVENT_TYPES)
    marks: dict[str, int] = field(default_factory=dict)
    comment: tuple[float, str] | None = None  # (ts, words) of the latest comment applied

    def mark(self, source: str, offset: int) -> None:
        """Remember that the event at ``offset`` of ``source`` is now in the state."""
        if offset >= 0:
            self.marks[source] = max(offset, self.marks.get(source, -1))

    def push(self, ts: float, weight: float, vector: npt.NDArray[np.float64]) -> None:
        """Add an event of ``weight`` (negative: push away) at event time ``ts``."""
        if ts >= self.ref_ts:
            decay = 0.5 ** ((ts - self.ref_ts) / self.half_life_s)
            self.short = self.short * decay
            self.weight = self.weight * decay
            self.centroids.decay(decay)
            self.ref_ts = ts
        else:
            weight = weight * 0.5 ** ((self.ref_ts - ts) / self.half_life_s)
        self.short = self.short + weight * vector
        if weight > 0:
            self.weight = self.weight + weight
            self.centroids.join(vector, weight)
        else:
            self.centroids.weaken(vector, -weight)


def update(
    state: InterestState, observations: Sequence[Observation], params: UpdateParams
) -> tuple[InterestState, UpdateResult]:
    """Apply ``observations`` to ``state``; return the new state and what was applied.

    Raises :class:`ObservationError` (or its subclass :class:`DimensionError`) before
    changing anything when any observation is unusable.
    """
    vectors = [_push_vector(obs, state.dim, params) for obs in observations]
    order = sorted(range(len(observations)), key=lambda i: _sort_key(observations[i]))
    acc = _Accumulator(
        short=state.short_term.astype(np.float64),
        weight=state.short_weight,
        ref_ts=state.updated_ts,
        half_life_s=params.half_life_s,
        centroids=Centroids.of(state, params),
    )
    known = set(state.recent_event_ids)
    applied: list[str] = []
    duplicates: list[str] = []
    redelivered: list[str] = []
    for i in order:
        event = observations[i].event
        if state.covers(event.source, event.offset):
            redelivered.append(event.event_id)
            continue
        acc.mark(event.source, event.offset)
        key = event_id_hash(event.event_id)
        if key in known:
            duplicates.append(event.event_id)
            continue
        known.add(key)
        acc.push(event.ts, _weight(observations[i], params), vectors[i])
        if event.event_type is EventType.COMMENT and event.text:
            acc.comment = max(acc.comment or (-math.inf, ""), (event.ts, _words(event.text)))
        acc.history.append((event.ts, int(event.event_type), event.item_id))
        acc.hashes.append(key)
        acc.by_type[event.event_type] += 1
        applied.append(event.event_id)
    new_state = _build(state, acc, params, len(applied), len(duplicates))
    result = UpdateResult(tuple(applied), tuple(duplicates), tuple(redelivered))
    return new_state, result


def _sort_key(observation: Observation) -> tuple[float, int, str, str]:
    event = observation.event
    return (event.ts, int(event.event_type), event.item_id, event.event_id)


def _weight(observation: Observation, params: UpdateParams) -> float:
    """The event's weight; negative for a negative signal."""
    event = observation.event
    if event.event_type is EventType.BROWSE:
        if params.is_negative_browse(event.dwell_ms):
            return -params.weight_browse / 2
        return params.browse_weight(event.dwell_ms)
    if event.event_type is EventType.CLICK:
        return params.weight_click
    if event.event_type is EventType.DISLIKE:
        return -params.weight_dislike
    return params.weight_comment


def _words(text: str) -> str:
    """The first words of a comment, at most :data:`MAX_COMMENT_CHARS` characters."""
    words = " ".join(text.split())
    if len(words) <= MAX_COMMENT_CHARS:
        return words
    cut = words[: MAX_COMMENT_CHARS - 1].rsplit(" ", 1)[0]
    return cut + "…"


def _push_vector(
    observation: Observation, dim: int, params: UpdateParams
) -> npt.NDArray[np.float64]:
    """Check one observation and return the direction it pushes the state in."""
    event = observation.event
    if not (math.isfinite(event.ts) and event.ts >= 0.0):
        raise ObservationError(f"event {event.event_id!r}: ts must be >= 0, got {event.ts!r}")
    what = f"event {event.event_id!r}"
    item = frozen_vector(observation.item_vector, dim, f"{what} item_vector")
    push = item.astype(np.float64)
    if event.event_type is EventType.COMMENT and observation.text_vector is not None:
        text = frozen_vector(observation.text_vector, dim, f"{what} text_vector")
        share = params.comment_text_share
        push = (1.0 - share) * push + share * text.astype(np.float64)
    return push


def _build(
    state: InterestState, acc: _Accumulator, params: UpdateParams, n_applied: int, n_dup: int
) -> InterestState:
    history = sorted(
        [*zip(state.recent_ts, state.recent_types, state.recent_items, strict=True), *acc.history]
    )[-params.history_len :]
    hashes = (*state.recent_event_ids, *acc.hashes)[-params.dedupe_len :]
    n_by_type = state.n_by_type
    comment = state.last_comment if acc.comment is None else acc.comment[1]
    interests, weights = acc.centroids.rows()
    return InterestState(
        dim=state.dim,
        short_term=acc.short.astype(np.float32),
        short_weight=acc.weight,
        long_term=state.long_term,
        long_term_version=state.long_term_version,
        updated_ts=acc.ref_ts,
        recent_items=tuple(item for _, _, item in history),
        recent_types=tuple(kind for _, kind, _ in history),
        recent_ts=tuple(ts for ts, _, _ in history),
        recent_event_ids=hashes,
        n_events=state.n_events + n_applied,
        n_by_type=(
            n_by_type[0] + acc.by_type[0],
            n_by_type[1] + acc.by_type[1],
            n_by_type[2] + acc.by_type[2],
            n_by_type[3] + acc.by_type[3],
        ),
        n_duplicates=state.n_duplicates + n_dup,
        applied_offsets=state.applied_offsets,
        interests=interests,
        interest_weights=weights,
        last_comment=comment,
    ).with_offsets(acc.marks.items())
