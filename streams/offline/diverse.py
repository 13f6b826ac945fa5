"""Diversity offline: the served ranker re-ranked by MMR, and lambda chosen on validation.

:class:`MMRModel` asks its base model (the ranker the stream serves) for its best ``pool``
candidates with their scores, and re-ranks them with :func:`interest_state.mmr_rerank` on the
base's text item vectors: the function the stream is to call. :func:`choose_mmr_lambda` picks
lambda on the validation split: of the MMR rows whose NDCG@k stays within ``tolerance`` of the
base's, the one with the highest intra-list diversity (seen items masked, as served).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from encoders import ItemIndex
from interest_state import InterestState, Recommendation, mmr_rerank
from streams.errors import EvaluationError
from streams.offline.rankers import Recommender, ShortTermModel, TrainData, UserContext
from streams.offline.report import ModelScores
from streams.worker.lists import MMR_CANDIDATES, ListMaker

__all__ = [
    "MMR_GRID",
    "MMR_POOL",
    "ListsModel",
    "MMRModel",
    "ScoredRecommender",
    "choose_mmr_lambda",
    "lists_models",
    "served_model",
]

MMR_GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.3)
"""The lambdas the evaluation tries by default."""

MMR_POOL = 50
"""Candidates re-ranked per user (the base's best ``max(MMR_POOL, k)``)."""


class ScoredRecommender(Recommender, Protocol):
    """A model that can also give its scores (the stream's rankers do)."""

    @property
    def catalog(self) -> ItemIndex: ...

    def recommend(
        self, users: Sequence[UserContext], k: int, *, exclude_seen: bool
    ) -> list[list[Recommendation]]: ...


class MMRModel:
    """``base`` re-ranked by maximal marginal relevance with ``lam`` (1: ``base`` itself)."""

    def __init__(self, base: ScoredRecommender, lam: float, pool: int = MMR_POOL) -> None:
        if not 0.0 <= lam <= 1.0:
            raise EvaluationError(f"MMR lambda must be in [0, 1], got {lam}")
        if pool < 1:
            raise EvaluationError(f"MMR pool must be >= 1, got {pool}")
        self.base, self.lam, self.pool = base, lam, pool
        self.name = f"{base.name}+mmr-{lam:g}"

    def fit(self, data: TrainData) -> None:
        self.base.fit(data)

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        ranked = self.base.recommend(users, max(self.pool, k), exclude_seen=exclude_seen)
        catalog = self.base.catalog
        return [[r.item_id for r in mmr_rerank(recs, catalog, k, self.lam)] for recs in ranked]


class ListsModel:
    """``base``'s candidates made into lists as the stream makes them
    (:class:`streams.worker.lists.ListMaker`: interests fused in, dislikes' neighbours down,
    MMR, exploration slots with the items' tags; no trending: evaluated users have a history),
    on the states the base replays."""

    def __init__(self, base: ScoredRecommender, *, lam: float, interest_slots: int,
                 explore_slots: int, top_k: int = 10, name: str | None = None) -> None:  # fmt: skip
        self.base, self.top_k = base, top_k
        self.lists = ListMaker(base.catalog, mmr_lambda=lam, personal_after=0,
                               interest_slots=interest_slots,
                               explore_slots=explore_slots)  # fmt: skip
        self.name = name or (f"{base.name}+lists(mmr {lam:g}, interests {interest_slots}, "
                             f"explore {explore_slots})")  # fmt: skip

    def fit(self, data: TrainData) -> None:
        self.base.fit(data)
        self.lists.catalog = self.base.catalog
        self.lists.set_tags((item.item_id, item.tags) for item in data.items)

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        """The served list of ``top_k`` first (as the stream sends it), then, when ``k`` is
        larger, the base's next candidates."""
        wide = max(k, MMR_CANDIDATES)
        ranked = self.base.recommend(users, wide, exclude_seen=exclude_seen)
        hide = [user.seen() for user in users] if exclude_seen else None
        lists = self.lists.finish(_states(self.base, users), ranked, self.top_k, hide)
        out = []
        for served, candidates in zip(lists, ranked, strict=True):
            ids = [r.item_id for r in served]
            listed = set(ids)
            ids += [r.item_id for r in candidates if r.item_id not in listed]
            out.append(ids[:k])
        return out


def lists_models(base: ScoredRecommender, lam: float, slots: Sequence[str]) -> list[ListsModel]:
    """One :class:`ListsModel` row per ``"I,E"`` (interest slots, exploration slots)."""
    rows = []
    for pair in slots:
        try:
            interests, explore = (int(n) for n in pair.split(","))
        except ValueError:
            raise EvaluationError(f"--lists takes I,E (two whole numbers), got {pair!r}") from None
        rows.append(ListsModel(base, lam=lam, interest_slots=interests, explore_slots=explore))
    return rows


def _states(base: ScoredRecommender, users: Sequence[UserContext]) -> list[InterestState]:
    """The states ``base`` ranks ``users`` from (its own short-term replay)."""
    replay = base if isinstance(base, ShortTermModel) else getattr(base, "short", None)
    if not isinstance(replay, ShortTermModel):
        raise EvaluationError(f"{base.name} has no short-term replay to make lists from")
    return replay.states(users)


def served_model(models: Sequence[Recommender], blend_weight: float | None) -> ScoredRecommender:
    """The row the stream serves: ``blend-<weight>`` with a sequence model, else the
    short-term model."""
    name = f"blend-{blend_weight:g}" if blend_weight is not None else None
    for model in models:
        if (model.name == name) if name else isinstance(model, ShortTermModel):
            return model  # type: ignore[return-value]
    raise EvaluationError(f"the served model ({name or 'short-term'}) is not among the models")


def choose_mmr_lambda(
    scores: Sequence[ModelScores],
    models: Sequence[MMRModel],
    k: int,
    tolerance: float = 0.02,
) -> dict[str, Any] | None:
    """The lambda of ``models`` (all re-ranking one base) with the highest validation ILD@k
    among those within ``tolerance`` (a share) of the base's validation NDCG@k, masked.

    ``None`` without MMR models or without ILD; ``lambda`` 1.0 (no re-ranking) when none
    qualifies. Ties go to the larger lambda (closer to the base)."""
    if not models:
        return None
    table = {(s.model, s.stage, s.masked): s.metrics for s in scores}
    base = table.get((models[0].base.name, "validation", True))
    ndcg, ild = f"NDCG@{k}", f"ILD@{k}"
    if base is None or ild not in base:
        return None
    floor = (1.0 - tolerance) * base[ndcg].mean
    tried = []
    for model in sorted(models, key=lambda m: -m.lam):
        metrics = table[(model.name, "validation", True)]
        tried.append(
            {
                "lambda": model.lam,
                ndcg: metrics[ndcg].mean,
                ild: metrics[ild].mean,
                "within": metrics[ndcg].mean >= floor,
            }  # fmt: skip
        )
    ok = [t for t in tried if t["within"]]
    best = max(ok, key=lambda t: t[ild]) if ok else None
    lam = best["lambda"] if best is not None else 1.0
    return {
        "lambda": lam,
        "base": models[0].base.name,
        "rule": f"highest validation {ild} with {ndcg} >= {1 - tolerance:g} x the base's "
        "(seen items masked); 1.0 = off when none qualifies",
        "base_validation": {ndcg: base[ndcg].mean, ild: base[ild].mean},
        "tried": tried,
        "summary": f"MMR lambda chosen on validation: {lam:g} (base {models[0].base.name}: "
        f"{ndcg} {base[ndcg].mean:.4f}, {ild} {base[ild].mean:.4f}; rule: highest {ild} with "
        f"{ndcg} within {tolerance:.0%} of the base).",
    }
