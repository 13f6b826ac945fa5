"""Offline = online: the evaluator's Transformer and blends rank exactly as the pipeline does;
peers' stored rankings join the same table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from encoders import ExportReport, TextEncoder
from encoders.runtime.sequence import SequenceModel
from interest_state import Event, EventType, UpdateParams
from streams.contract import EventRecord, ItemRecord
from streams.data.formats import write_events, write_items
from streams.errors import EvaluationError
from streams.offline.diverse import MMR_GRID
from streams.offline.evaluate import (
    BlendModel,
    Dataset,
    PeerModel,
    ShortTermModel,
    TrainData,
    TransformerModel,
    evaluate_command,
    load_dataset,
    run_evaluation,
)
from streams.offline.rankers import events_fingerprint
from streams.worker.pipeline import Pipeline
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES

RING = 8
KINDS = ("click", "browse", "comment")


def _files(folder: Path) -> tuple[Path, Path]:
    """20 items; 6 users; two of them with more events than the ring holds."""
    items = [ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i]) for i in SEQ_ITEMS]
    events: list[EventRecord] = []
    for user in range(6):
        for step in range(5 + 3 * user):
            n = len(events)
            item = SEQ_ITEMS[(3 * user + 2 * step) % 19]  # s19 is never interacted with
            kind = KINDS[step % 3]
            text = "loved it" if kind == "comment" else None
            events.append(EventRecord(f"e{n}", f"u{user}", item, kind, 1000.0 + 50.0 * n,
                                      text=text))  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_items(folder / "items.jsonl", items)
    write_events(folder / "events.jsonl", events)
    return folder / "items.jsonl", folder / "events.jsonl"


@pytest.fixture()
def dataset(tmp_path: Path) -> Dataset:
    return load_dataset(*_files(tmp_path / "data"))


def _online(
    encoder: TextEncoder, model: SequenceModel, data: TrainData, weight: float, users: list
) -> list[list[str]]:  # type: ignore[type-arg]
    """Each user's context through a fresh pipeline, catalog fed in file order."""
    p = Pipeline(encoder, UpdateParams(history_len=RING), top_k=20, blend_weight=weight,
                 sequence=model)  # fmt: skip
    p.add_items([ItemRecord(i.item_id, i.title, i.text, ()) for i in data.items])
    ranked = []
    for user in users:
        events = [
            Event(
                e.event_id, e.user_id, e.item_id, EventType[e.event_type.upper()], e.ts, text=e.text
            )  # fmt: skip
            for e in user.events
        ]
        recs = p.process(events, {}).users[user.user_id].recommendations
        ranked.append([r.item_id for r in recs if r.item_id not in user.seen()][:5])
    return ranked


@pytest.mark.parametrize("weight", [1.0, 0.6, 0.0])
def test_offline_ranks_exactly_as_the_pipeline_serves(
    dataset: Dataset, tiny_encoder: TextEncoder, tiny_sequence_dir: Path, weight: float
) -> None:
    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    params = UpdateParams(history_len=RING)
    offline = TransformerModel(model, tiny_encoder, weight=weight, params=params)
    offline.fit(dataset.train)
    users = [u.context(stage) for u in dataset.users for stage in ("validation", "test")]
    assert max(len(u.events) for u in users) > RING  # some contexts are beyond the ring
    got = offline.rank(users, 5, exclude_seen=True)
    assert got == _online(tiny_encoder, model, dataset.train, weight, users)
    for user, ranked in zip(users, got, strict=True):
        assert len(ranked) == min(5, len(SEQ_ITEMS) - len(user.seen()))
        assert not user.seen() & set(ranked)


def test_blends_share_the_short_term_index_and_run_in_the_evaluation(
    dataset: Dataset, tiny_encoder: TextEncoder, tiny_sequence_dir: Path, tmp_path: Path
) -> None:
    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    short = ShortTermModel(tiny_encoder)
    long = TransformerModel(model, tiny_encoder, params=UpdateParams(history_len=RING),
                            index=short.index)  # fmt: skip
    blend = BlendModel(long, short, 0.5)
    assert blend.short is long.short and blend.params.history_len == RING
    with pytest.raises(EvaluationError, match="blend weight"):
        BlendModel(long, short, 1.5)
    items, events = tmp_path / "data" / "items.jsonl", tmp_path / "data" / "events.jsonl"
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out",
                            models=[short, long, blend])  # fmt: skip
    assert report.score("blend-0.5", "test", masked=True).n_users == 6


# --------------------------------------------------------------------------- peers


