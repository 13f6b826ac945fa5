"""The models a pipeline serves: one :class:`Slot` per A/B variant, and what a batch does with it.

Without A/B a pipeline has one slot, ``A``: the sequence model hot-reloaded from
``INTEREST_STREAM_SEQUENCE_MODEL_DIR`` (or none: short-term only). With A/B
(:mod:`streams.worker.ab`) it has a second, ``B``, loaded from ``INTEREST_STREAM_AB_MODEL_DIR``
by a watcher of its own. Each slot holds its model aligned with the item index and the candidate
index of that model's item vectors (large catalogs), so each variant ranks exactly as a pipeline
serving it alone would. A batch groups its users by variant (:func:`group_by_variant`) and
ranks each group with its slot's model: one sequence-model run and one matrix product per
variant, never one per user.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from encoders import EncoderError, TextEncoder
from encoders.index.ann import AnnIndex
from encoders.index.device import DeviceIndex
from interest_state import InterestState, InterestStateError
from streams.worker.ab import Split
from streams.worker.long_term import ActiveSequence

__all__ = ["LongTerms", "Slot", "group_by_variant", "long_terms", "served_version"]

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Slot:
    """One variant's models: its sequence model (``None``: short-term only) and the candidate
    index of that model's item vectors (``None``: none built, or it failed: ranked exactly).
    Each field is replaced whole by one assignment; a batch reads each once."""

    variant: str
    sequence: ActiveSequence | None = None
    long_ann: AnnIndex | DeviceIndex | None = None


def served_version(encoder: TextEncoder, active: ActiveSequence | None) -> str:
    """What ranked a list: ``<text encoder>`` or ``<text encoder>+<sequence model>``."""
    return encoder.model_version if active is None else f"{encoder.model_version}+{active.version}"


def group_by_variant(users: Sequence[str], split: Split | None) -> dict[str, list[int]]:
    """variant -> positions of its users in ``users`` (all ``A`` without a split), in order."""
    if split is None:
        return {"A": list(range(len(users)))} if users else {}
    groups: dict[str, list[int]] = {}
    for position, user_id in enumerate(users):
        groups.setdefault(split.variant(user_id), []).append(position)
    return groups


@dataclass(frozen=True, slots=True)
class LongTerms:
    """States with their long-term vectors, the model that gave them (``None``: it failed, the
    states are unchanged and ranked short-term only), and the vectors that were not finite."""

    states: list[InterestState]
    active: ActiveSequence | None
    nonfinite: int = 0


def long_terms(states: list[InterestState], active: ActiveSequence) -> LongTerms:
    """Run the sequence model once for ``states``; on failure the batch is ranked short-term
    only (no event is lost for it), a non-finite user vector leaves that user short-term only."""
    try:
        with_long, nonfinite = active.with_long_terms(states)
    except (EncoderError, InterestStateError) as exc:
        log.error("sequence model %s failed on a batch: %s", active.version, exc)
        return LongTerms(states, None)
    if nonfinite:
        log.warning("sequence model %s: %d non-finite user vectors, ranked short-term only",
                    active.version, nonfinite)  # fmt: skip
    return LongTerms(with_long, active, nonfinite)
