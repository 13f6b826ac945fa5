"""Beyond-accuracy metrics (hand-computed), the MMR row and the choice of lambda."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from interest_state import Recommendation
from streams.contract import EventRecord, ItemRecord
from streams.data.formats import write_events, write_items
from streams.offline.beyond import ListMetrics
from streams.offline.diverse import MMRModel, choose_mmr_lambda
from streams.offline.evaluate import (
    PopularityModel,
    ShortTermModel,
    TrainData,
    UserContext,
    load_dataset,
    run_evaluation,
)
from streams.offline.report import MetricValue, ModelScores

VECTORS = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [3.0, 3.0], "d": [-2.0, 0.0]}  # "e": none


class Vectors:
    """Item vectors by id, shaped like ItemIndex.vectors_of."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = {k: np.asarray(v, dtype=np.float32) for k, v in vectors.items()}
        self.dim = 2
        self.asked: list[int] = []

    def vectors_of(self, item_ids: Sequence[str]) -> tuple[list[int], np.ndarray]:
        found = [n for n, i in enumerate(item_ids) if i in self.vectors]
        rows = [self.vectors[item_ids[n]] for n in found]
        return found, np.stack(rows) if rows else np.zeros((0, 2), np.float32)


def _event(n: int, user: str, item: str, ts: float) -> EventRecord:
    return EventRecord(f"e{n}", user, item, "click", ts)


def _metrics() -> ListMetrics:
    items = tuple(ItemRecord(i, i, i) for i in "abcde")
    train = TrainData(items, tuple(_event(n, "t", i, n) for n, i in enumerate("aaab")))
    first_seen = {"a": 0.0, "b": 5.0, "c": 20.0, "d": 30.0}  # "e": never seen
    return ListMetrics.build(train, first_seen, Vectors(VECTORS))


def _user(name: str, last_ts: float) -> UserContext:
    return UserContext(name, (_event(0, name, "x", last_ts - 1), _event(1, name, "x", last_ts)))


def test_hand_computed_list_metrics() -> None:
    users = [_user("u1", 10.0), _user("u2", 25.0)]
    got = _metrics().score([["a", "b", "c", "e"], ["a", "d"]], users, k=3)  # "e" is cut by k
    # ILD: u1 cos(a,b)=0, cos(a,c)=cos(b,c)=1/sqrt2 -> 1 - sqrt2/3; u2 cos(a,d)=-1 -> 2.
    ild = [1 - math.sqrt(2) / 3, 2.0]
    assert got["ILD@3"].mean == pytest.approx(np.mean(ild))
    assert got["ILD@3"].se == pytest.approx(np.std(ild, ddof=1) / math.sqrt(2))
    assert got["coverage@3"] == MetricValue(4 / 5, None)  # a b c d of a..e
    # p(i) = (count + 1) / (4 training events + 5 items): a 4/9, b 2/9, c and d 1/9.
    bits = {"a": -math.log2(4 / 9), "b": -math.log2(2 / 9), "c": math.log2(9), "d": math.log2(9)}
    novelty = [(bits["a"] + bits["b"] + bits["c"]) / 3, (bits["a"] + bits["d"]) / 2]
    assert got["novelty@3"].mean == pytest.approx(np.mean(novelty))
    # u1's history ends at 10: c (first seen 20) is new; u2's at 25: d (30) is new.
    assert got["new-items@3"].mean == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert got["new-items@3"].se == pytest.approx(np.std([1 / 3, 1 / 2], ddof=1) / math.sqrt(2))


def test_lists_without_two_vectors_and_unknown_first_seen() -> None:
    metrics = _metrics()
    got = metrics.score([["e", "a"], ["e"], ["b", "b"]], [_user(n, 100.0) for n in "xyz"], k=10)
    assert got["ILD@10"].mean == pytest.approx(0.0)  # only ["b", "b"] counts: identical items
    assert got["new-items@10"].mean == 0.0  # "e" was never seen: not new
    assert got["coverage@10"].mean == pytest.approx(3 / 5)
    assert metrics.diversities([["a", "d"], ["e", "c"]]).tolist() == pytest.approx([2.0])


def test_without_vectors_there_is_no_ild() -> None:
    train = TrainData((ItemRecord("a", "a", "a"),), ())
    got = ListMetrics.build(train, {}, None).score([["a"]], [_user("u", 1.0)], k=1)
    assert set(got) == {"coverage@1", "novelty@1", "new-items@1"}
    assert got["novelty@1"].mean == pytest.approx(0.0)  # the one item has share 1


# --------------------------------------------------------------------------- the MMR row


