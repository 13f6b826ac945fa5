"""Tests of streams.offline.coldstart: the trending window, who wins on data whose answer is
known, the served mix exactly as the stream serves it, and the table in the outputs."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from encoders import ExportReport, TextEncoder
from encoders.runtime.sequence import SequenceModel
from interest_state import Event, EventType, UpdateParams
from streams.contract import EventRecord, ItemRecord
from streams.data.formats import read_events, write_events, write_items
from streams.errors import EvaluationError
from streams.offline.coldstart import ColdStart, ColdStartTable, TrendingWindow
from streams.offline.evaluate import (
    PopularityModel,
    ShortTermModel,
    TransformerModel,
    evaluate_command,
    load_dataset,
    run_evaluation,
)
from streams.worker.pipeline import Pipeline
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES

POPULAR = [f"p{n}" for n in range(12)]
GENRE_A = [f"a{n}" for n in range(11)]
GENRE_B = [f"b{n}" for n in range(11)]
CATALOG = [*POPULAR, *GENRE_A, *GENRE_B]


class GenreEncoder:
    """Stands in for TextEncoder: an item's vector is its genre's axis (p, a or b) plus a small
    axis of its own, so the items of one genre are near each other and far from the rest."""

    dim = 3 + len(CATALOG)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            item = text.split()[1]
            vectors[row, "pab".index(item[0])] = 1.0
            vectors[row, 3 + CATALOG.index(item)] = 0.05
        return vectors


def _write(folder: Path, per_user: dict[str, list[str]], step: float = 60.0) -> tuple[Path, Path]:
    """Clicks, user after user, ``step`` seconds apart (a chronological file)."""
    events = [
        EventRecord(f"e{n}", user, item, "click", 1_000_000.0 + n * step)
        for n, (user, item) in enumerate((u, i) for u, items in per_user.items() for i in items)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    write_items(folder / "items.jsonl", [ItemRecord(i, f"title {i}", f"item {i}") for i in CATALOG])
    write_events(folder / "events.jsonl", events)
    return folder / "items.jsonl", folder / "events.jsonl"


def _table(folder: Path, per_user: dict[str, list[str]], spec: ColdStart) -> ColdStartTable:
    items, events = _write(folder, per_user)
    data = load_dataset(items, events)
    params = UpdateParams(half_life_s=600.0, history_len=1024)
    short = ShortTermModel(GenreEncoder(), params)  # type: ignore[arg-type]
    short.fit(data.train)
    timelines = [(*u.history, u.validation, u.test) for u in data.users]
    return spec.run(timelines, data.train, events, [short], 10)


# Every user opens with one item of their own, then takes the popular items in one order:
# p0..p4 are training data of every user (count 6), p5 and p6 (their validation and test items)
# are counted through three short users (3): training popularity is p0, ..., p6, then the rest.
POPULAR_FOLLOWERS = {
    **{f"short{n}": ["p5", "p6"] for n in range(3)},
    **{f"u{n}": [GENRE_A[n], *POPULAR[:7]] for n in range(6)},
}

# Users who stay in their genre; 30 short users make the p items the popular ones (5 each,
# more than any genre item's 4).
GENRE_KEEPERS = {
    **{f"short{n}": [POPULAR[n % 12], POPULAR[(n + 1) % 12]] for n in range(30)},
    **{f"ua{n}": GENRE_A[n : n + 8] for n in range(4)},
    **{f"ub{n}": GENRE_B[3 - n : 11 - n] for n in range(4)},
}


# --------------------------------------------------------------------------- trending window


def test_the_trending_window_counts_the_live_panes_before_a_time() -> None:
    times = [("x", 0.0), ("y", 100.0), ("y", 200.0), ("z", 3500.0), ("x", 3650.0),
             ("z", 3700.0), ("gone", 3710.0)]  # fmt: skip
    events = [EventRecord(f"e{n}", "u", i, "click", ts) for n, (i, ts) in enumerate(times)]
    window = TrendingWindow.build(events, ["z", "y", "x"], 3600.0, 300.0)
    assert window.name == "recent-popularity-1h"
    # t 3700: the 12 panes of 300 s up to the current one (3600-3900), i.e. [300, 3700): the
    # events at 0-200 left with the pane 0-300; the one at 3700 is not before t; ties by id
    assert window.at(3700.0) == [("x", 1.0), ("z", 1.0)]
    assert window.at(3701.0) == [("z", 2.0), ("x", 1.0)]
    assert window.at(299.0) == [("y", 2.0), ("x", 1.0)]  # [-3300, 299)
    assert window.at(3900.0) == [("z", 2.0), ("x", 1.0)]  # [600, 3900)
    assert window.at(7500.0) == []  # [3900, 7500)
    with pytest.raises(EvaluationError, match="window_s >= hop_s"):
        TrendingWindow.build(events, ["x"], 60.0, 300.0)


# --------------------------------------------------------------------------- who wins


def test_popularity_wins_when_every_user_takes_the_popular_items(tmp_path: Path) -> None:
    table = _table(tmp_path, POPULAR_FOLLOWERS, ColdStart(personal_after=(3,)))
    assert (table.n_users, table.users_left_out, table.served) == (6, 0, "short-term-decay")
    for n in (1, 2, 3, 5):
        # the next item is the most popular unseen one: rank 1 for every user
        assert table.score("popularity", "next", n).metrics["NDCG@10"].mean == 1.0
        # the test item p6 comes after p_(n-1)..p4 and p5: rank 8 - n
        test = table.score("popularity", "test", n).metrics
        assert test["NDCG@10"].mean == pytest.approx(1 / math.log2(9 - n))
    # from their own first item, the short-term vector lists that item's genre: no p0
    first = table.score("short-term-decay", "next", 1)
    assert first.metrics["HR@10"].mean == 0.0
    assert (first.vs_popularity.mean, first.vs_popularity.se) == (-1.0, 0.0)
    assert table.ahead_from("short-term-decay", "next") is None
    assert table.ahead_from("popularity", "next") is None  # never above itself


def test_a_dislike_is_never_the_next_target(tmp_path: Path) -> None:
    """The followers above, each with a dislike of a genre-B item after their first item: the
    next target after one event is still p0, the most popular item."""
    items, events = _write(tmp_path, POPULAR_FOLLOWERS)
    records = list(read_events(events))
    for n in range(6):
        first = next(i for i, e in enumerate(records) if e.user_id == f"u{n}")
        ts = (records[first].ts + records[first + 1].ts) / 2
        records.insert(first + 1, EventRecord(f"d{n}", f"u{n}", GENRE_B[n], "dislike", ts))
    write_events(events, records)
    data = load_dataset(items, events)
    short = ShortTermModel(GenreEncoder(), UpdateParams())  # type: ignore[arg-type]
    short.fit(data.train)
    timelines = [(*u.history, u.validation, u.test) for u in data.users]
    table = ColdStart(personal_after=(3,)).run(timelines, data.train, events, [short], 10)
    assert table.score("popularity", "next", 1).metrics["NDCG@10"].mean == 1.0


def test_personal_wins_when_users_stay_in_their_genre(tmp_path: Path) -> None:
    table = _table(tmp_path, GENRE_KEEPERS, ColdStart(personal_after=(1,)))
    assert table.n_users == 8
    for target in ("next", "test"):
        for n in (1, 2, 3, 5):
            assert table.score("popularity", target, n).metrics["HR@10"].mean == 0.0
            personal = table.score("short-term-decay", target, n)
            assert personal.metrics["HR@10"].mean == 1.0  # all unseen genre items are listed
            assert personal.vs_popularity.mean == personal.metrics["NDCG@10"].mean > 0.0
        assert table.ahead_from("short-term-decay", target) == 1
        # personal_after 1: no trending share from the first event, the personal list itself
        assert table.ahead_from("served-mix-pa1", target) == 1
    for n in (1, 2, 3, 5):
        assert table.lists[("served-mix-pa1", n)] == table.lists[("short-term-decay", n)]


def test_a_mix_at_a_large_share_takes_the_trending_items(tmp_path: Path) -> None:
    spec = ColdStart(ns=(1, 2), personal_after=(1000,), window_s=86400.0, hop_s=60.0)
    table = _table(tmp_path, GENRE_KEEPERS, spec)
    data = load_dataset(tmp_path / "items.jsonl", tmp_path / "events.jsonl")
    timelines = [(*u.history, u.validation, u.test) for u in data.users]
    for n in (1, 2):
        mixed = table.lists[("served-mix-pa1000", n)]
        assert mixed != table.lists[("short-term-decay", n)]
        for timeline, mix in zip(timelines, mixed, strict=True):
            hot = _trending(timeline[n].ts, tmp_path / "events.jsonl", 86400.0, 60.0)
            assert len(hot) >= 10 + n and len(mix) == 10
            assert set(mix) <= {item for item, _ in hot}  # every slot trending (share 0.999)
    assert set(table.models()) == {"popularity", "recent-popularity-1d", "short-term-decay",
                                   "served-mix-pa1000"}  # fmt: skip


# --------------------------------------------------------------------------- as served


def _seq_files(folder: Path) -> tuple[Path, Path]:
    """20 items; 6 users with 5..20 events (u0 too few for n = 5)."""
    items = [ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i]) for i in SEQ_ITEMS]
    events: list[EventRecord] = []
    for user in range(6):
        for step in range(5 + 3 * user):
            n = len(events)
            kind = ("click", "browse", "comment")[step % 3]
            events.append(EventRecord(f"e{n}", f"u{user}", SEQ_ITEMS[(3 * user + 2 * step) % 19],
                                      kind, 1000.0 + 50.0 * n,
                                      text="loved it" if kind == "comment" else None))  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_items(folder / "items.jsonl", items)
    write_events(folder / "events.jsonl", events)
    return folder / "items.jsonl", folder / "events.jsonl"


def test_the_served_mix_is_what_the_pipeline_serves(
    tmp_path: Path, tiny_encoder: TextEncoder, tiny_sequence_dir: Path
) -> None:
    items, events = _seq_files(tmp_path)
    data = load_dataset(items, events)
    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    short = ShortTermModel(tiny_encoder)
    ring = UpdateParams(history_len=8)
    long = TransformerModel(model, tiny_encoder, params=ring, index=short.index)
    spec = ColdStart(blend_weight=0.75, mmr_lambda=0.5, window_s=600.0, hop_s=100.0)
    timelines = [(*u.history, u.validation, u.test) for u in data.users]
    table = spec.run(timelines, data.train, events, [short, long], 10)
    assert (table.n_users, table.users_left_out, table.served) == (5, 1, "blend-0.75")
    users = [t for t in timelines if len(t) >= 6]
    for after in (3, 5):
        pipeline = Pipeline(tiny_encoder, ring, top_k=10, blend_weight=0.75, sequence=model,
                            mmr_lambda=0.5, personal_after=after)  # fmt: skip
        pipeline.add_items(data.train.items)
        for n in (1, 2, 3, 5):
            for timeline, offline in zip(users, table.lists[(f"served-mix-pa{after}", n)],
                                         strict=True):  # fmt: skip
                hot = _trending(timeline[n].ts, events)
                pipeline.lists.trending = _serving(hot)
                served = pipeline.process([_event(e) for e in timeline[:n]], {})
                recs = served.users[timeline[0].user_id].recommendations
                assert [r.item_id for r in recs] == offline
    assert table.lists[("blend-0.75+mmr-0.5", 1)] != table.lists[("served-mix-pa5", 1)]


def _trending(
    t: float, events_path: Path, window: float = 600.0, hop: float = 100.0
) -> list[tuple[str, float]]:
    """Trending at ``t`` as the worker keeps it, counted here from the file: every event from
    the start of the oldest live pane (``t`` rounded down to the ``hop``, minus ``window``, plus
    ``hop``) to before ``t``, most counted first, ties by item id."""
    start = math.floor(t / hop) * hop - window + hop
    counts = Counter(e.item_id for e in read_events(events_path) if start <= e.ts < t)
    return [(i, float(c)) for i, c in sorted(counts.items(), key=lambda ic: (-ic[1], ic[0]))]


def _serving(hot: list[tuple[str, float]]) -> Callable[[int], list[tuple[str, float]]]:
    return lambda k: hot[:k]


def _event(e: EventRecord) -> Event:
    return Event(e.event_id, e.user_id, e.item_id, EventType[e.event_type.upper()], e.ts,
                 text=e.text)  # fmt: skip


# --------------------------------------------------------------------------- outputs


def test_the_table_is_in_the_evaluation_outputs(tmp_path: Path) -> None:
    items, events = _write(tmp_path / "data", POPULAR_FOLLOWERS)
    data = load_dataset(items, events)
    short = ShortTermModel(GenreEncoder(), UpdateParams(history_len=1024))  # type: ignore[arg-type]
    short.fit(data.train)
    report = run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out",
                            models=[PopularityModel(), short], cold_start=ColdStart())  # fmt: skip
    saved = json.loads(report.json_path.read_text(encoding="utf-8"))["cold_start"]
    assert (saved["users"], saved["served"], saved["spec"]["ns"]) == (6, "short-term-decay",
                                                                      [1, 2, 3, 5])  # fmt: skip
    first = next(r for r in saved["rows"] if (r["model"], r["target"], r["n"]) ==
                 ("popularity", "next", 1))  # fmt: skip
    assert first["metrics"]["NDCG@10"] == {"mean": 1.0, "se": 0.0}
    assert saved["ahead_of_popularity_from"]["next"]["served-mix-pa5"] is None
    text = report.markdown_path.read_text(encoding="utf-8")
    assert "Target: the (n+1)-th event's item (next)." in text
    assert "| popularity | 1.0000 ± 0.0000 | 1.0000 ± 0.0000 |" in text
    with pytest.raises(EvaluationError, match="short-term model"):
        run_evaluation(items, events, tmp_path, out_dir=tmp_path / "out",
                       models=[PopularityModel()], cold_start=ColdStart())  # fmt: skip


def test_the_command_prints_the_cold_start_table(
    tmp_path: Path, tiny_export: ExportReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTEREST_STREAM_MODEL_DIR", str(tiny_export.out_dir))
    monkeypatch.setenv("INTEREST_STREAM_PROVIDER", "cpu")
    monkeypatch.setenv("INTEREST_STREAM_HOME", str(tmp_path / "home"))  # no sequence model there
    monkeypatch.setenv("INTEREST_STREAM_TRENDING_WINDOW_S", "86400")
    items, events = _write(tmp_path / "data", POPULAR_FOLLOWERS)
    out = tmp_path / "eval"
    args = ["--items", str(items), "--events", str(events), "--out", str(out), "--no-mmr"]
    result = CliRunner().invoke(evaluate_command, [*args, "--cold-start"])
    assert result.exit_code == 0, result.output
    assert result.output.index("| test | masked | popularity |") < result.output.index(
        "Cold start: 6 users"
    )
    assert "| recent-popularity-1d |" in result.output
    assert "short-term-decay+mmr-0.5" in result.output  # the stream's MMR (default lambda)
    saved = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["cold_start"]["spec"]["window_s"] == 86400.0
    result = CliRunner().invoke(evaluate_command, args)
    assert result.exit_code == 0, result.output
    assert "Cold start" not in result.output
    assert "cold_start" not in json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
