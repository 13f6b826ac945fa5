"""The served model's versions: atomic link swaps a watching worker follows, keep K, rollback,
adoption of a plain folder, the decisions log and the dashboard's table of it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from encoders import TextEncoder
from encoders.runtime.sequence import CARD_FILE
from interest_state import UpdateParams
from streams.contract import ItemRecord
from streams.errors import ModelRejected
from streams.offline.versions import ModelStore, append_decision, model_group
from streams.worker.dashboard import decision_rows, decisions_log, render_dashboard
from streams.worker.long_term import card_fingerprint
from streams.worker.model_watch import ModelWatcher
from streams.worker.pipeline import Pipeline
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES

HOSTILE = '<img src=x onerror="alert(1)">'


def _version(source: Path, store: ModelStore, version: str) -> Path:
    """A staged copy of ``source`` that calls itself ``version``."""
    staged = store.staging()
    shutil.copytree(source, staged, dirs_exist_ok=True)
    card = json.loads((staged / CARD_FILE).read_text(encoding="utf-8"))
    card["version"] = version
    (staged / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    return staged


def _watcher(live: Path, encoder: TextEncoder) -> ModelWatcher:
    pipeline = Pipeline(encoder, UpdateParams(history_len=8), top_k=5)
    pipeline.add_items([ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], ()) for i in SEQ_ITEMS])
    return ModelWatcher(live, pipeline, provider="cpu")


def _served(watcher: ModelWatcher) -> str | None:
    watcher.poll()
    version: str | None = watcher.metrics()["sequence_model_version"]
    return version


def test_a_watching_worker_follows_promotions_and_rollbacks_without_a_restart(
    tiny_sequence_dir: Path, tiny_encoder: TextEncoder, tmp_path: Path
) -> None:
    live = tmp_path / "models" / "sequence"
    store = ModelStore(live, keep=3)
    watcher = _watcher(live, tiny_encoder)
    assert _served(watcher) is None and store.serving() is None

    assert store.promote(_version(tiny_sequence_dir, store, "seq-a"), how="trainer") == "seq-a"
    assert live.is_symlink() and os.readlink(live) == "sequence.versions/seq-a"  # relative
    assert _served(watcher) == "seq-a"
    store.promote(_version(tiny_sequence_dir, store, "seq-b"), how="trainer")
    assert _served(watcher) == "seq-b" and watcher.reloads == 1

    assert store.rollback() == ("seq-b", "seq-a")
    assert _served(watcher) == "seq-a" and watcher.reloads == 2
    assert [e.version for e in store.history()] == ["seq-a"]
    assert store.kept() == ["seq-a", "seq-b"]  # b stays until the next promotion

    store.promote(_version(tiny_sequence_dir, store, "seq-c"), how="trainer")
    assert _served(watcher) == "seq-c"
    assert [e.version for e in store.history()] == ["seq-a", "seq-c"]
    assert store.kept() == ["seq-a", "seq-c"]  # the rolled-back b is gone
    assert not [p for p in store.root.iterdir() if p.name.startswith(".staging")]


def test_the_last_k_versions_are_kept_and_rollback_stops_at_the_oldest(
    tiny_sequence_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "sequence", keep=2)
    for name in ("seq-1", "seq-2", "seq-3"):
        store.promote(_version(tiny_sequence_dir, store, name), how="trainer")
    assert store.kept() == ["seq-2", "seq-3"] and store.serving() == "seq-3"
    assert store.rollback() == ("seq-3", "seq-2")
    with pytest.raises(ModelRejected, match="oldest version kept"):
        store.rollback()
    assert store.serving() == "seq-2"


def test_a_plain_model_folder_is_adopted_as_the_first_version(
    tiny_sequence_dir: Path, tmp_path: Path
) -> None:
    live = tmp_path / "sequence"
    shutil.copytree(tiny_sequence_dir, live)  # what `interest-stream train --out` leaves
    old = json.loads((live / CARD_FILE).read_text(encoding="utf-8"))["version"]
    before = card_fingerprint(live)
    store = ModelStore(live, keep=3)
    store.promote(_version(tiny_sequence_dir, store, "seq-new"), how="trainer")
    history = [(e.version, e.how) for e in store.history()]
    assert history == [(old, "adopted"), ("seq-new", "trainer")]
    assert store.rollback() == ("seq-new", old)
    assert live.is_symlink() and card_fingerprint(live) == before  # the same card file, moved


def test_a_promotion_decided_against_another_serving_model_changes_nothing(
    tiny_sequence_dir: Path, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "sequence", keep=3)
    store.promote(_version(tiny_sequence_dir, store, "seq-a"), how="trainer")
    staged = _version(tiny_sequence_dir, store, "seq-b")
    with pytest.raises(ModelRejected, match="changed to seq-a"):
        store.promote(staged, how="trainer", expect=None)  # decided when nothing was served
    assert store.serving() == "seq-a" and store.kept() == ["seq-a"]


def test_model_list_and_rollback_commands_log_the_rollback(
    tiny_sequence_dir: Path, tmp_path: Path
) -> None:
    live = tmp_path / "sequence"
    store = ModelStore(live, keep=3)
    for name in ("seq-a", "seq-b"):
        store.promote(_version(tiny_sequence_dir, store, name), how="trainer")
    runner = CliRunner()
    listed = runner.invoke(model_group, ["--models", str(live), "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0].startswith("* seq-b ")
    assert listed.output.splitlines()[1].startswith("  seq-a ")
    rolled = runner.invoke(model_group, ["--models", str(live), "rollback"])
    assert rolled.exit_code == 0 and "from seq-b to seq-a" in rolled.output
    again = runner.invoke(model_group, ["--models", str(live), "rollback"])
    assert again.exit_code == 1 and "nothing to roll back to" in again.output
    last = json.loads(decisions_log(live).read_text(encoding="utf-8").splitlines()[-1])
    assert (last["action"], last["from"], last["to"]) == ("rollback", "seq-b", "seq-a")


def test_the_dashboard_shows_the_last_decisions_and_survives_a_bad_log(tmp_path: Path) -> None:
    live = tmp_path / "sequence"
    assert decision_rows(str(live))[0][0] == "none yet"  # no log at all
    assert decision_rows(None) == [("no sequence model folder", "")]
    log = decisions_log(live)
    for n in range(7):
        append_decision(log, {"time": 1.7e9 + n, "action": "keep", "promoted": False,
                              "candidate": f"seq-{n}", "serving": "seq-s", "metric": "NDCG@10",
                              "candidate_score": 0.1, "serving_score": 0.2,
                              "reason": "NDCG@10 -50.0%: not better"})  # fmt: skip
    with open(log, "a", encoding="utf-8") as fh:
        fh.write('{"time": "soon"}\n[1, 2]\nnot json\n' + "[" * 5000 + "\n")
    append_decision(log, {"time": 1.8e9, "action": "rollback", "from": "seq-b", "to": HOSTILE})
    rows = decision_rows(str(live))
    assert rows[0] == ("2027-01-15 08:00:00 UTC", f"rollback: seq-b -> {HOSTILE}")
    assert [what.split(":")[0] for _, what in rows[1:5]] == [f"keep seq-{n}" for n in (6, 5, 4, 3)]
    assert rows[1][1].endswith("(NDCG@10 -50.0%: not better)")
    assert rows[-1] == ("malformed lines skipped", "4") and len(rows) == 6  # 5 shown
    page = render_dashboard({"sequence_model_dir": str(live)})
    assert "Model decisions" in page and "keep seq-6: NDCG@10 0.1000 vs seq-s 0.2000" in page
    assert "<img" not in page and "&lt;img" in page
    log.write_bytes(b"\xff\xfe garbage")
    assert decision_rows(str(live)) == [("malformed lines skipped", "1")]
    log.unlink()
    log.mkdir()  # not even a file
    assert decision_rows(str(live))[0][0] == "none yet"
