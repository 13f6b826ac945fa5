"""The per-user interest state: an immutable record the stream loads, updates and stores."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from .arrays import FloatMatrix, FloatVector, frozen_any_vector, frozen_vector, unit
from .errors import InterestStateError, ParamsError, StateError

N_EVENT_TYPES = 4
MAX_INTERESTS = 16
"""Upper bound of the interest centroids a state keeps (the codec stores the count as a byte)."""
NO_INTERESTS: FloatMatrix = np.zeros((0, 0), dtype=np.float32)
NO_INTERESTS.setflags(write=False)
MAX_COMMENT_CHARS = 80
"""The longest ``last_comment`` a state keeps (the words an explanation quotes)."""


@dataclass(frozen=True, slots=True, eq=False)
class InterestState:
    """One user's interest.

    ``short_term`` is the time-decayed weighted *sum* of pushed vectors (not normalised) as
    of event time ``updated_ts``, and ``short_weight`` the equally decayed total weight.
    ``long_term`` is an optional vector set by a sequence model, tagged ``long_term_version``;
    it lives in that model's own item space, so its length (``long_dim``) is its own, not ``dim``.
    The ``recent_*`` rings list events oldest to newest by event time; ``recent_event_ids``
    holds 64-bit event-id hashes in arrival order for de-duplication.
    ``applied_offsets`` holds, for each source log the user's events were read from (a
    ``"topic/partition"`` in the stream), the highest offset whose event this state includes,
    sorted by source: a redelivered event (at or below its source's mark) is recognised
    whatever the number of events since, because a log delivers in order
    (:meth:`covers`).
    ``interests`` holds up to :data:`MAX_INTERESTS` interest centroids, one row each: like
    ``short_term`` a time-decayed weighted *sum* (as of ``updated_ts``) of the vectors of the
    events assigned to it, with its decayed total weight in ``interest_weights`` (each > 0);
    a user who watches comedy and horror has two rows, not one blurred average.
    ``last_comment`` keeps the first words of the user's latest comment (an explanation quotes
    them). ``n_by_type`` counts browse, click, comment and dislike events.

    Arrays are stored as read-only float32 copies, so a state cannot change once built.
    Equality is identity (``eq=False``): compare fields, or encoded bytes, instead.
    """

    dim: int
    short_term: FloatVector
    short_weight: float
    long_term: FloatVector | None
    long_term_version: str
    updated_ts: float
    recent_items: tuple[str, ...]
    recent_types: tuple[int, ...]
    recent_ts: tuple[float, ...]
    recent_event_ids: tuple[int, ...]
    n_events: int
    n_by_type: tuple[int, int, int, int]
    n_duplicates: int
    applied_offsets: tuple[tuple[str, int], ...] = ()
    interests: FloatMatrix = field(default_factory=lambda: NO_INTERESTS)
    interest_weights: tuple[float, ...] = ()
    last_comment: str = ""

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise StateError(f"dim must be >= 1, got {self.dim}")
        try:
            short = frozen_vector(self.short_term, self.dim, "short_term")
            long = None
            if self.long_term is not None:
                long = frozen_any_vector(self.long_term, "long_term")
        except InterestStateError as exc:
            raise StateError(str(exc)) from exc
        object.__setattr__(self, "short_term", short)
        object.__setattr__(self, "long_term", long)
        object.__setattr__(self, "interests", self._checked_interests())
        self._check_scalars()
        self._check_rings()

    def _checked_interests(self) -> FloatMatrix:
        rows = np.array(self.interests, dtype=np.float32)
        if rows.size == 0:
            rows = np.zeros((0, self.dim), dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim or rows.shape[0] > MAX_INTERESTS:
            raise StateError(
                f"interests must be (m <= {MAX_INTERESTS}, {self.dim}), got {rows.shape}"
            )
        if not np.isfinite(rows).all():
            raise StateError("interests contain NaN or infinite values")
        weights = self.interest_weights
        if len(weights) != rows.shape[0] or not all(math.isfinite(w) and w > 0 for w in weights):
            raise StateError("interest_weights must be one finite weight > 0 per interest")
        if len(self.last_comment) > MAX_COMMENT_CHARS:
            raise StateError(f"last_comment must be at most {MAX_COMMENT_CHARS} characters")
        rows.setflags(write=False)
        return rows

    def _check_scalars(self) -> None:
        if not (math.isfinite(self.short_weight) and self.short_weight >= 0.0):
            raise StateError(f"short_weight must be finite and >= 0, got {self.short_weight}")
        if not math.isfinite(self.updated_ts):
            raise StateError(f"updated_ts must be finite, got {self.updated_ts}")
        counts = (self.n_events, self.n_duplicates, *self.n_by_type)
        if len(self.n_by_type) != N_EVENT_TYPES or any(c < 0 for c in counts):
            raise StateError(
                f"counters must be >= 0 with {N_EVENT_TYPES} event types, got {counts}"
            )

    def _check_rings(self) -> None:
        lengths = {len(self.recent_items), len(self.recent_types), len(self.recent_ts)}
        if len(lengths) != 1:
            raise StateError("recent_items, recent_types and recent_ts differ in length")
        if any(not 0 <= kind < N_EVENT_TYPES for kind in self.recent_types):
            raise StateError(f"recent_types holds an unknown event type: {self.recent_types}")
        if any(not 0 <= h < 2**64 for h in self.recent_event_ids):
            raise StateError("recent_event_ids must be unsigned 64-bit integers")
        sources = [source for source, _ in self.applied_offsets]
        if sources != sorted(set(sources)):
            raise StateError("applied_offsets must be sorted by source, each source once")
        if any(not 0 <= offset < 2**63 for _, offset in self.applied_offsets):
            raise StateError("applied_offsets must be offsets in 0..2**63-1")

    @classmethod
    def empty(cls, dim: int) -> InterestState:
        """A state for a user with no events yet."""
        return cls(
            dim=dim,
            short_term=np.zeros(dim, dtype=np.float32),
            short_weight=0.0,
            long_term=None,
            long_term_version="",
            updated_ts=0.0,
            recent_items=(),
            recent_types=(),
            recent_ts=(),
            recent_event_ids=(),
            n_events=0,
            n_by_type=(0, 0, 0, 0),
            n_duplicates=0,
        )

    @property
    def n_interests(self) -> int:
        """How many interest centroids the state keeps."""
        return len(self.interest_weights)

    @property
    def long_dim(self) -> int:
        """Length of the long-term vector (0 when there is none)."""
        return 0 if self.long_term is None else int(self.long_term.shape[0])

    def interest_vector(self, long_weight: float = 0.0) -> FloatVector | None:
        """Unit vector in the short-term space blending in the long-term interest, or ``None``.

        With both present the result is the normalised ``(1 - long_weight) * unit(short) +
        long_weight * unit(long)``; when only one of them exists it is used alone. A long-term
        vector of another length (a sequence model's own item space) is not a vector of this
        space and is ignored here: rank with :func:`interest_state.rank_blended` instead.
        """
        if not 0.0 <= long_weight <= 1.0:
            raise ParamsError(f"long_weight must be in [0, 1], got {long_weight!r}")
        short = unit(self.short_term)
        same_space = self.long_term is not None and self.long_dim == self.dim
        long = unit(self.long_term) if same_space and self.long_term is not None else None
        if short is None or long is None:
            return short if long is None else long
        blend = unit((1.0 - long_weight) * short + long_weight * long)
        return short if blend is None else blend

    def covers(self, source: str, offset: int) -> bool:
        """Whether the event at ``offset`` of log ``source`` is already in this state (it is
        when an event at that offset or a later one of the same log was applied); an event
        without a position (``offset < 0``) never is."""
        if offset < 0:
            return False
        for known, mark in self.applied_offsets:
            if known == source:
                return offset <= mark
        return False

    def with_offsets(self, positions: Iterable[tuple[str, int]]) -> InterestState:
        """A copy whose ``applied_offsets`` also cover ``positions`` (``(source, offset)``
        pairs; offsets below 0 are ignored): events there count as in the state."""
        marks = dict(self.applied_offsets)
        for source, offset in positions:
            if offset >= 0:
                marks[source] = max(offset, marks.get(source, -1))
        return replace(self, applied_offsets=tuple(sorted(marks.items())))

    def seen_items(self) -> frozenset[str]:
        """Item ids in the recent-history ring (what the ranking filters out)."""
        return frozenset(self.recent_items)

    def disliked_items(self) -> tuple[str, ...]:
        """Item ids of the dislikes in the recent-history ring, newest first."""
        dislike = N_EVENT_TYPES - 1
        pairs = zip(self.recent_items, self.recent_types, strict=True)
        return tuple(dict.fromkeys(item for item, kind in reversed(list(pairs)) if kind == dislike))

    def with_long_term(self, vector: npt.ArrayLike | None, version: str) -> InterestState:
        """A copy with the long-term vector (from a sequence model) replaced."""
        if vector is None:
            return replace(self, long_term=None, long_term_version=version)
        return replace(
            self, long_term=np.asarray(vector, dtype=np.float32), long_term_version=version
        )
