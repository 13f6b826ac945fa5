"""One microbatch through the model side: vectors resolved, text encoded, states updated, ranked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streams.worker.pipeline
from encoders import InferenceError, TextEncoder
from encoders.index.ann import AnnIndex
from encoders.index.device import DeviceIndex
from encoders.runtime.providers import CUDA
from encoders.runtime.sequence import SequenceModel
from interest_state import (
    Event,
    EventType,
    Recommendation,
    UpdateParams,
    encode_state,
    mmr_rerank,
    nearest_titles,
)
from streams.contract import ItemRecord
from streams.worker.lists import ApproxSearch
from streams.worker.pipeline import Pipeline, candidate_kind
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES

TITLES = [
    "space battle saga",
    "romantic comedy in paris",
    "animated toys adventure",
    "war drama",
    "cooking show",
    "space station thriller",
]


def pipeline(encoder: TextEncoder) -> Pipeline:
    p = Pipeline(encoder, UpdateParams(), top_k=3)
    p.add_items([ItemRecord(str(i), t, t, ()) for i, t in enumerate(TITLES)])
    return p


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Wrap ``streams.worker.pipeline.<name>`` (a ranker over candidates): the returned list gets
    the number of states of each call."""
    calls: list[int] = []
    real = getattr(streams.worker.pipeline, name)

    def counted(states: list[object], *args: object, **kwargs: object) -> object:
        calls.append(len(states))
        return real(states, *args, **kwargs)

    monkeypatch.setattr(streams.worker.pipeline, name, counted)
    return calls


def ev(
    event_id: str,
    user: str,
    item: str,
    kind: EventType = EventType.CLICK,
    text: str | None = None,
    ts: float = 1000.0,
) -> Event:
    return Event(event_id, user, item, kind, ts, text=text)


def test_a_batch_updates_each_user_once_and_ranks_unseen_items(tiny_encoder: TextEncoder) -> None:
    p = pipeline(tiny_encoder)
    events = [ev("a", "u1", "0"), ev("b", "u2", "1"), ev("c", "u1", "5", ts=1001.0)]
    result = p.process(events, {})
    assert set(result.users) == {"u1", "u2"} and result.rejected == []
    u1 = result.users["u1"]
    assert u1.applied == ("a", "c") and u1.state.n_events == 2
    assert len(u1.recommendations) == 3
    assert not {"0", "5"} & {r.item_id for r in u1.recommendations}


def test_unknown_items_are_rejected_with_their_position(tiny_encoder: TextEncoder) -> None:
    p = pipeline(tiny_encoder)
    result = p.process([ev("a", "u1", "0"), ev("b", "u1", "nope")], {})
    assert result.rejected == [(1, "unknown item_id 'nope'")]
    assert result.users["u1"].applied == ("a",)


def test_replayed_events_are_duplicates_and_do_not_move_the_state(
    tiny_encoder: TextEncoder,
) -> None:
    p = pipeline(tiny_encoder)
    first = p.process([ev("a", "u1", "0", EventType.COMMENT, text="love space")], {})
    state = first.users["u1"].state
    again = p.process([ev("a", "u1", "0", EventType.COMMENT, text="love space")], {"u1": state})
    outcome = again.users["u1"]
    assert outcome.applied == () and outcome.duplicates == ("a",)
    assert outcome.state.n_events == 1
    assert (outcome.state.short_term == state.short_term).all()


def test_comment_text_moves_the_interest_beyond_the_item(tiny_encoder: TextEncoder) -> None:
    p = pipeline(tiny_encoder)
    plain = p.process([ev("a", "u1", "3")], {}).users["u1"].state
    commented = (
        p.process([ev("a", "u1", "3", EventType.COMMENT, text="cooking show")], {})
        .users["u1"]
        .state
    )
    assert not (plain.short_term == commented.short_term).all()


# --------------------------------------------------------------------------- sequence model