class FixedBase:
    name = "base"

    def __init__(self) -> None:
        self.catalog = Vectors(VECTORS)
        self.asked: list[int] = []

    def fit(self, data: TrainData) -> None: ...

    def rank(self, users, k, *, exclude_seen):  # pragma: no cover - not asked by MMRModel
        raise AssertionError("MMRModel must use recommend")

    def recommend(self, users, k, *, exclude_seen):
        self.asked.append(k)
        recs = [Recommendation(i, s, "") for i, s in zip("abcd", [4.0, 3.0, 2.0, 1.0], strict=True)]
        return [recs[:k] for _ in users]


def test_mmr_model_reranks_the_base_pool() -> None:
    base = FixedBase()
    model = MMRModel(base, 0.5, pool=4)  # type: ignore[arg-type]
    assert model.name == "base+mmr-0.5"
    # rel = [1, 2/3, 1/3, 0]; a; then b 1/3 - 0, c 1/6 - .5/sqrt2, d 0 + .5 -> d; then b.
    assert model.rank([_user("u", 1.0)], 3, exclude_seen=True) == [["a", "d", "b"]]
    assert base.asked == [4]
    assert MMRModel(base, 1.0, pool=4).rank([_user("u", 1.0)], 3, exclude_seen=True) == [  # type: ignore[arg-type]
        ["a", "b", "c"]
    ]


def _row(model: str, ndcg: float, ild: float, stage: str = "validation") -> ModelScores:
    metrics = {"NDCG@10": MetricValue(ndcg, 0.0), "ILD@10": MetricValue(ild, 0.0)}
    return ModelScores(model, stage, True, 100, metrics)


def test_choose_lambda_keeps_ndcg_within_tolerance_and_maximises_ild() -> None:
    base = FixedBase()
    models = [MMRModel(base, lam) for lam in (0.9, 0.7, 0.5)]  # type: ignore[arg-type]
    scores = [
        _row("base", 0.100, 0.40),
        _row("base+mmr-0.9", 0.0995, 0.45),
        _row("base+mmr-0.7", 0.0981, 0.50),  # within 2 %: the most diverse that is
        _row("base+mmr-0.5", 0.0970, 0.60),  # 3 % down: out
        _row("base+mmr-0.5", 0.2, 0.9, stage="test"),  # never looked at
    ]
    choice = choose_mmr_lambda(scores, models, 10)
    assert choice is not None and choice["lambda"] == 0.7
    assert [t["within"] for t in choice["tried"]] == [True, True, False]
    assert choose_mmr_lambda(scores, models, 10, tolerance=0.05)["lambda"] == 0.5  # type: ignore[index]
    worse = [_row("base", 0.1, 0.4), *(_row(m.name, 0.05, 0.9) for m in models)]
    assert choose_mmr_lambda(worse, models, 10)["lambda"] == 1.0  # type: ignore[index]
    assert choose_mmr_lambda(scores, [], 10) is None


# --------------------------------------------------------------------------- end to end


class OneHot:
    """Item ``n`` of the catalog is e_n: every two items are orthogonal."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids, self.dim = list(ids), len(ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.eye(self.dim, dtype=np.float32)[[self.ids.index(t) for t in texts]]


def test_run_evaluation_reports_every_row_and_mmr_on_orthogonal_items_changes_nothing(
    tmp_path: Path,
) -> None:
    ids = [f"i{n}" for n in range(12)]
    items, events = tmp_path / "items.jsonl", tmp_path / "events.jsonl"
    write_items(items, [ItemRecord(i, i, i) for i in ids])
    per_user = {f"u{u}": [ids[(u * 5 + j) % 12] for j in range(5)] for u in range(6)}
    write_events(events, [_event(100 * u + j, f"u{u}", item, 100.0 * u + j)
                          for u, (user, seq) in enumerate(per_user.items())
                          for j, item in enumerate(seq)])  # fmt: skip
    short = ShortTermModel(OneHot(ids))  # type: ignore[arg-type]
    # pool = the largest k: the base is asked for the very lists it ranks itself (unclicked
    # one-hot items tie at 0, and the index may order ties differently for another k)
    models = [PopularityModel(), short, MMRModel(short, 0.3, pool=5)]
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out", models=models,
                            k_values=(3, 5))  # fmt: skip
    for stage in ("validation", "test"):
        for masked in (True, False):
            plain = report.score("short-term-decay", stage, masked=masked).metrics
            mmr = report.score("short-term-decay+mmr-0.3", stage, masked=masked).metrics
            assert mmr == plain  # no two items alike: MMR keeps the relevance order
            assert plain["ILD@3"].mean == pytest.approx(1.0)
            assert 0 < plain["coverage@3"].mean <= 1
    data = load_dataset(items, events)
    assert data.first_seen["i0"] == 0.0 and data.first_seen["i11"] == 201.0
    assert report.selections["mmr"]["lambda"] == 0.3  # NDCG unchanged: within 2 %
    assert "MMR lambda chosen on validation: 0.3" in report.markdown()