def _peer_file(path: Path, dataset: Dataset, *, fingerprint: str | None = None) -> Path:
    ranked = {
        stage: {
            u.user_id: ["s19", *(i for i in SEQ_ITEMS if i != u.target(stage))][:8]
            for u in dataset.users
        }  # fmt: skip
        for stage in ("validation", "test")
    }
    ranked["test"]["u0"] = [dataset.users[0].target("test"), "s19"]  # a hit at rank 1
    body = {
        "model": "sasrec-recbole",
        "split_fingerprint": fingerprint or events_fingerprint(dataset.train.events),
        "ranked": ranked,
    }
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def test_a_peer_is_scored_from_its_stored_rankings(dataset: Dataset, tmp_path: Path) -> None:
    peer = PeerModel.load(_peer_file(tmp_path / "peer.json", dataset))
    items, events = tmp_path / "data" / "items.jsonl", tmp_path / "data" / "events.jsonl"
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out", models=[peer])
    test = report.score("sasrec-recbole", "test", masked=True).metrics
    assert test["HR@10"].mean == pytest.approx(1 / 6)
    assert test["MRR@10"].mean == pytest.approx(1 / 6)
    validation = report.score("sasrec-recbole", "validation", masked=False).metrics
    assert validation["HR@20"].mean == 0.0
    user = dataset.users[1].context("test")
    [masked] = peer.rank([user], 3, exclude_seen=True)
    assert len(masked) == 3 and not user.seen() & set(masked)


def test_a_peer_from_another_split_or_file_format_is_refused(
    dataset: Dataset, tmp_path: Path
) -> None:
    other = PeerModel.load(_peer_file(tmp_path / "other.json", dataset, fingerprint="ab" * 32))
    with pytest.raises(EvaluationError, match="another split"):
        other.fit(dataset.train)
    (tmp_path / "bad.json").write_text('{"model": "x"}', encoding="utf-8")
    with pytest.raises(EvaluationError, match="not a peer ranking"):
        PeerModel.load(tmp_path / "bad.json")
    peer = PeerModel.load(_peer_file(tmp_path / "peer.json", dataset))
    peer.ranked["test"].pop("u2")
    with pytest.raises(EvaluationError, match="no test ranking for user 'u2'"):
        peer.rank([u.context("test") for u in dataset.users], 5, exclude_seen=True)


def test_the_command_defaults_to_the_home_model_and_the_served_blend(
    dataset: Dataset,
    tmp_path: Path,
    tiny_export: ExportReport,
    tiny_sequence_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "sequence").symlink_to(tiny_sequence_dir)
    monkeypatch.setenv("INTEREST_STREAM_MODEL_DIR", str(tiny_export.out_dir))
    monkeypatch.setenv("INTEREST_STREAM_PROVIDER", "cpu")
    monkeypatch.setenv("INTEREST_STREAM_HOME", str(home))
    monkeypatch.setenv("INTEREST_STREAM_BLEND_WEIGHT", "0.75")
    items, events = tmp_path / "data" / "items.jsonl", tmp_path / "data" / "events.jsonl"
    peer = _peer_file(tmp_path / "peer.json", dataset)
    args = ["--items", str(items), "--events", str(events), "--out", str(tmp_path / "eval")]
    result = CliRunner().invoke(evaluate_command, [*args, "--peer", str(peer)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    mmr_rows = {f"blend-0.75+mmr-{lam:g}" for lam in MMR_GRID}  # the served blend + MMR
    assert set(saved["seconds"]["models"]) == {
        "popularity", "short-term-decay", "transformer", "blend-0.75", "sasrec-recbole",
        *mmr_rows,
    }  # fmt: skip
    assert "| test | masked | sasrec-recbole |" in result.output
    assert saved["selections"]["mmr"]["base"] == "blend-0.75"
    assert saved["selections"]["mmr"]["lambda"] in (*MMR_GRID, 1.0)
    # an explicit --blend without the served weight: the served blend is added for MMR
    result = CliRunner().invoke(evaluate_command, [*args, "--blend", "1", "--mmr", "0.5"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    assert {"blend-1", "blend-0.75", "blend-0.75+mmr-0.5"} <= set(saved["seconds"]["models"])


def test_a_peer_s_unmasked_rankings_are_used_when_it_stored_them(
    dataset: Dataset, tmp_path: Path
) -> None:
    path = _peer_file(tmp_path / "peer.json", dataset)
    body = json.loads(path.read_text(encoding="utf-8"))
    body["ranked_unmasked"] = {
        stage: {u.user_id: [u.target(stage)] for u in dataset.users}
        for stage in ("validation", "test")
    }
    path.write_text(json.dumps(body), encoding="utf-8")
    peer = PeerModel.load(path)
    items, events = tmp_path / "data" / "items.jsonl", tmp_path / "data" / "events.jsonl"
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out", models=[peer])
    assert report.score("sasrec-recbole", "validation", masked=False).metrics["HR@10"].mean == 1
    assert report.score("sasrec-recbole", "validation", masked=True).metrics["HR@10"].mean == 0