def test_a_batch_runs_the_sequence_model_once_and_stores_long_term_vectors(
    tiny_encoder: TextEncoder, tiny_sequence_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    p = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=4, sequence=model)
    p.add_items([ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], ()) for i in SEQ_ITEMS])
    calls: list[int] = []
    real = model.encode_users

    def counted(histories, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(histories))
        return real(histories, **kwargs)

    monkeypatch.setattr(model, "encode_users", counted)
    events = [ev(f"e{n}", f"u{n % 3}", f"s{n}", ts=1000.0 + n) for n in range(9)]
    result = p.process(events, {})
    assert calls == [3]  # one call for the three users of the batch
    assert result.model_version == f"{tiny_encoder.model_version}+{model.version}"
    for outcome in result.users.values():
        state = outcome.state
        assert state.long_term_version == model.version and state.long_dim == model.dim
        assert not state.seen_items() & {r.item_id for r in outcome.recommendations}
        assert len(outcome.recommendations) == 4
        assert len(encode_state(state)) <= 4096
    u0 = result.users["u0"]
    assert [r.item_id for r in p.recommend(u0.state)] == [r.item_id for r in u0.recommendations]


def test_without_a_sequence_model_the_batch_says_short_term_only(
    tiny_encoder: TextEncoder,
) -> None:
    result = pipeline(tiny_encoder).process([ev("a", "u1", "0")], {})
    assert result.model_version == tiny_encoder.model_version
    assert result.users["u1"].state.long_term is None


@pytest.mark.parametrize("candidate_index", ["faiss", "device"])
def test_large_catalogs_rank_over_candidates_as_exact_ranking_would(
    tiny_encoder: TextEncoder, tiny_sequence_dir: Path, monkeypatch: pytest.MonkeyPatch,
    candidate_index: str,
) -> None:
    """faiss is not trained on 20 items (every row is scored as not synced yet); the device
    index (here on the CPU provider) holds them all and answers exactly: same lists."""

    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    items = [ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], ()) for i in SEQ_ITEMS]
    events = [ev(f"e{n}", f"u{n % 3}", f"s{n}", ts=1000.0 + n) for n in range(9)]
    approx_calls = count_calls(monkeypatch, "rank_blended_approx")
    searched = []
    monkeypatch.setattr(ApproxSearch, "search", _counted(ApproxSearch.search, searched))
    lists = []
    for ann_min_items in (0, 4):  # 0: always exact; 4: this 20-item catalog is "large"
        p = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=4, sequence=model,
                     ann_min_items=ann_min_items, candidate_index=candidate_index,
                     interest_slots=1)  # the interests' items searched through it too
        p.add_items(items)
        result = p.process(events, {})
        lists.append({u: [r.item_id for r in o.recommendations] for u, o in result.users.items()})
    assert approx_calls == [3] and len(searched) == 1
    assert lists[0] == lists[1]
    assert p.text_ann is not None and p.long_ann is not None
    if candidate_index == "device":
        assert isinstance(p.text_ann, DeviceIndex) and isinstance(p.long_ann, DeviceIndex)
        assert p.text_ann.covered == len(p.text_ann) == len(items)
        assert p.long_ann.version == model.version
        assert p.candidate_summary == "exact search on CPUExecutionProvider (float32) from 4 items"
    else:
        assert isinstance(p.text_ann, AnnIndex) and p.text_ann.covered == 0


def _counted(method: Any, calls: list[int]) -> Any:
    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return method(self, *args, **kwargs)

    return counted


def test_the_candidate_index_follows_the_provider_unless_chosen() -> None:
    assert candidate_kind("auto", CUDA) == "device"
    assert candidate_kind("auto", "CPUExecutionProvider") == "faiss"
    assert candidate_kind("device", "CPUExecutionProvider") == "device"
    assert candidate_kind("faiss", CUDA) == "faiss"
    with pytest.raises(ValueError, match="auto, faiss, device"):
        candidate_kind("hnsw", CUDA)


def test_metrics_and_the_dashboard_say_where_candidates_come_from(
        tiny_encoder: TextEncoder) -> None:
    from streams.worker.dashboard import render_dashboard

    exact = Pipeline(tiny_encoder, UpdateParams(), ann_min_items=0)
    assert exact.candidate_summary == "none: every catalog is ranked exactly"
    p = Pipeline(tiny_encoder, UpdateParams())
    assert p.candidate_summary == "faiss IVF-PQ (approximate, CPU) from 20,000 items"
    page = render_dashboard({"candidates": p.candidate_summary})
    assert "large-catalog candidates" in page and "faiss IVF-PQ (approximate, CPU)" in page


