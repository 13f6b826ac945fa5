"""Input validation: every bad record gets a reason a person can act on."""

from __future__ import annotations

import json
import time

import pytest

from interest_state import EventType
from streams.contract import parse_ts
from streams.errors import EventRejected
from streams.worker.schemas import decode_event, decode_item, encode_recommendations


def raw(**fields: object) -> bytes:
    body = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1_700_000_000.0, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def test_a_good_click_decodes() -> None:
    event = decode_event(raw(context={"device": "ios"}), "click", b"u1")
    assert (event.event_id, event.user_id, event.item_id) == ("e1", "u1", "i1")
    assert event.event_type is EventType.CLICK and event.context == {"device": "ios"}


def test_browse_keeps_dwell_and_comment_keeps_text() -> None:
    assert decode_event(raw(dwell_ms=1200), "browse", b"u1").dwell_ms == 1200
    assert decode_event(raw(text="great"), "comment", b"u1").text == "great"


@pytest.mark.parametrize(
    ("value", "event_type", "key", "words"),
    [
        (b"{nope", "click", b"u1", "not JSON"),
        (b"\xff\xfe", "click", b"u1", "not JSON"),
        (b"[]", "click", b"u1", "JSON object"),
        (None, "click", b"u1", "empty message"),
        (raw(user_id=None), "click", None, "missing field 'user_id'"),
        (raw(user_id=""), "click", b"", "is empty"),
        (raw(user_id="x" * 129), "click", None, "at most 128"),
        (raw(user_id=7), "click", None, "must be a string"),
        (raw(item_id=None), "click", b"u1", "missing field 'item_id'"),
        (raw(ts=None), "click", b"u1", "missing field 'ts'"),
        (raw(ts="not a time"), "click", b"u1", "ISO-8601"),
        (raw(ts=True), "click", b"u1", "boolean"),
        (raw(ts=-1), "click", b"u1", "non-negative"),
        (raw(ts=time.time() * 1000), "click", b"u1", "milliseconds"),
        (raw(dwell_ms=-1), "browse", b"u1", "dwell_ms"),
        (raw(dwell_ms=1.5), "browse", b"u1", "dwell_ms"),
        (raw(), "comment", b"u1", "text"),
        (raw(type="purchase"), "click", b"u1", "unknown event type"),
        (raw(), "purchase", b"u1", "unknown event type"),
        (raw(context={"a": 1}), "click", b"u1", "context"),
        (raw(), "click", b"u2", "key must be the user_id"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(
    value: bytes | None, event_type: str, key: bytes | None, words: str
) -> None:
    with pytest.raises(EventRejected) as info:
        decode_event(value, event_type, key)
    assert words in info.value.reason


def test_iso_timestamps_parse_and_naive_ones_are_utc() -> None:
    assert parse_ts("2024-01-01T00:00:00Z") == 1_704_067_200.0
    assert parse_ts("2024-01-01T00:00:00") == 1_704_067_200.0
    assert parse_ts("2024-01-01T01:00:00+01:00") == 1_704_067_200.0


def test_items_need_an_id_and_a_title_and_text_defaults_to_title() -> None:
    item = decode_item(json.dumps({"item_id": "1", "title": "Toy Story"}).encode())
    assert item.text == "Toy Story" and item.tags == ()
    with pytest.raises(EventRejected, match="title"):
        decode_item(json.dumps({"item_id": "1"}).encode())
    with pytest.raises(EventRejected, match="tags"):
        decode_item(json.dumps({"item_id": "1", "title": "t", "tags": "x"}).encode())


def test_recommendation_message_has_the_documented_fields() -> None:
    from interest_state import Recommendation

    body = json.loads(
        encode_recommendations(
            "u1", ["e1", "e2"], [Recommendation("i9", 0.5, "like x")], "m-1", 3.2, 10.0
        )
    )
    assert body == {
        "user_id": "u1",
        "ts": 10.0,
        "event_id": "e2",
        "event_ids": ["e1", "e2"],
        "items": [{"item_id": "i9", "score": 0.5, "reason": "like x"}],
        "model_version": "m-1",
        "latency_ms": 3.2,
    }


@pytest.mark.parametrize(
    ("reason", "group"),
    [
        ("unknown item_id 'x9'", "unknown item_id"),
        ("not JSON: Expecting value: line 1 column 1 (char 0)", "not JSON"),
        (
            "field 'user_id' is 129 chars, at most 128 allowed",
            "field 'user_id' is N chars, at most N allowed",
        ),
        (
            "field 'ts' must be epoch seconds or ISO-8601, got list",
            "field 'ts' must be epoch seconds or ISO-8601",
        ),
    ],
)
def test_dead_letter_reasons_are_counted_by_kind_not_by_value(reason: str, group: str) -> None:
    from streams.worker.stats import reason_group

    assert reason_group(reason) == group


def test_the_dashboard_shows_the_numbers_and_escapes_what_it_shows() -> None:
    from streams.worker.dashboard import render_dashboard

    page = render_dashboard(
        {
            "catalog_ready": True,
            "model_version": "m<1>",
            "provider": "CPUExecutionProvider",
            "events_in": 12345,
            "latency_ms": {"p50": 7.5},
            "dead_letters_by_reason": {"unknown item_id": 3, "<script>": 1},
        }
    )
    assert "serving" in page and "12345" in page and "7.5" in page
    assert "until its recommendation was sent (oldest event of each message), p50 (ms)" in page
    assert "no events yet" in render_dashboard({"catalog_ready": False})
    assert "m&lt;1&gt;" in page and "<script>" not in page
    assert page.index("unknown item_id") < page.index("&lt;script&gt;")  # most frequent first


def test_metrics_split_the_latency_into_the_wait_for_a_batch_and_the_batch_itself() -> None:
    from streams.worker.dashboard import render_dashboard
    from streams.worker.stats import Stats

    stats = Stats()
    assert stats.snapshot()["wait_ms"] == {} and stats.snapshot()["batch_ms"] == {}
    stats.waits_ms.extend([10.0, 20.0, 30.0])
    stats.batch_ms.append(4.0)
    snap = stats.snapshot()
    assert snap["wait_ms"]["p50"] == 20.0 and snap["batch_ms"] == {"p50": 4.0, "p90": 4.0,
                                                                     "p99": 4.0}
    page = render_dashboard(snap)
    assert "waiting for its batch, p50 (ms)" in page and "one batch&#x27;s work, p99 (ms)" in page


def test_acked_latency_reads_back_the_window_since_a_time_and_metrics_say_it() -> None:
    from streams.worker.dashboard import render_dashboard
    from streams.worker.stats import Stats

    stats = Stats()
    now = time.time()
    for stamp, ms in [(now - 60.0, 900.0), (now - 1.0, 10.0), (now, 20.0), (now, 30.0)]:
        stats.acked.record([stamp], now=stamp + ms / 1000.0)  # acked ``ms`` after its stamp
    assert stats.snapshot()["acked_ms"]["n"] == 4 and stats.snapshot()["acked_ms"]["max"] == 900.0
    window = stats.snapshot(since=now - 30.0)["acked_ms"]
    assert window["n"] == 3 and window["p50"] == 20.0 and window["max"] == 30.0
    assert stats.snapshot(since=now + 1.0)["acked_ms"] == {}
    stats.acked.record([time.time() - 0.25])
    assert 250.0 <= stats.acked.summary(since=now - 1.0)["max"] < 900.0
    page = render_dashboard(stats.snapshot())
    assert "until the broker acked its recommendation, p50 (ms)" in page
    assert "recommendation, n" not in page


def test_acked_keeps_the_last_capacity_events_in_its_ring() -> None:
    from streams.worker.stats import Acked

    acked = Acked(capacity=3)
    assert acked.summary() == {}
    acked.record([1.0, 2.0], now=3.0)  # 2000 and 1000 ms
    assert acked.summary() == {"p50": 1500.0, "p90": 1900.0, "p99": 1990.0, "max": 2000.0,
                               "n": 2}
    acked.record([2.5, 2.75], now=3.0)  # the ring drops the oldest (1.0)
    assert acked.summary()["n"] == 3 and acked.summary()["max"] == 1000.0
    assert acked.summary(since=2.6) == {"p50": 250.0, "p90": 250.0, "p99": 250.0, "max": 250.0,
                                        "n": 1}
    with pytest.raises(ValueError, match="capacity"):
        Acked(capacity=0)


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf", str(int(time.time() * 1000))])
def test_metrics_since_must_be_epoch_seconds(raw: str) -> None:
    from streams.worker.stats import since_param

    assert since_param({}) == 0.0 and since_param({"since": "12.5"}) == 12.5
    with pytest.raises(ValueError, match="since must be epoch seconds"):
        since_param({"since": raw})
