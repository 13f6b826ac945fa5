"""The trainer's round on files: a worse candidate stays out, a better one is promoted (and a
watching worker switches to it), rollback; the decision rule, the schedule, ``--since``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from encoders import ExportReport, TextEncoder
from encoders.build.sequence_data import TrainConfig
from interest_state import UpdateParams
from streams.contract import EventRecord, ItemRecord
from streams.data.formats import write_events, write_items
from streams.offline.compare import decide
from streams.offline.evaluate import load_dataset
from streams.offline.from_kafka import parse_since
from streams.offline.train import train_command, train_dataset
from streams.offline.trainer import Plan, TrainerState, due, new_events, run_round
from streams.offline.versions import ModelStore
from streams.settings import Settings
from streams.worker.dashboard import decisions_log
from streams.worker.model_watch import ModelWatcher
from streams.worker.pipeline import Pipeline

N_ITEMS = 60
GOOD = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.0, lr=1e-2, batch_size=32,
                   epochs=30, eval_every=5, patience=3, seed=0)  # fmt: skip
"""Learns the walks' next item (test NDCG@10 ~0.8 here)."""
BAD = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.0, lr=1e-6, batch_size=32,
                  epochs=1, eval_every=1, seed=1)  # fmt: skip
"""Barely moves from its random start (test NDCG@10 ~0.1)."""


def _walks(folder: Path) -> tuple[Path, Path]:
    """40 users, each walking 8 steps through 60 items (m0 -> m1 -> ...) from their own start:
    the next item is learnable, and the text of an item says nothing about it."""
    items = [ItemRecord(f"m{n}", f"movie {n}", f"movie {n} genre {n % 4}") for n in range(N_ITEMS)]
    events = [
        EventRecord(
            f"e{u}-{step}", f"u{u}", f"m{(7 * u + step) % N_ITEMS}", "click", 1e3 + 1e2 * step + u
        )
        for u in range(40)
        for step in range(8)
    ]
    events.sort(key=lambda e: e.ts)
    folder.mkdir(parents=True, exist_ok=True)
    write_items(folder / "items.jsonl", items)
    write_events(folder / "events.jsonl", events)
    return folder / "items.jsonl", folder / "events.jsonl"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Training on one thread: on a shared 2-core machine two threads wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def setup(tmp_path: Path, tiny_export: ExportReport) -> tuple[Settings, Path, Path, Path]:
    settings = Settings(home=tmp_path / "home", model_dir=tiny_export.out_dir, provider="cpu")
    items, events = _walks(tmp_path / "data")
    return settings, items, events, tmp_path / "home" / "models" / "sequence"


def _decisions(live: Path) -> list[dict[str, Any]]:
    lines = decisions_log(live).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_a_worse_candidate_stays_out_a_better_one_is_served_and_rollback_restores(
    setup: tuple[Settings, Path, Path, Path], tiny_encoder: TextEncoder
) -> None:
    settings, items, events, live = setup
    store = ModelStore(live, keep=3)
    staged = store.staging()  # a weak model in service (as `train --out` would put it)
    weak = train_dataset(load_dataset(items, events), tiny_encoder, staged, BAD)["version"]
    store.promote(staged, how="train")
    pipeline = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=5)
    pipeline.add_items([ItemRecord(f"m{n}", f"movie {n}", f"movie {n}") for n in range(N_ITEMS)])
    worker = ModelWatcher(live, pipeline, provider="cpu")
    assert worker.poll() and pipeline.sequence is not None and pipeline.sequence.version == weak

    better = run_round(settings, Plan(live, GOOD, margin=0.05, keep=3), tiny_encoder,
                       items, events)  # fmt: skip
    assert better["promoted"] is True and better["serving"] == weak
    assert better["candidate_score"] >= 1.05 * better["serving_score"]
    assert store.serving() == better["candidate"]
    assert worker.poll() and pipeline.sequence.version == better["candidate"]  # no restart

    worse = run_round(settings, Plan(live, BAD, margin=0.05, keep=3), tiny_encoder, items, events)
    assert worse["promoted"] is False and worse["serving"] == better["candidate"]
    assert worse["candidate_score"] < worse["serving_score"]
    assert "not better" in str(worse["reason"])
    assert store.serving() == better["candidate"] and not worker.poll()
    assert sorted(store.kept()) == sorted({weak, str(better["candidate"])})
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".staging")] == []

    logged = _decisions(live)
    assert [d["action"] for d in logged] == ["promote", "keep"]
    assert logged[0]["candidate_figures"]["NDCG@10"] == better["candidate_score"]
    assert logged[1]["users"] == 40 and logged[1]["margin"] == 0.05

    assert store.rollback() == (better["candidate"], weak)
    assert worker.poll() and pipeline.sequence.version == weak