def test_the_device_index_follows_the_catalog_and_ranks_exactly(tiny_encoder: TextEncoder) -> None:
    words = ["space", "love", "war", "toys", "cook", "ship", "city", "night", "sea", "song"]
    titles = [f"{words[n % 10]} {words[n // 10 % 10]} {words[n // 100 % 10]} {n}"
              for n in range(300)]
    p = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=100,
                 candidate_index="device")
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles[:200])])
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles[150:], 150)])
    renamed = ItemRecord("7", "sea song night", "sea song night", ())
    p.add_items([renamed])  # a replaced vector goes to the device too
    assert p.text_ann is not None and p.text_ann.covered == 300
    seven = p.index.vector("7")
    assert seven is not None
    found = p.text_ann.candidates(seven[None, :], 1)
    assert found.rows[0, 0] == p.index.row_of("7")
    np.testing.assert_allclose(found.moments.total, p.index.vectors_view().sum(axis=0), atol=1e-4)
    exact = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=0)
    exact.index = p.index
    events = [ev(f"e{n}", f"u{n % 20}", str(n * 5)) for n in range(60)]
    ours, theirs = p.process(events, {}).users, exact.process(events, {}).users
    assert {u: [r.item_id for r in o.recommendations] for u, o in ours.items()} == {
        u: [r.item_id for r in o.recommendations] for u, o in theirs.items()}


def test_the_approximate_index_follows_the_catalog(tiny_encoder: TextEncoder) -> None:
    p = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=1000)
    words = ["space", "love", "war", "toys", "cook", "ship", "city", "night", "sea", "song"]
    titles = [f"{words[n % 10]} {words[n // 10 % 10]} {words[n // 100 % 10]} {n}"
              for n in range(1200)]
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles)])
    assert p.text_ann is not None and p.text_ann.covered == 1200  # trained at min_rows, synced
    exact = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=0)
    exact.index = p.index
    events = [ev(f"e{n}", f"u{n % 20}", str(n * 7)) for n in range(60)]
    approx_lists = p.process(events, {}).users
    exact_lists = exact.process(events, {}).users
    hits = sum(len({r.item_id for r in approx_lists[u].recommendations}
                   & {r.item_id for r in exact_lists[u].recommendations}) for u in exact_lists)
    assert hits / (5 * len(exact_lists)) >= 0.8


class _FailingRuns:
    """An ONNX Runtime session whose runs fail as a GPU out of memory would."""

    def __init__(self, session: object) -> None:
        self._session = session

    def io_binding(self) -> object:
        return self._session.io_binding()  # type: ignore[attr-defined]

    def run_with_iobinding(self, binding: object) -> None:
        raise RuntimeError("CUDA failure 2: out of memory")


def test_a_failing_device_index_costs_speed_not_recommendations(
        tiny_encoder: TextEncoder, caplog: pytest.LogCaptureFixture) -> None:
    titles = [f"{w} {n}" for n, w in enumerate(["space", "love", "war", "toys", "cook"] * 40)]
    p = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=50,
                 candidate_index="device")
    exact = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=0)
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles[:150])])
    assert p.text_ann is not None
    p.text_ann._patch = _FailingRuns(p.text_ann._patch)  # type: ignore[union-attr]
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles[150:], 150)])
    assert p.candidate_failures == 1 and p.text_ann.covered == 150 and len(p.index) == 200
    assert "could not take 50 catalog rows" in caplog.text
    exact.index = p.index
    events = [ev(f"e{n}", f"u{n % 7}", str(n * 3 % 200)) for n in range(40)]

    def lists(pipeline: Pipeline) -> dict[str, list[str]]:
        users = pipeline.process(events, {}).users
        return {u: [r.item_id for r in o.recommendations] for u, o in users.items()}

    assert lists(p) == lists(exact)  # the 50 rows it did not take are scored exactly
    p.text_ann._search = _FailingRuns(p.text_ann._search)  # type: ignore[union-attr]
    assert lists(p) == lists(exact)
    assert p.candidate_failures == 2 and "ranked exactly" in caplog.text


