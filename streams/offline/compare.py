"""A candidate sequence model against the serving one, on the same most recent held-out events.

The split is the evaluator's (:func:`streams.offline.evaluate.load_dataset`): each user's newest
event (that is not a dislike) is the test target, the one before it the validation target (the
candidate's early stopping), the rest training data. Both models rank the whole catalog for every
user from the events before the test target, as the workers serve: the blend of the standardised
Transformer and short-term scores at the served weight (``INTEREST_STREAM_BLEND_WEIGHT``), the
user's own items masked, through the evaluator's own models (:class:`BlendModel`,
:class:`ShortTermModel`) and metrics (:func:`score_ranks`). With no serving model the workers rank
by the short-term vector alone, and so does the comparison.

The serving model was trained on an older log. The evaluator refuses a model whose card names other
training events than the split's (it could have learned the targets); that check is lifted for the
serving model only (:func:`as_serving`): every test target is its user's newest event but dislikes,
and a model trained earlier held out each user's two newest events of its own time, so it never
trained on a target (an event that arrives late with an older ``ts`` than the user's newest is the
exception). The candidate keeps the check: it must have been trained on this very split.

A candidate is promoted when its NDCG@10 beats the serving one's by the relative ``margin``:
``candidate >= serving x (1 + margin)`` and ``candidate > serving`` (:func:`decide`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from encoders import TextEncoder
from encoders.runtime.sequence import SequenceModel
from interest_state import UpdateParams
from interest_state.params import MAX_RING_LEN
from streams.offline.evaluate import (
    BlendModel,
    Dataset,
    Recommender,
    ShortTermModel,
    TransformerModel,
    score_ranks,
    target_ranks,
)
from streams.settings import Settings

__all__ = ["K", "METRIC", "Verdict", "as_serving", "decide", "held_out_scores", "lineup"]

K = 10
METRIC = f"NDCG@{K}"
"""What decides a promotion; HR@10 and MRR@10 are logged beside it."""
_RANK_BATCH = 256


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to promote, why, and the relative change of the metric (``None``: from 0)."""

    promote: bool
    reason: str
    change: float | None


def decide(candidate: float, serving: float, margin: float) -> Verdict:
    """Promote only a candidate better than the serving model by the relative ``margin``."""
    change = (candidate - serving) / serving if serving > 0 else None
    shown = f"{change:+.1%}" if change is not None else f"{candidate - serving:+.4f} from 0"
    need = f"margin {margin:.1%}"
    if candidate > serving and candidate >= serving * (1.0 + margin):
        return Verdict(True, f"{METRIC} {shown}, at least the {need}", change)
    if candidate > serving:
        return Verdict(False, f"{METRIC} {shown}, short of the {need}", change)
    return Verdict(False, f"{METRIC} {shown}: not better", change)


def as_serving(model: SequenceModel) -> SequenceModel:
    """The serving model, its card's training-events fingerprint dropped (in memory only), so
    that the evaluator scores it on a newer split (the module docstring says why that is fair)."""
    data = {k: v for k, v in (model.card.get("data") or {}).items() if k != "train_fingerprint"}
    model.card = {**model.card, "data": data}
    return model


def lineup(
    encoder: TextEncoder,
    settings: Settings,
    candidate: SequenceModel,
    serving: SequenceModel | None,
) -> tuple[Recommender, Recommender]:
    """(candidate, serving) ranked as the workers rank: the served blend of each sequence model
    with the short-term vector, or the short-term vector alone for no serving model. One text
    index and one short-term replay are shared by both."""
    short = ShortTermModel(
        encoder, UpdateParams(half_life_s=settings.half_life_s, history_len=MAX_RING_LEN)
    )
    ring = UpdateParams(half_life_s=settings.half_life_s, history_len=settings.history_len)

    def served(model: SequenceModel, name: str) -> Recommender:
        long = TransformerModel(model, encoder, params=ring, index=short.index, name=name)
        blend = BlendModel(long, short, settings.blend_weight)
        blend.name = f"{name} (blend {settings.blend_weight:g})"
        return blend

    first = served(candidate, f"candidate {candidate.version}")
    if serving is None:
        return first, short
    return first, served(as_serving(serving), f"serving {serving.version}")


def held_out_scores(
    dataset: Dataset, models: Sequence[Recommender], k: int = K
) -> list[dict[str, float]]:
    """HR@k, NDCG@k and MRR@k of each model on every user's test target (own items masked)."""
    contexts = dataset.contexts("test")
    targets = [user.target("test") for user in dataset.users]
    scores: list[dict[str, float]] = []
    for model in models:
        model.fit(dataset.train)
        ranked: list[list[str]] = []
        for start in range(0, len(contexts), _RANK_BATCH):
            ranked.extend(model.rank(contexts[start : start + _RANK_BATCH], k, exclude_seen=True))
        metrics = score_ranks(target_ranks(ranked, targets), (k,))
        scores.append({name: round(value.mean, 6) for name, value in metrics.items()})
    return scores