def test_with_no_model_served_the_candidate_must_beat_the_short_term_vector(
    setup: tuple[Settings, Path, Path, Path], tiny_encoder: TextEncoder
) -> None:
    settings, items, events, live = setup
    record = run_round(settings, Plan(live, GOOD), tiny_encoder, items, events,
                       source={"source": "kafka", "rejected": 2})  # fmt: skip
    assert record["serving"] is None and record["promoted"] is True
    assert record["data"]["rejected"] == 2
    assert ModelStore(live).serving() == record["candidate"]
    again = run_round(settings, Plan(live, GOOD), tiny_encoder, items, events)
    assert again["candidate"] == record["candidate"]  # same data, same seed: the same model
    assert again["promoted"] is False and "not better" in str(again["reason"])


def test_train_into_a_versioned_folder_adds_a_version_never_writes_into_one(
    setup: tuple[Settings, Path, Path, Path], tiny_export: ExportReport, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    settings, items, events, live = setup
    first = run_round(settings, Plan(live, GOOD), TextEncoder.load(tiny_export.out_dir,
                      provider="cpu"), items, events)["candidate"]  # fmt: skip
    kept = (live.parent / "sequence.versions" / str(first) / "sequence.onnx").read_bytes()
    monkeypatch.setenv("INTEREST_STREAM_MODEL_DIR", str(tiny_export.out_dir))
    monkeypatch.setenv("INTEREST_STREAM_PROVIDER", "cpu")
    tiny = "--epochs 1 --max-len 8 --dim 16 --heads 2 --layers 1 --seed 5".split()
    args = ["--items", str(items), "--events", str(events), "--out", str(live), *tiny]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert f"(was {first})" in result.output
    store = ModelStore(live)
    assert store.serving() != first and len(store.history()) == 2
    assert (live.parent / "sequence.versions" / str(first) / "sequence.onnx").read_bytes() == kept
    assert _decisions(live)[-1]["action"] == "manual"


@pytest.mark.parametrize(
    ("candidate", "serving", "margin", "promoted", "says"),
    [
        (0.110, 0.100, 0.05, True, "+10.0%, at least the margin 5.0%"),
        (0.104, 0.100, 0.05, False, "short of the margin 5.0%"),
        (0.100, 0.100, 0.00, False, "not better"),
        (0.090, 0.100, -0.5, False, "not better"),  # a negative margin never takes a worse one
        (0.010, 0.000, 0.01, True, "+0.0100 from 0"),
    ],
)
def test_the_decision_rule(
    candidate: float, serving: float, margin: float, promoted: bool, says: str
) -> None:
    verdict = decide(candidate, serving, margin)
    assert verdict.promote is promoted and says in verdict.reason


def test_the_schedule_counts_new_events_and_hours() -> None:
    state = TrainerState(trained_at=1000.0, ends={"c/0": 10, "c/1": 5})
    assert new_events(state, {"c/0": 14, "c/1": 5, "b/0": 3}) == 7  # a new partition: all
    assert new_events(state, {"c/0": 2, "c/1": 5}) == 2  # a topic made again: from 0
    assert due(None, 0.0, None, 100, None) == "no round recorded yet"
    assert due(state, 1000.0 + 7200.0, 0, None, 2.0) == "2.00 h since the last round"
    assert due(state, 1001.0, 99, 100, 2.0) is None
    assert due(state, 1001.0, 100, 100, None) == "100 new events since the last round"


def test_since_is_a_duration_or_a_time() -> None:
    assert parse_since("30d").at(1e9) == 1e9 - 30 * 86_400
    assert parse_since("90m").at(6000.0) == 600.0
    assert parse_since("1700000000").at(0.0) == 1.7e9
    assert parse_since("2023-11-14T22:13:20Z").at(0.0) == 1.7e9
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("yesterday")
