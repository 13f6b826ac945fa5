"""The topics' wire format: bytes in -> :mod:`streams.contract`; recommendations out -> bytes.

An input record is JSON; :func:`decode_event` and :func:`decode_item` bound its size, load it
with :func:`streams.contract.load_json` (strict UTF-8, nesting depth, integer size) and hand the
object to the one contract the data files share (:func:`streams.contract.parse_event`,
:func:`streams.contract.parse_item`). Each failure raises ``EventRejected`` (and nothing else,
whatever the bytes), whose reason names the field and the problem and is the ``reason`` of the
dead-letter record. The order of the checks on an event, first failure wins: the topic, the
key's size, the value (null, size, UTF-8, depth, JSON, the contract's fields, the key equal to
the ``user_id``), then a null key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from interest_state import Event, Recommendation
from streams.contract import (
    MAX_USER_ID_LEN,
    MAX_VALUE_BYTES,
    ItemRecord,
    load_json,
    parse_event,
    parse_item,
    parse_type,
)
from streams.errors import EventRejected

__all__ = [
    "NO_KEY",
    "decode_event",
    "decode_item",
    "encode_recommendations",
    "load_object",
    "max_key_bytes",
]

NO_KEY = "no key: events are keyed by user_id (the user's state lives in the key's partition)"


def max_key_bytes(max_user_id_len: int = MAX_USER_ID_LEN) -> int:
    """The longest key an event may have: its ``user_id`` in UTF-8, 4 bytes a character at most."""
    return 4 * max_user_id_len


def load_object(raw: bytes | None) -> Any:
    """The JSON value of a message (the contract checks that it is an object)."""
    if raw is None:
        raise EventRejected("no value (null): a record must be a JSON object")
    if len(raw) > MAX_VALUE_BYTES:
        raise EventRejected(f"value is {len(raw)} bytes, at most {MAX_VALUE_BYTES}")
    return load_json(raw)


def decode_event(
    raw: bytes | None,
    event_type: str | None,
    key: bytes | None,
    max_user_id_len: int = MAX_USER_ID_LEN,
    *,
    source: str = "",
    offset: int = -1,
) -> Event:
    """Validate one record of the ``event_type`` topic; raise ``EventRejected`` with the reason.
    ``source``/``offset``: where it was read (``"topic/partition"`` and the record's offset)."""
    kind = parse_type(event_type)
    if key is not None and len(key) > max_key_bytes(max_user_id_len):
        raise EventRejected(f"key is {len(key)} bytes, at most {max_key_bytes(max_user_id_len)}")
    event = parse_event(load_object(raw), kind, key=key, max_user_id_len=max_user_id_len,
                        source=source, offset=offset)
    if key is None:
        raise EventRejected(NO_KEY)
    return event


def decode_item(raw: bytes | None) -> ItemRecord:
    """Validate one record of the ``items`` topic. A null value is rejected like any bad value:
    what an ``items`` tombstone does is the catalog feed's to decide before it decodes."""
    return parse_item(load_object(raw))


def encode_recommendations(
    user_id: str,
    event_ids: Sequence[str],
    items: Sequence[Recommendation],
    model_version: str,
    latency_ms: float,
    now: float,
    variant: str = "A",
) -> bytes:
    """One ``recommendations`` message: ``model_version`` names the models that ranked this
    user's list, ``variant`` their A/B variant (``"A"`` without A/B, :mod:`streams.worker.ab`)."""
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
        "variant": variant,
        "latency_ms": round(latency_ms, 3),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