def test_a_device_index_that_cannot_start_leaves_faiss_when_auto_chose_it(
        tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from encoders import ModelLoadError

    def no_device(*args: object, **kwargs: object) -> None:
        raise ModelLoadError("the device index's graphs do not load on ['CUDAExecutionProvider']")

    monkeypatch.setattr(DeviceIndex, "__init__", no_device)
    monkeypatch.setattr(
        streams.worker.pipeline, "candidate_kind", lambda choice, provider: "device"
    )
    p = Pipeline(tiny_encoder, UpdateParams(), candidate_index="auto")  # as on CUDA
    assert isinstance(p.text_ann, AnnIndex) and p.candidate_index == "faiss"
    assert "faiss candidates instead" in caplog.text
    with pytest.raises(ModelLoadError):
        Pipeline(tiny_encoder, UpdateParams(), candidate_index="device")


def _lists(pipeline: Pipeline, events: list[Event]) -> dict[str, list[str]]:
    users = pipeline.process(events, {}).users
    return {u: [r.item_id for r in o.recommendations] for u, o in users.items()}


def _blended_pair(tiny_encoder: TextEncoder, tiny_sequence_dir: Path, candidate_index: str
                  ) -> tuple[Pipeline, Pipeline, list[Event]]:  # fmt: skip
    """A pipeline ranking the 20-item catalog over candidates (ann_min_items 4) and an exact
    one sharing its catalog, both with the sequence model; and a batch of events."""
    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    items = [ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], ()) for i in SEQ_ITEMS]
    p = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=4, sequence=model,
                 ann_min_items=4, candidate_index=candidate_index)
    p.add_items(items)
    exact = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=4, sequence=model,
                     ann_min_items=0)
    exact.add_items(items)
    events = [ev(f"e{n}", f"u{n % 3}", f"s{n}", ts=1000.0 + n) for n in range(9)]
    return p, exact, events


def test_a_failed_search_falls_back_to_the_blended_exact_ranking(
        tiny_encoder: TextEncoder, tiny_sequence_dir: Path) -> None:
    p, exact, events = _blended_pair(tiny_encoder, tiny_sequence_dir, "device")
    assert p.long_ann is not None and p.text_ann is not None
    p.long_ann._search = _FailingRuns(p.long_ann._search)  # type: ignore[union-attr]
    assert _lists(p, events) == _lists(exact, events)  # long-term scores kept, not dropped
    assert p.candidate_failures == 1 and isinstance(p.text_ann, DeviceIndex)  # named: it stays


def test_a_sequence_model_whose_items_the_index_cannot_take_is_served_anyway(
        tiny_encoder: TextEncoder, tiny_sequence_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p, exact, events = _blended_pair(tiny_encoder, tiny_sequence_dir, "device")
    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    real = DeviceIndex.sync

    def failing(self: DeviceIndex, *args: object, **kwargs: object) -> int:
        if kwargs.get("version"):
            raise InferenceError("CUDA failure 2: out of memory")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DeviceIndex, "sync", failing)
    active = p.install_sequence(model)
    assert p.sequence is active and p.long_ann is None and p.candidate_failures == 1
    assert _lists(p, events) == _lists(exact, events)  # long-term scores computed exactly


def test_rows_a_failed_sync_did_not_take_are_offered_again(tiny_encoder: TextEncoder) -> None:
    titles = [f"{w} {n}" for n, w in enumerate(["space", "love", "war", "toys", "cook"] * 20)]
    p = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=50,
                 candidate_index="device")
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles)])
    index = p.text_ann
    assert isinstance(index, DeviceIndex)
    working = index._patch
    index._patch = _FailingRuns(working)  # type: ignore[assignment]
    p.add_items([ItemRecord("7", "sea song night", "sea song night", ())])  # a replaced row
    index._patch = working
    p.add_items([ItemRecord("new", "ship city", "ship city", ())])  # the next sync
    seven = p.index.vector("7")
    assert seven is not None and p.candidate_failures == 1
    assert index.candidates(seven[None, :], 1).rows[0, 0] == p.index.row_of("7")


def test_auto_replaces_a_failing_device_index_by_faiss(
        tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(
        streams.worker.pipeline, "candidate_kind", lambda choice, provider: "device"
    )
    titles = [f"{w} {n}" for n, w in enumerate(["space", "love", "war", "toys", "cook"] * 20)]
    p = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=50)  # auto, "on CUDA"
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles[:80])])
    assert isinstance(p.text_ann, DeviceIndex)
    p.text_ann._patch = _FailingRuns(p.text_ann._patch)  # type: ignore[assignment]
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles[80:], 80)])
    deadline = time.monotonic() + 30
    while not isinstance(p.text_ann, AnnIndex) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(p.text_ann, AnnIndex) and p.candidate_index == "faiss"
    assert p.candidate_summary == "faiss IVF-PQ (approximate, CPU) from 50 items"
    exact = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=0)
    exact.index = p.index
    events = [ev(f"e{n}", f"u{n % 7}", str(n * 3 % 100)) for n in range(30)]
    assert _lists(p, events) == _lists(exact, events)


