"""Properties of the topic decoders: whatever a producer sends, ``decode_event`` and
``decode_item`` either return a record the worker can use to the end (encode, hash, tokenize,
weigh, publish) or raise ``EventRejected`` with a reason, and never anything else.

Hypothesis runs derandomized (the examples are a function of the test, the same in every run
and in CI) with no example database, so nothing is written to the work tree; ``max_examples``
keeps each property under a few seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interest_state import Event, EventType, UpdateParams, event_id_hash
from streams.contract import MAX_DEPTH, MAX_DWELL_MS, MAX_TEXT_CHARS, ItemRecord
from streams.errors import EventRejected
from streams.worker.schemas import decode_event, decode_item, encode_recommendations

T = TypeVar("T")

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOPICS = st.sampled_from(["click", "browse", "comment"])
TS = 1_700_000_000.0

# Characters with the troublemakers well represented: lone surrogates, brackets, quotes.
CHARS = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(categories=["Cs"]),
    st.sampled_from(list('[]{}"\\ \x00\n')),
)
TEXT = st.text(CHARS, max_size=40)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)
# Raw JSON text no ``json.dumps`` of a Python value writes, or writes only with effort.
LITERALS = st.one_of(
    JSON.map(json.dumps),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 500).map(lambda n: "-1" + "0" * n),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(1, 3000).map(lambda d: "[" * d + "]" * d),
    st.integers(1, 3000).map(lambda d: '{"a":' * d + "1" + "}" * d),
    st.integers(1, 3000).map(lambda d: '"' + "[" * d + '"'),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "-0", "0.0", "1e-400",
                     "true", "null", '""', '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"']),
)
FIELDS = st.sampled_from(["event_id", "user_id", "item_id", "ts", "dwell_ms", "text", "context",
                          "type", "extra"])  # fmt: skip
KEYS = st.none() | st.binary(max_size=600)


def _outcome(decode: Callable[[], T]) -> T | None:
    """What ``decode`` returns, or ``None`` when it rejects the record with a reason."""
    try:
        return decode()
    except EventRejected as exc:
        assert exc.reason.strip(), "a rejection without a reason"
        return None


def _usable(event: Event, key: bytes | None) -> None:
    """The checks the worker's later steps make implicitly, by not failing."""
    assert key == event.user_id.encode()  # keyed, by its own user
    for text in (event.event_id, event.user_id, event.item_id, event.text or "",
                 *event.context, *event.context.values()):  # fmt: skip
        text.encode("utf-8")
    event_id_hash(event.event_id)
    assert math.isfinite(event.ts) and event.ts >= 0
    if event.event_type is EventType.COMMENT:
        assert event.text is not None and event.text.strip()
        assert len(event.text) <= MAX_TEXT_CHARS
    if event.dwell_ms is not None:
        assert 0 <= event.dwell_ms <= MAX_DWELL_MS
        assert math.isfinite(UpdateParams().browse_weight(event.dwell_ms))
    encode_recommendations(event.user_id, [event.event_id], [], "m", 0.0, 0.0)


def _item_usable(item: ItemRecord) -> None:
    for text in (item.item_id, item.title, item.text, *item.tags):
        text.encode("utf-8")
    assert item.item_id and item.title and item.text


def _with(base: dict[str, Any], field: str, literal: str) -> bytes:
    """``base`` as JSON with ``field`` set to the raw JSON text ``literal``."""
    text = json.dumps({**base, field: "@@fuzz@@"})
    return text.replace('"@@fuzz@@"', literal).encode("utf-8", "surrogatepass")


def _good(topic: str) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": TS}
    if topic == "comment":
        body["text"] = "more like this"
    if topic == "browse":
        body["dwell_ms"] = 1200
    return body


@PROPERTY
@given(raw=st.none() | st.binary(max_size=2000), key=KEYS, topic=TOPICS)
def test_any_bytes_decode_or_are_rejected_with_a_reason(
    raw: bytes | None, key: bytes | None, topic: str
) -> None:
    event = _outcome(lambda: decode_event(raw, topic, key))
    if event is not None:
        _usable(event, key)


