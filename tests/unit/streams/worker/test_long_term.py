"""The sequence model in the stream: checked loading, broken folders, hot swap, aligned items."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from encoders import InferenceError, TextEncoder
from encoders.runtime.sequence import (
    CARD_FILE,
    ITEMS_FILE,
    SEQUENCE_FILE,
    TEXT_PROJ_FILE,
    SequenceEvent,
)
from interest_state import Event, EventType, InterestState, UpdateParams
from streams.contract import ItemRecord
from streams.errors import ModelRejected
from streams.worker.long_term import (
    card_fingerprint,
    load_checked,
    publish_model,
    ring_history,
)
from streams.worker.model_watch import ModelWatcher
from streams.worker.pipeline import Pipeline
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES


def seq_pipeline(encoder: TextEncoder, items: list[str] = SEQ_ITEMS[:19]) -> Pipeline:
    p = Pipeline(encoder, UpdateParams(history_len=8), top_k=5)
    p.add_items([ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], ()) for i in items])
    return p


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _set_version(folder: Path, version: str) -> None:
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    card["version"] = version
    (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")


def _click(event_id: str, user: str, item: str, ts: float) -> Event:
    return Event(event_id, user, item, EventType.CLICK, ts)


# --------------------------------------------------------------------------- load and check


def test_a_good_model_loads_with_real_probe_histories(tiny_sequence_dir: Path) -> None:
    probes = [(SequenceEvent("s1", "click", 1.0), SequenceEvent("s3", "comment", 99.0))]
    model = load_checked(tiny_sequence_dir, text_dim=32, probes=probes, provider="cpu")
    assert model.version.startswith("seq-") and len(model.item_ids) == 18


def _resealed(breakage):  # type: ignore[no-untyped-def]
    """A bad model published whole: the card's file digests name the broken files (a
    training run that diverged to NaN, say), so the content checks must catch it."""

    def apply(folder: Path) -> None:
        breakage(folder)
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
        card["sha256_files"] = {
            name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in card.get("sha256_files", {})
            if (folder / name).is_file()
        }
        (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")

    return apply


def _truncate_graph(folder: Path) -> None:
    data = (folder / SEQUENCE_FILE).read_bytes()
    (folder / SEQUENCE_FILE).write_bytes(data[: len(data) // 3])


def _nan_items(folder: Path) -> None:
    items = np.load(folder / ITEMS_FILE)
    items[3, 1] = np.nan
    np.save(folder / ITEMS_FILE, items)


def _short_items(folder: Path) -> None:
    np.save(folder / ITEMS_FILE, np.load(folder / ITEMS_FILE)[:-2])


def _nan_projection(folder: Path) -> None:
    with np.load(folder / TEXT_PROJ_FILE) as npz:
        weight, bias = npz["weight"], npz["bias"].copy()
    bias[0] = np.inf
    np.savez(folder / TEXT_PROJ_FILE, weight=weight, bias=bias)


def _other_graph(folder: Path) -> None:
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    card["sha256"] = "0" * 64
    (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")


def _stale_items(folder: Path) -> None:
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    card["sha256_files"] = {ITEMS_FILE: "1" * 64}  # the card was written for other items
    (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")


def _empty_catalog(folder: Path) -> None:
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    card["item_ids"] = []
    (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    np.save(folder / ITEMS_FILE, np.zeros((0, 16), np.float32))


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        (_truncate_graph, "does not load"),
        (_resealed(_nan_items), "NaN"),
        (_nan_items, "items.npy is not the file the card names"),
        (_resealed(_short_items), "does not load"),
        (lambda f: (f / ITEMS_FILE).unlink(), "does not load"),
        (lambda f: (f / SEQUENCE_FILE).unlink(), "does not load"),
        (lambda f: (f / CARD_FILE).write_text("{not json"), "does not load"),
        (_resealed(_nan_projection), "NaN or infinite item vectors"),
        (_other_graph, "sequence.onnx is not the file the card names"),
        (_stale_items, "items.npy is not the file the card names"),
        (_resealed(_empty_catalog), "no items"),
    ],
    ids=[
        "truncated-onnx",
        "nan-items",
        "changed-items",
        "short-items",
        "no-items-file",
        "no-graph",
        "bad-card",
        "nan-projection",
        "mixed-up",
        "stale-items",
        "empty",
    ],  # fmt: skip
)
def test_a_broken_model_is_rejected_with_its_reason(
    tiny_sequence_dir: Path,
    tmp_path: Path,
    breakage,
    words: str,  # type: ignore[no-untyped-def]
) -> None:
    folder = _copy(tiny_sequence_dir, tmp_path / "broken")
    breakage(folder)
    with pytest.raises(ModelRejected, match=words):
        load_checked(folder, text_dim=32, provider="cpu")


def test_a_model_for_another_text_encoder_is_rejected(tiny_sequence_dir: Path) -> None:
    with pytest.raises(ModelRejected, match="text projection does not fit"):
        load_checked(tiny_sequence_dir, text_dim=384, provider="cpu")


def test_a_model_without_text_projection_serves_known_items_only(
    tiny_sequence_dir: Path, tmp_path: Path, tiny_encoder: TextEncoder
) -> None:
    folder = _copy(tiny_sequence_dir, tmp_path / "noproj")
    (folder / TEXT_PROJ_FILE).unlink()
    with pytest.raises(ModelRejected, match="text_proj.npz, named by the card, cannot be read"):
        load_checked(folder, text_dim=32, provider="cpu")
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    del card["sha256_files"][TEXT_PROJ_FILE]  # a model published without one
    (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    model = load_checked(folder, text_dim=32, provider="cpu")
    p = seq_pipeline(tiny_encoder)
    active = p.install_sequence(model)
    known = active.long_items().known
    assert known.sum() == 18 and not known[p.index.row_of("s18")]


# --------------------------------------------------------------------------- watcher


def test_the_watcher_loads_swaps_and_keeps_serving_through_a_broken_model(
    tiny_sequence_dir: Path, tmp_path: Path, tiny_encoder: TextEncoder
) -> None:
    live = tmp_path / "live"
    p = seq_pipeline(tiny_encoder)
    watcher = ModelWatcher(live, p, provider="cpu")
    assert watcher.poll() is False and p.sequence is None  # nothing there: short-term only
    assert p.model_version == tiny_encoder.model_version

    publish_model(tiny_sequence_dir, live)
    assert watcher.poll() is True and watcher.poll() is False  # loaded once, then unchanged
    first = p.sequence
    assert first is not None and p.model_version == f"{tiny_encoder.model_version}+{first.version}"
    before = p.process([_click("e1", "u1", "s2", 10.0)], {})
    assert before.model_version.endswith(first.version)

    second = _copy(tiny_sequence_dir, tmp_path / "second")
    _set_version(second, "seq-second")
    publish_model(second, live)
    assert watcher.poll() is True
    state = before.users["u1"].state
    after = p.process([_click("e2", "u1", "s4", 20.0)], {"u1": state})
    assert after.model_version.endswith("+seq-second")
    assert after.users["u1"].state.long_term_version == "seq-second"

    broken = _copy(tiny_sequence_dir, tmp_path / "broken")
    _resealed(_nan_items)(broken)
    _set_version(broken, "seq-broken")
    publish_model(broken, live)
    assert watcher.poll() is False
    assert (watcher.reloads, watcher.rejects) == (1, 1)
    assert "NaN" in (watcher.last_reject or "")
    still = p.process([_click("e3", "u1", "s6", 30.0)], {"u1": after.users["u1"].state})
    assert still.model_version.endswith("+seq-second") and still.users["u1"].recommendations
    metrics = watcher.metrics()
    assert metrics["sequence_model_version"] == "seq-second"
    assert metrics["model_rejects"] == 1 and metrics["model_reloads"] == 1
    assert metrics["model_loads"] == 2  # the first model from nothing, then its replacement


def test_the_watcher_never_raises_and_retries_only_a_changed_card(
    tiny_sequence_dir: Path, tmp_path: Path, tiny_encoder: TextEncoder
) -> None:
    live = _copy(tiny_sequence_dir, tmp_path / "live")
    _truncate_graph(live)
    p = seq_pipeline(tiny_encoder)
    watcher = ModelWatcher(live, p, provider="cpu")
    assert watcher.poll() is False and watcher.rejects == 1
    assert watcher.poll() is False and watcher.rejects == 1  # same card: not tried again
    fingerprint = card_fingerprint(live)
    publish_model(tiny_sequence_dir, live)  # the good graph, then a new card
    assert card_fingerprint(live) != fingerprint
    assert watcher.poll() is True and p.sequence is not None


# --------------------------------------------------------------------------- aligned items


def test_items_unknown_to_the_model_get_vectors_from_their_text(
    tiny_sequence_dir: Path, tiny_encoder: TextEncoder
) -> None:
    p = seq_pipeline(tiny_encoder, SEQ_ITEMS[:10])
    model = load_checked(tiny_sequence_dir, text_dim=32, provider="cpu")
    active = p.install_sequence(model)
    assert len(active.items) == 10 and active.long_items().known.all()
    row = p.index.row_of("s3")
    np.testing.assert_array_equal(
        active.long_items().vectors[row], model.items[model.row_of["s3"] - 1]
    )
    p.add_items([ItemRecord("brand-new", "a brand new film", "a brand new film", ())])
    items = active.long_items()
    new_row = p.index.row_of("brand-new")
    assert len(items.known) == 11 and items.known[new_row]
    text = p.index.vector("brand-new")
    np.testing.assert_allclose(
        items.vectors[new_row], model.item_vectors_from_text(text[None, :])[0], atol=1e-6
    )
    p.blend_weight = 1.0  # rank by the Transformer alone: every score is a long-term z-score
    result = p.process([_click(f"e{n}", "u", f"s{n}", 10.0 + n) for n in range(8)], {})
    state = result.users["u"].state
    assert state.long_term is not None
    scores = {r.item_id: r.score for r in result.users["u"].recommendations}
    unseen = ["s8", "s9", "brand-new"]  # s0..s7 were clicked
    long = np.array([state.long_term @ items.vectors[p.index.row_of(i)] for i in unseen])
    z = (long - long.mean()) / long.std()
    # recommendable at once, scored by the Transformer through its text-projected vector
    np.testing.assert_allclose([scores[i] for i in unseen], z, rtol=1e-4, atol=1e-5)


def test_a_failing_sequence_model_leaves_the_batch_to_the_short_term_vector(
    tiny_sequence_dir: Path, tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = seq_pipeline(tiny_encoder)
    model = load_checked(tiny_sequence_dir, text_dim=32, provider="cpu")
    p.install_sequence(model)

    def broken(histories: object, **_: object) -> np.ndarray:  # a fault at run time
        raise InferenceError("the sequence model failed: injected")

    monkeypatch.setattr(model, "encode_users", broken)
    result = p.process([_click("e1", "u1", "s2", 10.0), _click("e2", "u2", "s3", 11.0)], {})
    assert not result.rejected and set(result.users) == {"u1", "u2"}  # nothing lost
    assert result.model_version == tiny_encoder.model_version  # short-term only, and says so
    assert all(o.recommendations and o.applied for o in result.users.values())
    assert p.sequence_failures == 1


def test_a_non_finite_user_vector_is_not_stored_and_that_user_ranks_short_term(
    tiny_sequence_dir: Path, tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = seq_pipeline(tiny_encoder)
    model = load_checked(tiny_sequence_dir, text_dim=32, provider="cpu")
    p.install_sequence(model)
    real = model.encode_users

    def overflowing(histories: list[object], **kw: object) -> np.ndarray:
        out = real(histories, **kw)  # type: ignore[arg-type]
        out[0] = np.inf  # the first user's history overflows the model
        return out

    monkeypatch.setattr(model, "encode_users", overflowing)
    result = p.process([_click("e1", "u1", "s2", 10.0), _click("e2", "u2", "s3", 11.0)], {})
    long_terms = [result.users[u].state.long_term for u in ("u1", "u2")]
    assert sum(v is None for v in long_terms) == 1 and p.sequence_nonfinite == 1
    assert all(o.recommendations for o in result.users.values())
    assert all(np.isfinite(r.score) for o in result.users.values() for r in o.recommendations)


def test_ring_history_reads_the_state_ring_oldest_first() -> None:
    state = dataclasses.replace(
        InterestState.empty(4),
        recent_items=("a", "b", "c", "d"),
        recent_types=(1, 0, 2, 3),
        recent_ts=(1.0, 2.0, 3.0, 4.0),
    )
    assert ring_history(state) == (
        SequenceEvent("a", "click", 1.0),
        SequenceEvent("b", "browse", 2.0),
        SequenceEvent("c", "comment", 3.0),
        SequenceEvent("d", "dislike", 4.0),  # a model without dislikes leaves it out
    )


def test_metrics_and_dashboard_say_how_the_worker_ranks(
    tiny_sequence_dir: Path, tmp_path: Path, tiny_encoder: TextEncoder
) -> None:
    from streams.worker.dashboard import render_dashboard
    from streams.worker.views import ranking_summary

    p = seq_pipeline(tiny_encoder)
    watcher = ModelWatcher(tmp_path / "none-yet", p, provider="cpu")
    watcher.poll()
    assert ranking_summary(p) == "short-term only (no sequence model)"
    page = render_dashboard({"ranking": ranking_summary(p), **watcher.metrics()})
    assert "short-term only" in page and "0 / 0" in page
    p.install_sequence(load_checked(tiny_sequence_dir, text_dim=32, provider="cpu"))
    assert ranking_summary(p).startswith("blend 0.95 x sequence seq-")


def test_publishing_removes_files_the_new_model_does_not_have(
    tiny_sequence_dir: Path, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    publish_model(tiny_sequence_dir, live)
    assert (live / TEXT_PROJ_FILE).is_file()
    bare = _copy(tiny_sequence_dir, tmp_path / "bare")
    (bare / TEXT_PROJ_FILE).unlink()
    publish_model(bare, live)
    assert not (live / TEXT_PROJ_FILE).exists() and (live / CARD_FILE).is_file()
    assert not list(live.glob(".*.tmp"))
    with pytest.raises(ModelRejected, match="nothing to publish"):
        publish_model(tmp_path / "empty", live)