# --------------------------------------------------------------------------- catalog deletes


def _reasons(recs: list[Recommendation]) -> str:
    return " ".join(r.reason for r in recs)


def test_a_deleted_item_is_neither_recommended_nor_named_until_it_is_added_again(
        tiny_encoder: TextEncoder) -> None:
    p = pipeline(tiny_encoder)
    state = p.process([ev("a", "u1", "0")], {}).users["u1"].state  # clicked "space battle saga"
    before = p.recommend(state, k=5)
    top = before[0].item_id
    assert len(before) == 5 and 'because you clicked "space battle saga"' in _reasons(before)
    assert p.delete_items([top, "nope"]) == 1 and len(p.index) == 5
    assert p.delete_items(["nope"]) == 0  # an unknown item: nothing happens
    after = p.recommend(state, k=5)
    assert top not in {r.item_id for r in after} and len(after) == 4
    assert TITLES[int(top)] not in nearest_titles(state, p.index, k=6)
    p.delete_items(["0"])  # the item the user clicked: no explanation names it any more
    assert "space battle saga" not in _reasons(p.recommend(state, k=5))
    assert "space battle saga" not in nearest_titles(state, p.index, k=6)
    assert p.process([ev("b", "u2", "0")], {}).rejected == [(0, "unknown item_id '0'")]
    assert p.add_items([ItemRecord(i, TITLES[int(i)], TITLES[int(i)], ()) for i in ("0", top)]
                       ) == []  # fmt: skip
    assert p.recommend(state, k=5) == before and len(p.index) == 6


@pytest.mark.parametrize("candidate_index", ["faiss", "device"])
def test_deleted_items_leave_the_blended_ranking_on_every_path(
        tiny_encoder: TextEncoder, tiny_sequence_dir: Path, monkeypatch: pytest.MonkeyPatch,
        candidate_index: str) -> None:
    """Over candidates (faiss, untrained on 20 items: ranked exactly while it may hold a deleted
    row; the device index: drops it at once) as exactly, with the sequence model."""
    approx_calls = count_calls(monkeypatch, "rank_blended_approx")
    p, exact, events = _blended_pair(tiny_encoder, tiny_sequence_dir, candidate_index)
    before = _lists(p, events)
    assert before == _lists(exact, events) and approx_calls == [3]
    gone = sorted({recs[0] for recs in before.values()})
    for each in (p, exact):
        assert each.delete_items(gone) == len(gone)
    after = _lists(p, events)
    assert after == _lists(exact, events)
    assert not set(gone) & {i for recs in after.values() for i in recs}
    assert all(len(recs) == 4 for recs in after.values())
    assert approx_calls == ([3, 3] if candidate_index == "device" else [3])
    assert p.text_ann is not None and p.long_ann is not None
    if candidate_index == "device":
        assert len(p.text_ann) == 20 - len(gone)
        known = p.sequence.long_items().known  # type: ignore[union-attr]
        assert len(p.long_ann) == int(known.sum()) - len(gone)
        p.long_ann = None  # every long-term row is scored as not synced: a deleted one too
        assert _lists(p, events) == after and approx_calls == [3, 3, 3]
    items = [ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], ()) for i in gone]
    for each in (p, exact):
        each.add_items(items)
    assert _lists(p, events) == before


def test_deleted_items_leave_the_faiss_candidates(
        tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    approx_calls = count_calls(monkeypatch, "rank_approx")
    p = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=1000)
    words = ["space", "love", "war", "toys", "cook", "ship", "city", "night", "sea", "song"]
    titles = [f"{words[n % 10]} {words[n // 10 % 10]} {words[n // 100 % 10]} {n}"
              for n in range(1200)]
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles)])
    assert isinstance(p.text_ann, AnnIndex) and p.text_ann.covered == 1200  # trained
    events = [ev(f"e{n}", f"u{n % 20}", str(n * 7)) for n in range(60)]
    before = _lists(p, events)
    gone = sorted({i for recs in before.values() for i in recs[:2]})
    assert p.delete_items(gone) == len(gone) and len(p.text_ann) == 1200 - len(gone)
    after = _lists(p, events)
    assert approx_calls == [20, 20]  # over candidates, not the exact fallback
    assert not set(gone) & {i for recs in after.values() for i in recs}
    assert all(len(recs) == 5 for recs in after.values())
    p.add_items([ItemRecord(i, titles[int(i)], titles[int(i)], ()) for i in gone])
    assert len(p.text_ann) == 1200
    again = _lists(p, events)
    assert all(before[u][0] in again[u] for u in before)


