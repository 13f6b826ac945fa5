"""A/B in the stream: the split of users, each variant ranked by its own model in one batch, and
each variant's figures (online HR, messages, latency) on ``/metrics``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from prometheus_client.parser import text_string_to_metric_families

from encoders import TextEncoder
from encoders.runtime.sequence import SequenceModel
from interest_state import Event, EventType, Recommendation, UpdateParams
from streams.contract import ItemRecord
from streams.errors import SettingsError
from streams.settings import Settings
from streams.worker.ab import BUCKETS, Split
from streams.worker.dashboard import ab_rows
from streams.worker.history import Sampler
from streams.worker.lag import ConsumerLag
from streams.worker.model_watch import ModelWatcher
from streams.worker.online_quality import OnlineQuality
from streams.worker.outcomes import BatchResult, UserOutcome
from streams.worker.pipeline import Pipeline
from streams.worker.prometheus import WorkerCollector, render, worker_registry
from streams.worker.stats import Stats
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES

IDS = [f"user-{n}" for n in range(100_000)]


def test_the_split_respects_the_share_and_the_salt_changes_it() -> None:
    for share in (0.5, 0.1, 0.0, 1.0):
        in_b = sum(Split(share).variant(u) == "B" for u in IDS) / len(IDS)
        assert abs(in_b - share) < 0.01, (share, in_b)  # 3 sigma at 0.5 is 0.0047
    first, second = Split(0.5), Split(0.5, salt="experiment 2")
    moved = sum(first.variant(u) != second.variant(u) for u in IDS[:10_000])
    assert 4_500 < moved < 5_500  # a new salt is a new, independent split: half move
    assert all(0 <= first.bucket(u) < BUCKETS for u in IDS[:1000])
    with pytest.raises(ValueError, match="share"):
        Split(1.5)


def test_the_split_is_the_same_in_another_process() -> None:
    """Stable across restarts and workers: a fresh interpreter (another hash seed) agrees."""
    ids = IDS[:2000]
    code = ("import sys; from streams.worker.ab import Split; s = Split(0.3, 'x'); "
            "print(''.join(s.variant(f'user-{n}') for n in range(2000)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})  # fmt: skip
    assert out.stdout.strip() == "".join(Split(0.3, "x").variant(u) for u in ids)
    assert "A" in out.stdout and "B" in out.stdout


def _events(users: list[str]) -> list[Event]:
    return [
        Event(f"{u}-e{n}", u, SEQ_ITEMS[(3 * k + n) % 18], EventType.CLICK, 1000.0 + n)
        for k, u in enumerate(users)
        for n in range(3)
    ]


def _pipeline(encoder: TextEncoder, split: Split | None, **kwargs: object) -> Pipeline:
    p = Pipeline(encoder, UpdateParams(history_len=8), top_k=4, split=split, **kwargs)  # type: ignore[arg-type]
    p.add_items([ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], ()) for i in SEQ_ITEMS])
    return p


def _lists(result: BatchResult) -> dict[str, list[str]]:
    return {u: [r.item_id for r in o.recommendations] for u, o in result.users.items()}


@pytest.mark.parametrize("ann_min_items", [0, 4])  # exactly, and over candidates (faiss)
def test_each_variant_is_ranked_by_its_own_model_in_one_batch(
    tiny_encoder: TextEncoder, tiny_sequence_dir: Path, monkeypatch: pytest.MonkeyPatch,
    ann_min_items: int,
) -> None:  # fmt: skip
    """B serves the sequence model, A none (short-term only): each user's list is the one a
    pipeline serving their variant's model alone gives, and the model runs once per batch."""
    model = SequenceModel.load(tiny_sequence_dir, provider="cpu", intra_op_threads=1)
    split = Split(0.5, salt="t")
    users = [f"u{n}" for n in range(12)]
    assert {split.variant(u) for u in users} == {"A", "B"}
    ab = _pipeline(tiny_encoder, split, ann_min_items=ann_min_items)
    ab.install_sequence(model, "B")
    only_b = _pipeline(tiny_encoder, None, ann_min_items=ann_min_items, sequence=model)
    only_a = _pipeline(tiny_encoder, None, ann_min_items=ann_min_items)
    runs: list[int] = []
    encode_users = SequenceModel.encode_users

    def counted(self: SequenceModel, histories: list[object]) -> object:
        runs.append(len(histories))
        return encode_users(self, histories)  # type: ignore[arg-type]

    monkeypatch.setattr(SequenceModel, "encode_users", counted)
    events = _events(users)
    result = ab.process(events, {})
    in_b = [u for u in users if split.variant(u) == "B"]
    assert runs == [len(in_b)]  # one sequence-model run for all of B's users, none for A's
    alone_b, alone_a = _lists(only_b.process(events, {})), _lists(only_a.process(events, {}))
    lists = _lists(result)
    for user in users:
        outcome = result.users[user]
        expected = alone_b if user in in_b else alone_a
        assert outcome.variant == split.variant(user)
        assert lists[user] == expected[user], user
        assert outcome.model_version == (only_b if user in in_b else only_a).model_version
    assert alone_a != alone_b  # the two models differ, so the check above can fail
    assert result.model_version == ab.model_version_of("A") == tiny_encoder.model_version
    assert ab.model_version_of("B") == f"{tiny_encoder.model_version}+{model.version}"
    if ann_min_items:
        assert ab.slots["B"].long_ann is not None and ab.slots["A"].long_ann is None
    state = result.users[in_b[0]].state  # the per-user view ranks by the user's variant too
    assert [r.item_id for r in ab.recommend(state, user_id=in_b[0])] == lists[in_b[0]]


