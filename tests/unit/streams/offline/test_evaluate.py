"""Tests of streams.offline.evaluate: split, metrics, masking, leakage, outputs, the command."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from encoders import ExportReport
from interest_state import UpdateParams
from streams.contract import EventRecord, ItemRecord
from streams.data.formats import write_events, write_items
from streams.errors import EvaluationError
from streams.offline.evaluate import (
    CHART_MISSING,
    PopularityModel,
    ShortTermModel,
    TrainData,
    UserContext,
    evaluate_command,
    load_dataset,
    run_evaluation,
    score_ranks,
    target_ranks,
)

FILLERS = [f"f{n:02d}" for n in range(1, 27)]
CATALOG = ["p1", "p2", "p3", *FILLERS, "x"]  # 30 items; "x" is last in catalog order


def _items(ids: Sequence[str]) -> list[ItemRecord]:
    return [ItemRecord(i, f"title {i}", f"item {i} " + " ".join([i] * (n % 5 + 1)))
            for n, i in enumerate(ids)]  # fmt: skip


def _events(per_user: dict[str, list[str]], step: float = 1.0) -> list[EventRecord]:
    """Clicks; user after user, ``step`` seconds apart (the file must be chronological)."""
    events: list[EventRecord] = []
    for user, item_ids in per_user.items():
        for item_id in item_ids:
            n = len(events)
            events.append(EventRecord(f"e{n}", user, item_id, "click", 1000.0 + n * step))
    return events


def _write(tmp_path: Path, per_user: dict[str, list[str]], step: float = 1.0) -> tuple[Path, Path]:
    items, events = tmp_path / "items.jsonl", tmp_path / "events.jsonl"
    write_items(items, _items(CATALOG))
    write_events(events, _events(per_user, step))
    return items, events


# Training counts: p1 3, p2 2, p3 1 (short users are training data), each history filler 1.
POPULARITY_USERS = {
    "bg1": ["p1", "p2"],
    "bg2": ["p1", "p2"],
    "bg3": ["p1", "p3"],
    "first": ["f01", "f02", "p1"],  # test target is the most popular item: rank 1
    "third": ["f03", "f04", "p3"],  # test target ranks 3rd (p1, p2, p3)
    **{f"leak{n}": [f"f0{4 + n}", f"f{8 + n:02d}", "x"] for n in range(1, 5)},
}


class OneHotEncoder:
    """Stands in for TextEncoder: item ``CATALOG[n]`` has the unit vector e_n."""

    dim = len(CATALOG)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = [CATALOG.index(text.split()[1]) for text in texts]
        return np.eye(self.dim, dtype=np.float32)[rows]


# --------------------------------------------------------------------------- metrics


def test_score_ranks_matches_hand_computed_values() -> None:
    metrics = score_ranks([1, 3, None, 15], (10, 20))
    assert list(metrics) == ["HR@10", "HR@20", "NDCG@10", "NDCG@20", "MRR@10"]
    assert metrics["HR@10"].mean == pytest.approx(2 / 4)
    assert metrics["HR@20"].mean == pytest.approx(3 / 4)
    assert metrics["NDCG@10"].mean == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert metrics["NDCG@20"].mean == pytest.approx((1 + 0.5 + 1 / math.log2(16)) / 4)
    assert metrics["MRR@10"].mean == pytest.approx((1 + 1 / 3) / 4)
    assert metrics["HR@10"].se == pytest.approx(math.sqrt(1 / 3) / 2)  # std(ddof=1)/sqrt(n)


def test_single_user_hits() -> None:
    first = score_ranks([1], (10,))
    assert (first["HR@10"].mean, first["NDCG@10"].mean, first["MRR@10"].mean) == (1, 1, 1)
    assert first["HR@10"].se == 0.0
    third = score_ranks([3], (10,))
    assert third["NDCG@10"].mean == pytest.approx(1 / math.log2(4))
    assert third["MRR@10"].mean == pytest.approx(1 / 3)
    assert score_ranks([11], (10,))["HR@10"].mean == 0.0


def test_target_ranks() -> None:
    assert target_ranks([["a", "b", "c"], ["a"], []], ["c", "z", "a"]) == [3, None, None]


# --------------------------------------------------------------------------- split


def test_split_by_time_skips_short_users_and_drops_unknown_items(tmp_path: Path) -> None:
    items, events = tmp_path / "items.jsonl", tmp_path / "events.jsonl"
    write_items(items, _items(CATALOG))
    records = _events({"u": ["f01", "f02", "f03", "f04"], "short": ["p1", "p2"]})
    records.append(EventRecord("gone", "u", "not-in-catalog", "click", 5000.0))
    write_events(events, records)
    data = load_dataset(items, events)
    (user,) = data.users
    assert [e.item_id for e in user.history] == ["f01", "f02"]
    assert (user.target("validation"), user.target("test")) == ("f03", "f04")
    assert [e.item_id for e in user.context("test").events] == ["f01", "f02", "f03"]
    assert sorted(e.item_id for e in data.train.events) == ["f01", "f02", "p1", "p2"]
    assert data.stats["users_skipped_short"] == 1
    assert data.stats["events_unknown_item"] == 1
    assert data.stats["users_evaluated"] == 1


def test_a_dislike_is_never_a_target_and_later_ones_are_left_out(tmp_path: Path) -> None:
    items, events = tmp_path / "items.jsonl", tmp_path / "events.jsonl"
    write_items(items, _items(CATALOG))
    kinds = ["click", "dislike", "click", "click", "dislike", "click", "dislike"]
    records = [EventRecord(f"e{n}", "u", f"f0{n + 1}", kind, 1000.0 + n)
               for n, kind in enumerate(kinds)]  # fmt: skip
    records += [EventRecord("s0", "short", "p1", "click", 2000.0),
                EventRecord("s1", "short", "p2", "dislike", 2001.0),
                EventRecord("s2", "short", "p3", "click", 2002.0)]  # fmt: skip
    write_events(events, records)
    data = load_dataset(items, events)
    (user,) = data.users  # "short": two events that are not dislikes, none before them
    assert [(e.item_id, e.event_type) for e in user.history] == [
        ("f01", "click"), ("f02", "dislike"), ("f03", "click")]  # fmt: skip
    assert (user.target("validation"), user.target("test")) == ("f04", "f06")
    assert [e.item_id for e in user.context("test").events] == ["f01", "f02", "f03", "f04"]
    assert sorted(e.item_id for e in data.train.events) == ["f01", "f02", "f03", "p1", "p2", "p3"]
    model = PopularityModel()  # a dislike is no sign of popularity
    model.fit(data.train)
    assert "f02" not in model.rank(data.contexts("test"), 10, exclude_seen=False)[0][:5]


def test_max_users_limits_evaluation_not_training(tmp_path: Path) -> None:
    items, events = _write(tmp_path, POPULARITY_USERS)
    full, some = load_dataset(items, events), load_dataset(items, events, max_users=2)
    assert [u.user_id for u in some.users] == ["first", "third"]
    assert some.train == full.train


def test_no_splittable_user_is_an_error(tmp_path: Path) -> None:
    items, events = _write(tmp_path, {"a": ["p1", "p2"]})
    with pytest.raises(EvaluationError, match="3 events"):
        load_dataset(items, events)


# --------------------------------------------------------------------------- popularity


def test_popularity_hand_computed_and_ignores_test_events(tmp_path: Path) -> None:
    items, events = _write(tmp_path, POPULARITY_USERS)
    report = run_evaluation(items, events, tmp_path / "unused", out_dir=tmp_path / "out",
                            models=[PopularityModel()])  # fmt: skip
    # 6 users: "first" rank 1, "third" rank 3, four "leak" users whose test item "x" has no
    # training event. Counting test events would give "x" 4 > 3 and rank it first.
    for masked in (True, False):
        metrics = report.score("popularity", "test", masked=masked).metrics
        assert metrics["HR@20"].mean == pytest.approx(2 / 6)
        assert metrics["NDCG@10"].mean == pytest.approx((1 + 1 / math.log2(4)) / 6)
        assert metrics["MRR@10"].mean == pytest.approx((1 + 1 / 3) / 6)


def test_popularity_fit_sees_training_events_only(tmp_path: Path) -> None:
    data = load_dataset(*_write(tmp_path, POPULARITY_USERS))
    assert "x" not in {e.item_id for e in data.train.events}
    model = PopularityModel()
    model.fit(data.train)
    (ranked,) = model.rank([UserContext("new", ())], 30, exclude_seen=True)
    assert ranked[:4] == ["p1", "p2", "p3", "f01"]
    assert ranked[-1] == "x"


# --------------------------------------------------------------------------- short-term model


def _short_term(data: TrainData) -> ShortTermModel:
    params = UpdateParams(half_life_s=100.0, history_len=1024)
    model = ShortTermModel(OneHotEncoder(), params)  # type: ignore[arg-type]
    model.fit(data)
    return model


def test_short_term_masking_changes_results_on_reinteraction(tmp_path: Path) -> None:
    items, events = _write(tmp_path, {"re": ["f01", "f01", "f01"]})
    data = load_dataset(items, events)
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out",
                            models=[_short_term(data.train)])  # fmt: skip
    unmasked = report.score("short-term-decay", "test", masked=False).metrics
    masked = report.score("short-term-decay", "test", masked=True).metrics
    assert (unmasked["HR@10"].mean, unmasked["NDCG@10"].mean, unmasked["MRR@10"].mean) == (1, 1, 1)
    assert (masked["HR@10"].mean, masked["NDCG@10"].mean) == (0, 0)


def test_short_term_follows_the_decay_of_the_stream(tmp_path: Path) -> None:
    # Clicks 100 s (= one half-life) apart: at test time f01, f02, f03 weigh 1/4, 1/2, 1.
    items, events = _write(tmp_path, {"u": ["f01", "f02", "f03", "f01"]}, step=100.0)
    data = load_dataset(items, events)
    model = _short_term(data.train)
    context = data.users[0].context("test")
    assert model.rank([context], 3, exclude_seen=False) == [["f03", "f02", "f01"]]
    masked = model.rank([context], 20, exclude_seen=True)[0]
    assert len(masked) == 20 and not {"f01", "f02", "f03"} & set(masked)
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out", models=[model])
    test = report.score("short-term-decay", "test", masked=False).metrics
    assert test["NDCG@10"].mean == pytest.approx(1 / math.log2(4))
    assert report.score("short-term-decay", "test", masked=True).metrics["HR@20"].mean == 0


def test_a_model_that_recommends_seen_items_is_rejected(tmp_path: Path) -> None:
    class Cheater(PopularityModel):
        def rank(
            self, users: Sequence[UserContext], k: int, *, exclude_seen: bool
        ) -> list[list[str]]:
            return [[u.events[0].item_id] for u in users]

    items, events = _write(tmp_path, {"u": ["f01", "f02", "f03"]})
    with pytest.raises(EvaluationError, match="seen item"):
        run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out", models=[Cheater()])


# --------------------------------------------------------------------------- outputs and CLI


def test_outputs_and_missing_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    items, events = _write(tmp_path, POPULARITY_USERS)
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out",
                            models=[PopularityModel()], k_values=(5,))  # fmt: skip
    assert report.chart_path is None and report.chart_note == CHART_MISSING
    assert not (tmp_path / "out" / "evaluation.png").exists()
    saved = json.loads(report.json_path.read_text(encoding="utf-8"))
    assert saved["chart"] == CHART_MISSING
    assert saved["dataset"]["users_skipped_short"] == 3
    assert {"load", "models", "total"} <= set(saved["seconds"])
    assert len(saved["results"]) == 4  # 2 stages x masked/unmasked
    # no item vectors (no short-term model): every metric but intra-list diversity
    assert set(saved["results"][0]["metrics"]) == {
        "HR@5", "NDCG@5", "MRR@5", "coverage@5", "novelty@5", "new-items@5",
    }  # fmt: skip
    assert saved["results"][0]["metrics"]["coverage@5"]["se"] is None
    assert "| test | masked | popularity |" in report.markdown_path.read_text(encoding="utf-8")


def test_command_runs_both_models_on_the_tiny_encoder(
    tmp_path: Path, tiny_export: ExportReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEREST_STREAM_MODEL_DIR", str(tiny_export.out_dir))
    monkeypatch.setenv("INTEREST_STREAM_PROVIDER", "cpu")
    monkeypatch.setenv("INTEREST_STREAM_HOME", str(tmp_path / "home"))  # no sequence model there
    items, events = _write(tmp_path, POPULARITY_USERS)
    out = tmp_path / "eval"
    args = ["--items", str(items), "--events", str(events), "--out", str(out)]
    result = CliRunner().invoke(evaluate_command, [*args, "--max-users", "3", "--no-mmr"])
    assert result.exit_code == 0, result.output
    assert "| test | masked | short-term-decay |" in result.output
    assert "| validation | unmasked | popularity |" in result.output
    saved = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["dataset"]["users_evaluated"] == 3
    assert set(saved["seconds"]["models"]) == {"popularity", "short-term-decay"}
    assert "ILD@10" in saved["results"][2]["metrics"]  # the text index's vectors
    result = CliRunner().invoke(evaluate_command, [*args, "--mmr", "0.5", "--mmr", "1"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert set(saved["seconds"]["models"]) == {"popularity", "short-term-decay",
        "short-term-decay+mmr-0.5", "short-term-decay+mmr-1"}  # fmt: skip
    assert saved["selections"]["mmr"]["lambda"] in (0.5, 1.0)
    assert "MMR lambda chosen on validation" in result.output


def test_command_wants_both_files_or_neither(tmp_path: Path) -> None:
    result = CliRunner().invoke(evaluate_command, ["--items", str(tmp_path / "items.jsonl")])
    assert result.exit_code == 2
    assert "both --items and --events" in result.output