def test_a_delete_the_candidate_index_could_not_take_is_ranked_exactly_until_it_can(
        tiny_encoder: TextEncoder) -> None:
    titles = [f"{w} {n}" for n, w in enumerate(["space", "love", "war", "toys", "cook"] * 20)]
    p = Pipeline(tiny_encoder, UpdateParams(), top_k=5, ann_min_items=50,
                 candidate_index="device")
    p.add_items([ItemRecord(str(n), t, t, ()) for n, t in enumerate(titles)])
    index = p.text_ann
    assert isinstance(index, DeviceIndex)
    events = [ev(f"e{n}", f"u{n % 7}", str(n * 3 % 100)) for n in range(30)]
    gone = sorted({recs[0] for recs in _lists(p, events).values()})
    working = index._patch
    index._patch = _FailingRuns(working)  # type: ignore[assignment]
    p.delete_items(gone)
    assert p.candidate_failures == 1 and len(index) == 100  # the device still holds them
    assert not set(gone) & {i for recs in _lists(p, events).values() for i in recs}
    index._patch = working
    p.add_items([ItemRecord("new", "ship city", "ship city", ())])  # the next sync takes them
    assert len(index) == 101 - len(gone) and p.candidate_failures == 1


def test_an_item_whose_text_fails_to_encode_is_returned_and_the_rest_indexed(
        tiny_encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tiny_encoder.encode

    def picky(texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any("poison" in t for t in texts):
            raise InferenceError("ONNX Runtime failed on a batch of 1: bad input")
        return real(texts, *args, **kwargs)

    monkeypatch.setattr(tiny_encoder, "encode", picky)
    p = pipeline(tiny_encoder)
    bad = ItemRecord("p", "poison pill", "poison pill", ())
    failed = p.add_items([ItemRecord("a", "sea song", "sea song", ()), bad,
                          ItemRecord("b", "war city", "war city", ())])
    assert failed == [(bad, "could not be encoded: InferenceError: ONNX Runtime failed on a "
                             "batch of 1: bad input")]
    assert "a" in p.index and "b" in p.index and "p" not in p.index and len(p.index) == 8
    assert p.add_items([bad]) == failed and len(p.index) == 8


def test_mmr_re_ranks_the_best_candidates_for_diversity(tiny_encoder: TextEncoder) -> None:
    """With ``mmr_lambda`` < 1 a user's list is the MMR order of their best candidates (seen
    items still filtered); at 1 it is the plain relevance order. (lambda 0, all diversity: the
    tiny test encoder's vectors are too alike for a milder one to change this list.)"""
    titles = [f"space battle saga part {i}" for i in range(6)] + [
        "romantic comedy in paris", "cooking show", "war drama", "animated toys adventure"]
    items = [ItemRecord(str(i), t, t, ()) for i, t in enumerate(titles)]
    plain = Pipeline(tiny_encoder, UpdateParams(), top_k=4)
    diverse = Pipeline(tiny_encoder, UpdateParams(), top_k=4, mmr_lambda=0.0)
    for p in (plain, diverse):
        p.add_items(items)
    events = [ev("a", "u1", "0"), ev("b", "u1", "1", ts=1001.0)]
    relevance = plain.process(events, {}).users["u1"].recommendations
    reranked = diverse.process(events, {}).users["u1"].recommendations
    wide = Pipeline(tiny_encoder, UpdateParams(), top_k=8)
    wide.add_items(items)
    candidates = wide.process(events, {}).users["u1"].recommendations
    expected = mmr_rerank(candidates, wide.index, 4, 0.0)
    assert [r.item_id for r in reranked] == [r.item_id for r in expected]
    assert [r.item_id for r in reranked] != [r.item_id for r in relevance]
    assert not {"0", "1"} & {r.item_id for r in reranked} and len(reranked) == 4
