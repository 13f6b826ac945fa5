"""The JSON contracts of the topics: decoding and validating input, encoding output.

Input is validated by hand (no schema library): each failure names the field and the problem,
and that sentence is the ``reason`` of the dead-letter record.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from interest_state import Event, EventType, Recommendation
from streams.errors import EventRejected

__all__ = [
    "EVENT_TYPES",
    "decode_event",
    "decode_item",
    "encode_recommendations",
    "ItemMessage",
]

EVENT_TYPES: dict[str, EventType] = {
    "click": EventType.CLICK,
    "browse": EventType.BROWSE,
    "comment": EventType.COMMENT,
}
MAX_ID_CHARS = 256
MAX_CONTEXT_FIELDS = 32
MAX_FUTURE_S = 86_400.0


def _load_object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise EventRejected("empty message value")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventRejected(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise EventRejected(f"expected a JSON object, got {type(value).__name__}")
    return value


def _string(obj: Mapping[str, Any], name: str, max_chars: int = MAX_ID_CHARS) -> str:
    if name not in obj:
        raise EventRejected(f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, str):
        raise EventRejected(f"field {name!r} must be a string, got {type(value).__name__}")
    if not value:
        raise EventRejected(f"field {name!r} is empty")
    if len(value) > max_chars:
        raise EventRejected(f"field {name!r} is {len(value)} chars, at most {max_chars} allowed")
    return value


def parse_ts(value: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (naive times are taken as UTC)."""
    if isinstance(value, bool):
        raise EventRejected("field 'ts' must be epoch seconds or ISO-8601, got a boolean")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise EventRejected(f"field 'ts' does not parse as ISO-8601: {value[:64]!r}") from exc
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ts = parsed.timestamp()
    else:
        raise EventRejected(
            f"field 'ts' must be epoch seconds or ISO-8601, got {type(value).__name__}"
        )
    if not math.isfinite(ts) or ts < 0:
        raise EventRejected(f"field 'ts' must be a finite, non-negative time, got {value!r}")
    if ts > time.time() + MAX_FUTURE_S:
        raise EventRejected(
            f"field 'ts' is more than a day in the future ({value!r}): epoch seconds expected, "
            "not milliseconds"
        )
    return ts


def _context(obj: Mapping[str, Any]) -> dict[str, str]:
    value = obj.get("context")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventRejected("field 'context' must be an object of strings")
    if len(value) > MAX_CONTEXT_FIELDS:
        raise EventRejected(
            f"field 'context' has {len(value)} fields, at most {MAX_CONTEXT_FIELDS}"
        )
    if not all(isinstance(v, str) for v in value.values()):
        raise EventRejected("field 'context' must map names to strings")
    return dict(value)


def _dwell(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("dwell_ms")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise EventRejected(f"field 'dwell_ms' must be an integer >= 0, got {value!r}")
    return int(value)


def decode_event(
    raw: bytes | None, event_type: str | None, key: bytes | None, max_user_id_len: int = 128
) -> Event:
    """Validate one input record; raise ``EventRejected`` with the reason."""
    if event_type not in EVENT_TYPES:
        raise EventRejected(f"unknown event type {event_type!r}")
    obj = _load_object(raw)
    declared = obj.get("type")
    if declared is not None and declared != event_type:
        raise EventRejected(f"unknown event type {declared!r} on the {event_type} topic")
    user_id = _string(obj, "user_id", max_user_id_len)
    if key is not None and key != user_id.encode():
        raise EventRejected("message key must be the user_id (state lives in the key's partition)")
    if "ts" not in obj:
        raise EventRejected("missing field 'ts'")
    text = None
    if event_type == "comment":
        text = obj.get("text")
        if not isinstance(text, str):
            raise EventRejected("comment events need a string field 'text'")
    return Event(
        event_id=_string(obj, "event_id"),
        user_id=user_id,
        item_id=_string(obj, "item_id"),
        event_type=EVENT_TYPES[event_type],
        ts=parse_ts(obj["ts"]),
        dwell_ms=_dwell(obj) if event_type == "browse" else None,
        text=text,
        context=_context(obj),
    )


class ItemMessage:
    """One catalog record from the ``items`` topic."""

    __slots__ = ("item_id", "title", "text", "tags")

    def __init__(self, item_id: str, title: str, text: str, tags: tuple[str, ...]) -> None:
        self.item_id, self.title, self.text, self.tags = item_id, title, text, tags


def decode_item(raw: bytes | None) -> ItemMessage:
    obj = _load_object(raw)
    item_id = _string(obj, "item_id")
    title = _string(obj, "title", 1024)
    text = obj.get("text") or title
    if not isinstance(text, str):
        raise EventRejected("field 'text' must be a string")
    tags = obj.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise EventRejected("field 'tags' must be a list of strings")
    return ItemMessage(item_id, title, text, tuple(tags))


def encode_recommendations(
    user_id: str,
    event_ids: Sequence[str],
    items: Sequence[Recommendation],
    model_version: str,
    latency_ms: float,
    now: float,
) -> bytes:
    body = {
        "user_id": user_id,
        "ts": now,
        "event_id": event_ids[-1],
        "event_ids": list(event_ids),
        "items": [
            {"item_id": r.item_id, "score": round(float(r.score), 6), "reason": r.reason}
            for r in items
        ],
        "model_version": model_version,
        "latency_ms": round(latency_ms, 3),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