def test_without_a_split_every_user_is_a(tiny_encoder: TextEncoder) -> None:
    p = _pipeline(tiny_encoder, None)
    result = p.process(_events(["x", "y"]), {})
    assert {o.variant for o in result.users.values()} == {"A"} and list(p.slots) == ["A"]
    assert p.variant_of("x") == "A"


def _outcome(items: list[str], variant: str, version: str, applied: tuple[str, ...] = ()
             ) -> UserOutcome:  # fmt: skip
    recs = [Recommendation(i, 1.0, "") for i in items]
    return UserOutcome(None, applied, (), recs, (), variant, version)  # type: ignore[arg-type]


def _metrics(stats: Stats) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    app = faust.App("ab-prom", broker="kafka://127.0.0.1:1", web_enabled=False)
    sampler = Sampler(stats, ConsumerLag(app, "127.0.0.1:1", ["events.click"]), table={})
    registry = worker_registry(WorkerCollector(stats, sampler, dict))
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(render(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_both_variants_figures_are_on_metrics() -> None:
    """Lists served by A and B, events scored against them: HR, messages and latency per
    variant on /metrics, /metrics.json and the dashboard."""
    stats = Stats()
    online: OnlineQuality = stats.online
    first = BatchResult(users={"a1": _outcome(["i1", "i2"], "A", "vA"),
                               "b1": _outcome(["i3", "i4"], "B", "vB")})  # fmt: skip
    online.record_batch([], first, lambda user: False)
    for variant, ms in (("A", 10.0), ("B", 30.0), ("B", 50.0)):
        online.sent(variant, ms)
    events = [Event("e1", "a1", "i2", EventType.CLICK, 1.0), Event("e2", "b1", "i9",
              EventType.CLICK, 1.0), Event("e3", "b1", "i3", EventType.CLICK, 1.0)]  # fmt: skip
    second = BatchResult(users={"a1": _outcome(["i5"], "A", "vA", ("e1",)),
                                "b1": _outcome(["i6"], "B", "vB", ("e2", "e3"))})  # fmt: skip
    online.record_batch(events, second, lambda user: False)
    assert {v: (t.scored, t.hits) for v, t in online.variant_totals.items()} == {
        "A": (1, 1), "B": (2, 1)}  # fmt: skip
    found = _metrics(stats)
    k = ("k", "10")
    assert found["interest_stream_ab_scored_events_total"] == {
        (k, ("variant", "A")): 1.0, (k, ("variant", "B")): 2.0}  # fmt: skip
    assert found["interest_stream_ab_hits_total"][(k, ("variant", "B"))] == 1.0
    assert found["interest_stream_ab_hit_rate"][(k, ("variant", "B"), ("window", "1m"))] == 0.5
    assert found["interest_stream_ab_recommendations_total"] == {
        (("variant", "A"),): 1.0, (("variant", "B"),): 2.0}  # fmt: skip
    assert found["interest_stream_ab_latency_seconds_count"][(("variant", "B"),)] == 2.0
    assert found["interest_stream_ab_latency_seconds_sum"][(("variant", "B"),)] == 0.08
    assert found["interest_stream_ab_latency_seconds"][(("quantile", "0.5"), ("variant", "B"))
                                                       ] == pytest.approx(0.04)  # fmt: skip
    figures = online.snapshot()["variants"]
    assert figures["B"]["hr"] == 0.5 and figures["B"]["recommendations"] == 2
    assert figures["A"]["last_1m"]["hr"] == 1.0
    ab = {
        "enabled": True,
        "share_b": 0.5,
        "salt": "s",
        "variants": {"A": {"ranking": "short-term only"}, "B": {"ranking": "blend"}},
    }
    rows = dict(ab_rows(ab, online.snapshot()))
    assert rows["B: online, all"].startswith("HR 0.5 · MRR 0.5 · 2 events")
    assert rows["B: messages sent"].startswith("2 · latency p50 40.0 ms")
    assert ab_rows({"enabled": False}, {})[0][1].startswith("off")


def test_variant_b_has_its_own_watcher_and_fields(
    tiny_encoder: TextEncoder, tiny_sequence_dir: Path
) -> None:
    p = _pipeline(tiny_encoder, Split(0.5))
    watcher = ModelWatcher(tiny_sequence_dir, p, provider="cpu", variant="B")
    assert watcher.poll() and p.sequence is None  # A untouched
    active = p.slots["B"].sequence
    assert active is not None and watcher.current is active
    fields = watcher.metrics()
    assert fields["ab_sequence_model_version"] == active.version and fields["ab_model_loads"] == 1
    assert "sequence_model_version" not in fields  # A's watcher's field is A's alone


def test_the_settings_name_the_ab_variables() -> None:
    settings = Settings.from_env({"INTEREST_STREAM_AB_MODEL_DIR": "/m/b",
                                  "INTEREST_STREAM_AB_SHARE": "0.2",
                                  "INTEREST_STREAM_AB_SALT": "exp-2"})  # fmt: skip
    assert (settings.ab_model_dir, settings.ab_share, settings.ab_salt) == (Path("/m/b"), 0.2,
                                                                            "exp-2")  # fmt: skip
    assert Settings().ab_model_dir is None  # unset: no A/B
    for bad in ("1.5", "-0.1", "nan"):
        with pytest.raises(SettingsError, match="ab_share"):
            Settings.from_env({"INTEREST_STREAM_AB_SHARE": bad})
