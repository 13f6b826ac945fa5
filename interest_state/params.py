"""Tunable constants of the interest update, validated once when built."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ParamsError
from .state import MAX_INTERESTS

MAX_RING_LEN = 1024
"""Upper bound for ``history_len`` and ``dedupe_len`` (the codec stores counts as uint16)."""


@dataclass(frozen=True, slots=True)
class UpdateParams:
    """How events move a user's short-term interest.

    Event weights:

    * click: ``weight_click``;
    * comment: ``weight_comment``, pushing along
      ``(1 - comment_text_share) * item_vector + comment_text_share * text_vector``
      (the item vector alone when the comment has no text vector);
    * browse: ``weight_browse * (0.5 + min(dwell_ms / dwell_full_ms, 1))``, so a glance counts
      half and a full read one and a half times ``weight_browse``; a browse without
      ``dwell_ms`` counts as ``weight_browse`` (factor 1, as if half the full dwell).

    Negative signals push the short-term interest *away* from the item (its vector is
    subtracted) and weaken the interest centroid it belongs to:

    * dislike: ``weight_dislike``;
    * a browse shorter than ``negative_dwell_ms`` (0: none is): ``weight_browse / 2``, what a
      glance would have added.

    Several interests: each positive event joins the nearest of up to ``interests`` centroids
    when its cosine to it is at least ``interest_join_cos``; otherwise it starts a new one, and
    when all ``interests`` exist the two closest are merged to make room. Centroids decay like
    the short-term vector, and one whose weight falls below ``interest_prune_share`` of the
    heaviest is dropped.

    Weights decay with ``half_life_s`` of event time. ``history_len`` bounds the ring of recent
    (item, type, ts) entries and ``dedupe_len`` the ring of recent event-id hashes.
    """

    half_life_s: float = 6 * 3600.0
    weight_browse: float = 0.5
    weight_click: float = 1.0
    weight_comment: float = 2.0
    dwell_full_ms: int = 30_000
    comment_text_share: float = 0.5
    history_len: int = 50
    dedupe_len: int = 64
    weight_dislike: float = 1.0
    negative_dwell_ms: int = 3000
    interests: int = 4
    interest_join_cos: float = 0.6
    interest_prune_share: float = 0.02

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_life_s) and self.half_life_s > 0.0):
            raise ParamsError(f"half_life_s must be a positive number, got {self.half_life_s!r}")
        self._check_interests()
        for name in ("weight_browse", "weight_click", "weight_comment", "weight_dislike"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ParamsError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.dwell_full_ms < 1:
            raise ParamsError(f"dwell_full_ms must be >= 1, got {self.dwell_full_ms!r}")
        if not 0.0 <= self.comment_text_share <= 1.0:
            raise ParamsError(
                f"comment_text_share must be in [0, 1], got {self.comment_text_share!r}"
            )
        for name in ("history_len", "dedupe_len"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_RING_LEN:
                raise ParamsError(f"{name} must be in 1..{MAX_RING_LEN}, got {value!r}")

    def _check_interests(self) -> None:
        if not 1 <= self.interests <= MAX_INTERESTS:
            raise ParamsError(f"interests must be in 1..{MAX_INTERESTS}, got {self.interests!r}")
        if not -1.0 <= self.interest_join_cos <= 1.0:
            raise ParamsError(
                f"interest_join_cos must be in [-1, 1], got {self.interest_join_cos!r}"
            )
        if not 0.0 <= self.interest_prune_share < 1.0:
            raise ParamsError(
                f"interest_prune_share must be in [0, 1), got {self.interest_prune_share!r}"
            )
        if self.negative_dwell_ms < 0:
            raise ParamsError(f"negative_dwell_ms must be >= 0, got {self.negative_dwell_ms!r}")

    def is_negative_browse(self, dwell_ms: int | None) -> bool:
        """Whether a browse with this dwell time is a negative signal (a glance away)."""
        return dwell_ms is not None and dwell_ms < self.negative_dwell_ms

    def browse_weight(self, dwell_ms: int | None) -> float:
        """Weight of one browse event with the given dwell time (see the class docstring)."""
        if dwell_ms is None:
            return self.weight_browse
        # clip before dividing: an int too large for a float (10**400) must not overflow
        share = min(max(dwell_ms, 0), self.dwell_full_ms) / self.dwell_full_ms
        return self.weight_browse * (0.5 + share)
