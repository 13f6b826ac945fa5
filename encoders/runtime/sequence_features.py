"""What the sequence model reads: a user's events as the int64 arrays of its graph inputs.

The same code (:func:`features`) feeds training, export validation and the stream, so the three
cannot drift apart. :class:`ModelInputs` is what a model card says its model reads beyond item,
type, gap and position (context, tags, item vectors, dislikes). Re-exported by
:mod:`encoders.runtime.sequence`, which runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from encoders.errors import ModelLoadError
from interest_state import EventType

__all__ = [
    "CONTEXT_INPUTS",
    "DISLIKE",
    "DISLIKE_INDEX",
    "EVENT_TYPES",
    "GAP_BOUNDARIES_S",
    "INPUT_NAMES",
    "N_GAP_BUCKETS",
    "OTHER_INDEX",
    "ModelInputs",
    "SequenceEvent",
    "SequenceFeatures",
    "event_type_index",
    "features",
    "gap_buckets",
    "hours_and_weekdays",
]

INPUT_NAMES = ("item_rows", "event_types", "gap_buckets", "mask")
"""The graph inputs of every model."""
CONTEXT_INPUTS = ("hours", "weekdays")
"""The graph inputs of a model trained with context (``TrainConfig.context``)."""

EVENT_TYPES: tuple[str, ...] = tuple(
    kind.name.lower() for kind in (EventType.CLICK, EventType.BROWSE, EventType.COMMENT)
)
"""The event type names (``click``, ``browse``, ``comment``: :class:`interest_state.EventType`'s,
lower-cased) in the model's embedding order: index 0 is padding, 1.. these types, then
:data:`OTHER_INDEX` for any other type. The order is the trained models' (not the enum's) and must
not change."""

DISLIKE = EventType.DISLIKE.name.lower()
OTHER_INDEX = len(EVENT_TYPES) + 1
"""The type index of an event type the model has no row of its own for."""
DISLIKE_INDEX = OTHER_INDEX + 1
"""The type index of a dislike, in a model trained with dislikes (``ModelInputs.dislikes``; the
embedding then has one row more). Any other model is never fed a dislike: :func:`features` leaves
them out, as those models never saw one in training."""

GAP_BOUNDARIES_S = tuple(float(4**k) for k in range(1, 15))
"""Log-spaced (x4) gap boundaries, 4 s .. ~8.5 years. Bucket 0 = padding, 1 = no previous
event, 2 + ``searchsorted(boundaries, gap)`` otherwise."""
N_GAP_BUCKETS = len(GAP_BOUNDARIES_S) + 3


def hours_and_weekdays(ts: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day (1..24) and day of week (1 = Monday .. 7) of each epoch time, in UTC
    (0 is padding), int64. The events carry no time zone: UTC is the one clock all share."""
    times = np.floor(np.asarray(ts, dtype=np.float64)).astype(np.int64)
    hours = times // 3600 % 24 + 1
    weekdays = (times // 86400 + 3) % 7 + 1  # 1970-01-01 was a Thursday
    return hours, weekdays


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """Which inputs beyond item, type, gap and position a model uses; the card's ``inputs``.

    ``tags``: the tag vocabulary (an item's vector adds the mean of its known tags' rows of
    ``tag_weight``); ``vector_dim``: the length of the items' ``vector`` (0: none); ``context``:
    the graph takes the hour of day and day of week of each event; ``dislikes``: dislike events
    are inputs (type :data:`DISLIKE_INDEX`; the card's ``event_types`` lists ``dislike``). A card
    without ``inputs`` (models trained before these existed) is a model with none of them.
    """

    tags: tuple[str, ...] = ()
    vector_dim: int = 0
    context: bool = False
    dislikes: bool = False

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types the model reads, in its embedding order (after padding and other)."""
        return EVENT_TYPES + ((DISLIKE,) if self.dislikes else ())

    @property
    def n_type_rows(self) -> int:
        """Rows of the type embedding: padding, the base types, other, and dislike if used."""
        return OTHER_INDEX + 1 + int(self.dislikes)

    @property
    def graph_inputs(self) -> tuple[str, ...]:
        return INPUT_NAMES + (CONTEXT_INPUTS if self.context else ())

    def to_card(self) -> dict[str, Any]:
        return {"tags": list(self.tags), "vector_dim": self.vector_dim,
                "context": list(CONTEXT_INPUTS) if self.context else [],
                "event_types": list(self.event_types),
                "graph": list(self.graph_inputs)}  # fmt: skip

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> ModelInputs:
        raw = card.get("inputs") or {}
        try:
            tags = tuple(str(t) for t in raw.get("tags") or ())
            vector_dim = int(raw.get("vector_dim") or 0)
            context = bool(raw.get("context"))
            dislikes = DISLIKE in (raw.get("event_types") or ())
        except (AttributeError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"model card: unreadable inputs: {exc}") from exc
        if vector_dim < 0 or len(set(tags)) != len(tags):
            raise ModelLoadError("model card: inputs with a negative vector_dim or repeated tags")
        return cls(tags, vector_dim, context, dislikes)


class SequenceEvent(NamedTuple):
    """One event as the sequence model reads it."""

    item_id: str
    event_type: str
    ts: float


def event_type_index(event_type: str) -> int:
    """The type index of an event (:data:`EVENT_TYPES`, :data:`OTHER_INDEX`,
    :data:`DISLIKE_INDEX`)."""
    if event_type == DISLIKE:
        return DISLIKE_INDEX
    try:
        return EVENT_TYPES.index(event_type) + 1
    except ValueError:
        return OTHER_INDEX


def gap_buckets(ts: Sequence[float]) -> np.ndarray:
    """Bucket of the gap before each event (1 for the first), int64."""
    times = np.asarray(ts, dtype=np.float64)
    out = np.ones(len(times), dtype=np.int64)
    if len(times) > 1:
        gaps = np.maximum(np.diff(times), 0.0)
        out[1:] = 2 + np.searchsorted(np.asarray(GAP_BOUNDARIES_S), gaps, side="right")
    return out


@dataclass(frozen=True, slots=True)
class SequenceFeatures:
    """A left-padded batch, ready for the graph (all int64, shape [B, L]); ``hours`` and
    ``weekdays`` are fed only to a model with context."""

    item_rows: np.ndarray
    event_types: np.ndarray
    gap_buckets: np.ndarray
    mask: np.ndarray
    hours: np.ndarray
    weekdays: np.ndarray

    def feeds(self, names: Sequence[str] = INPUT_NAMES) -> dict[str, np.ndarray]:
        """The arrays of the graph inputs ``names`` (default: a model without context)."""
        named = dict(zip(INPUT_NAMES + CONTEXT_INPUTS, self.arrays(), strict=True))
        return {name: named[name] for name in names}

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.item_rows, self.event_types, self.gap_buckets, self.mask, self.hours,
                self.weekdays)  # fmt: skip


def features(
    histories: Sequence[Sequence[SequenceEvent]],
    row_of: dict[str, int],
    max_len: int,
    *,
    width: int | None = None,
    context: bool = False,
    dislikes: bool = False,
) -> SequenceFeatures:
    """Encode each history's last ``max_len`` known events, left-padded to ``width``.

    ``row_of`` maps item ids to rows 1..n (0 is padding); events of unknown items are skipped,
    and so are dislikes unless ``dislikes`` (a model trained with them). Gaps are taken over the
    whole kept history, before the cut to ``max_len``. ``width`` defaults to the longest kept
    history (at least 1). ``context``: fill ``hours`` and ``weekdays`` (zeros otherwise, as a
    model without context never reads them).
    """
    kept: list[list[np.ndarray]] = []
    for history in histories:
        known = [e for e in history
                 if e.item_id in row_of and (dislikes or e.event_type != DISLIKE)]  # fmt: skip
        buckets = gap_buckets([e.ts for e in known])[-max_len:] if known else np.empty(0, np.int64)
        known = known[-max_len:]
        rows = np.array([row_of[e.item_id] for e in known], dtype=np.int64)
        types = np.array([event_type_index(e.event_type) for e in known], dtype=np.int64)
        hours, weekdays = (
            hours_and_weekdays([e.ts for e in known]) if context else (rows * 0, rows * 0)
        )  # a model without context is not fed them: no need to compute them (1.3x the time)
        kept.append([rows, types, buckets, np.ones(len(known), np.int64), hours, weekdays])
    width = width or max(1, max((len(k[0]) for k in kept), default=1))
    shape = (len(histories), width)
    arrays = [np.zeros(shape, dtype=np.int64) for _ in range(6)]
    for n, columns in enumerate(kept):
        size = min(len(columns[0]), width)
        if size:
            for array, column in zip(arrays, columns, strict=True):
                array[n, -size:] = column[-size:]
    return SequenceFeatures(*arrays)