@PROPERTY
@given(value=JSON, key=KEYS, topic=TOPICS)
def test_any_json_value_decodes_or_is_rejected_with_a_reason(
    value: object, key: bytes | None, topic: str
) -> None:
    raw = json.dumps(value).encode()
    event = _outcome(lambda: decode_event(raw, topic, key))
    if event is not None:
        _usable(event, key)


@PROPERTY
@given(topic=TOPICS, field=FIELDS, literal=LITERALS, keyed=st.booleans(), key=KEYS)
def test_a_good_event_with_one_field_fuzzed_decodes_or_is_rejected_with_a_reason(
    topic: str, field: str, literal: str, keyed: bool, key: bytes | None
) -> None:
    raw = _with(_good(topic), field, literal)
    if keyed:  # keyed by its user_id, as a well-behaved producer does, when it has one
        key = b"u1"
        if field == "user_id":
            try:
                user = json.loads(literal)
            except (ValueError, RecursionError):  # not JSON, too many digits, too deep
                user = None
            key = user.encode("utf-8", "surrogatepass") if isinstance(user, str) else None
    event = _outcome(lambda: decode_event(raw, topic, key))
    if event is not None:
        _usable(event, key)


@PROPERTY
@given(
    user=st.text(min_size=1, max_size=128),
    ids=st.lists(st.text(min_size=1, max_size=256), min_size=2, max_size=2),
    ts=st.floats(0, TS),
    dwell=st.none() | st.integers(0, MAX_DWELL_MS),
    text=st.text(min_size=1, max_size=300).filter(str.strip),
    context=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=32),
    topic=TOPICS,
)
def test_every_valid_event_decodes_to_what_was_sent(
    user: str, ids: list[str], ts: float, dwell: int | None, text: str,
    context: dict[str, str], topic: str,
) -> None:  # fmt: skip
    body = {"event_id": ids[0], "user_id": user, "item_id": ids[1], "ts": ts, "dwell_ms": dwell,
            "text": text, "context": context}  # fmt: skip
    event = decode_event(json.dumps(body).encode(), topic, user.encode())
    assert (event.event_id, event.user_id, event.item_id, event.ts, event.context) == (
        ids[0], user, ids[1], ts, context)  # fmt: skip
    assert event.dwell_ms == (dwell if topic == "browse" else None)
    assert event.text == (text if topic == "comment" else None)
    _usable(event, user.encode())


@PROPERTY
@given(depth=st.integers(1, 3 * MAX_DEPTH), quoted=st.booleans())
def test_the_nesting_limit_is_exact_and_brackets_in_strings_do_not_count(
    depth: int, quoted: bool
) -> None:
    nested = "[" * depth + "]" * depth
    raw = _with(_good("click"), "extra", json.dumps(nested) if quoted else nested)
    event = _outcome(lambda: decode_event(raw, "click", b"u1"))
    assert (event is not None) == (quoted or depth + 1 <= MAX_DEPTH)  # the event is level 1


@PROPERTY
@given(raw=st.none() | st.binary(max_size=2000))
def test_any_bytes_on_the_items_topic_decode_or_are_rejected_with_a_reason(
    raw: bytes | None,
) -> None:
    item = _outcome(lambda: decode_item(raw))
    if item is not None:
        _item_usable(item)


@PROPERTY
@given(value=JSON)
def test_any_json_value_on_the_items_topic_decodes_or_is_rejected_with_a_reason(
    value: object,
) -> None:
    item = _outcome(lambda: decode_item(json.dumps(value).encode()))
    if item is not None:
        _item_usable(item)


@PROPERTY
@given(field=st.sampled_from(["item_id", "title", "text", "tags", "extra"]), literal=LITERALS)
def test_a_good_item_with_one_field_fuzzed_decodes_or_is_rejected_with_a_reason(
    field: str, literal: str
) -> None:
    raw = _with({"item_id": "1", "title": "Toy Story", "tags": ["Animation"]}, field, literal)
    item = _outcome(lambda: decode_item(raw))
    if item is not None:
        _item_usable(item)
