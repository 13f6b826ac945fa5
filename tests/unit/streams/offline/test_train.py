"""Tests of ``interest-stream train`` and of the Transformer in ``interest-stream evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from encoders import ExportReport
from encoders.runtime.sequence import CARD_FILE, ITEMS_FILE, SEQUENCE_FILE, SequenceModel
from streams.contract import EventRecord, ItemRecord
from streams.data.formats import write_events, write_items
from streams.errors import EvaluationError
from streams.offline.evaluate import (
    PopularityModel,
    TransformerModel,
    evaluate_command,
    load_dataset,
    run_evaluation,
)
from streams.offline.rankers import events_fingerprint
from streams.offline.train import train_command

TINY_ARGS = ["--epochs", "2", "--eval-every", "1", "--max-len", "8", "--dim", "16",
             "--heads", "2", "--layers", "1", "--batch-size", "16", "--seed", "1"]  # fmt: skip


def _files(folder: Path, *, shift: int = 0) -> tuple[Path, Path]:
    """25 items, 12 users walking through them; ``shift`` changes the events, not the format."""
    items = [ItemRecord(f"m{n}", f"movie {n}", f"movie {n} genre {n % 4}") for n in range(25)]
    events: list[EventRecord] = []
    for user in range(12):
        for step in range(5 + user % 4):
            item = f"m{(user + step + shift) % 24}"  # m24 is never interacted with
            ts = 1000.0 + 100.0 * len(events)
            events.append(EventRecord(f"e{len(events)}", f"u{user}", item, "click", ts))
    events.sort(key=lambda e: e.ts)
    folder.mkdir(parents=True, exist_ok=True)
    write_items(folder / "items.jsonl", items)
    write_events(folder / "events.jsonl", events)
    return folder / "items.jsonl", folder / "events.jsonl"


@pytest.fixture()
def tiny_env(tmp_path: Path, tiny_export: ExportReport, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("INTEREST_STREAM_MODEL_DIR", str(tiny_export.out_dir))
    monkeypatch.setenv("INTEREST_STREAM_PROVIDER", "cpu")
    monkeypatch.setenv("INTEREST_STREAM_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture()
def trained_dir(tiny_env: Path) -> Path:
    items, events = _files(tiny_env / "data")
    out = tiny_env / "model"
    args = ["--items", str(items), "--events", str(events), "--out", str(out), *TINY_ARGS]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 0, result.output
    assert "best validation NDCG@10" in result.output
    return out


def test_train_writes_a_validated_model_with_its_card(trained_dir: Path, tiny_env: Path) -> None:
    for name in (SEQUENCE_FILE, ITEMS_FILE, CARD_FILE):
        assert (trained_dir / name).is_file()
    card = json.loads((trained_dir / CARD_FILE).read_text(encoding="utf-8"))
    dataset = load_dataset(tiny_env / "data" / "items.jsonl", tiny_env / "data" / "events.jsonl")
    assert card["data"]["train_fingerprint"] == events_fingerprint(dataset.train.events)
    assert card["data"]["users_evaluated"] == 12
    assert card["parameters"]["seed"] == 1 and card["parameters"]["max_len"] == 8
    assert 0.0 <= card["metrics"]["validation_masked_ndcg10"] <= 1.0
    assert card["export"]["max_abs_diff"] <= card["export"]["atol"]
    assert "leave-one-out" in card["split"]


def test_train_rejects_heads_that_do_not_divide_dim(tiny_env: Path) -> None:
    items, events = _files(tiny_env / "data")
    args = ["--items", str(items), "--events", str(events), "--dim", "16", "--heads", "3"]
    result = CliRunner().invoke(train_command, args)
    assert result.exit_code == 2
    assert "not divisible" in result.output


def test_evaluate_runs_the_transformer_through_onnx(trained_dir: Path, tiny_env: Path) -> None:
    items, events = tiny_env / "data" / "items.jsonl", tiny_env / "data" / "events.jsonl"
    out = tiny_env / "eval"
    args = ["--items", str(items), "--events", str(events), "--out", str(out)]
    args += ["--sequence-model", str(trained_dir), "--blend", "0.5", "--no-mmr"]
    result = CliRunner().invoke(evaluate_command, args)
    assert result.exit_code == 0, result.output
    assert "| test | masked | transformer |" in result.output
    saved = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    names = {"popularity", "short-term-decay", "transformer", "blend-0.5"}
    assert set(saved["seconds"]["models"]) == names


def test_the_transformer_never_recommends_seen_items_and_ranks_cold_ones(
    trained_dir: Path, tiny_env: Path
) -> None:
    items, events = tiny_env / "data" / "items.jsonl", tiny_env / "data" / "events.jsonl"
    model = TransformerModel(SequenceModel.load(trained_dir, provider="cpu"))
    dataset = load_dataset(items, events)
    model.fit(dataset.train)
    users = [user.context("test") for user in dataset.users]
    for user, ranked in zip(users, model.rank(users, 25, exclude_seen=True), strict=True):
        assert user.seen().isdisjoint(ranked)
        assert len(ranked) == 25 - len(user.seen())
        assert "m24" in ranked  # never interacted with: scored through its text vector
    report = run_evaluation(items, events, tiny_env, out_dir=tiny_env / "e",
                            models=[PopularityModel(), model])  # fmt: skip
    assert report.score("transformer", "test", masked=True).n_users == 12


def test_a_model_trained_on_other_events_is_refused(trained_dir: Path, tiny_env: Path) -> None:
    items, events = _files(tiny_env / "other", shift=3)
    model = TransformerModel(SequenceModel.load(trained_dir, provider="cpu"))
    with pytest.raises(EvaluationError, match="trained on other events"):
        model.fit(load_dataset(items, events).train)
