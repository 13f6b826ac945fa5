"""The topics' wire format: bytes in -> :mod:`streams.contract`; recommendations out -> bytes.

An input record is JSON; :func:`decode_event` and :func:`decode_item` load it and hand the
object to the one contract the data files share (:func:`streams.contract.parse_event`,
:func:`streams.contract.parse_item`). Each failure raises ``EventRejected``, whose reason names
the field and the problem and is the ``reason`` of the dead-letter record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from interest_state import Event, Recommendation
from streams.contract import MAX_USER_ID_LEN, ItemRecord, parse_event, parse_item, parse_type
from streams.errors import EventRejected

__all__ = ["decode_event", "decode_item", "encode_recommendations", "load_object"]



def load_object(raw: bytes | None) -> Any:
    """The JSON value of a message (the contract checks that it is an object)."""
    if raw is None:
        raise EventRejected("empty message value")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventRejected(f"not JSON: {exc}") from exc


def decode_event(
    raw: bytes | None,
    event_type: str | None,
    key: bytes | None,
    max_user_id_len: int = MAX_USER_ID_LEN,
) -> Event:
    """Validate one record of the ``event_type`` topic; raise ``EventRejected`` with the reason."""
    kind = parse_type(event_type)
    return parse_event(load_object(raw), kind, key=key, max_user_id_len=max_user_id_len)


def decode_item(raw: bytes | None) -> ItemRecord:
    """Validate one record of the ``items`` topic."""
    return parse_item(load_object(raw))


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
