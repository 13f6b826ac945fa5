"""The one contract of an event and of an item: the JSON object a topic carries and a file holds.

The topic decoder (:mod:`streams.worker.schemas`, bytes -> JSON -> here) and the file readers
and writers (:mod:`streams.data.formats`, one JSON object a line -> here) both parse with
:func:`parse_event` and :func:`parse_item`, so every file the CLI accepts is one the worker
accepts, and the other way round. A failure raises :class:`~streams.errors.EventRejected`
whose ``reason`` names the field and the problem: on a topic that sentence is the dead-letter
reason, in a file it follows ``<file>:<line>:``.

Declared once, here: the event type names (those of :class:`interest_state.EventType`, in
lower case) and every limit (lengths, sizes, depth, how far in the future ``ts`` may be). What
the worker ignores is ignored everywhere: ``dwell_ms`` is read on browse events only, ``text`` on
comments only. Every string taken is valid Unicode (no lone surrogate). :func:`load_json` turns
a record's bytes into JSON within the limits; no input makes any of these raise anything else.

Records: :class:`ItemRecord` is an item; :class:`EventRecord` is an event as the JSON has it
(``type`` a string, ``context`` optional), the form the data files and the offline tools use;
the worker works on :class:`interest_state.Event` (:meth:`EventRecord.to_event`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from interest_state import Event, EventType
from streams.errors import EventRejected
from streams.json_bytes import MAX_DEPTH, MAX_INT_DIGITS, load_json, long_int

__all__ = [
    "EVENT_TYPES", "MAX_CONTEXT_FIELDS", "MAX_DEPTH", "MAX_DWELL_MS", "MAX_FUTURE_S",
    "MAX_ID_CHARS", "MAX_INT_DIGITS", "MAX_TEXT_CHARS", "MAX_TITLE_CHARS", "MAX_USER_ID_LEN",
    "MAX_VALUE_BYTES", "MAX_VECTOR_LEN", "EventRecord", "ItemRecord", "catalog_vector_length",
    "event_to_obj", "item_to_obj", "load_json", "parse_event", "parse_item", "parse_ts",
    "parse_type",
]

EVENT_TYPES: Mapping[str, EventType] = MappingProxyType({k.name.lower(): k for k in EventType})
"""The ``type`` names (``browse``, ``click``, ``comment``) and the kinds they stand for."""
MAX_USER_ID_LEN = 128
"""The default most characters of a ``user_id`` (operators may set ``Settings.max_user_id_len``)."""
MAX_ID_CHARS = 256
"""The most characters of an ``event_id`` or ``item_id``."""
MAX_TITLE_CHARS = 1024
MAX_CONTEXT_FIELDS = 32
MAX_FUTURE_S = 86_400.0
"""How far past now an event's ``ts`` may be (further means milliseconds were sent)."""
MAX_TEXT_CHARS = 65_536
"""The most characters of a comment's or an item's ``text`` (the encoder reads a few hundred)."""
MAX_DWELL_MS = 2**53 - 1
"""The largest ``dwell_ms``: the largest integer that every JSON reader holds exactly."""
MAX_VALUE_BYTES = 1_048_576
"""The largest record value :mod:`streams.worker.schemas` parses (1 MiB), checked before parsing."""
MAX_VECTOR_LEN = 4096
"""The most numbers in an item's ``vector`` (one length per catalog: the catalog feed and the
training data check that every item's has the same)."""


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One catalogue item, as on the ``items`` topic and in an items file."""

    item_id: str
    title: str
    text: str
    tags: tuple[str, ...] = ()
    vector: tuple[float, ...] | None = None
    """Optional finite floats (e.g. an image embedding), the same length for every item."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One user event as its JSON has it (``event_type`` is the JSON ``type``); ``context`` is
    a plain dict, so a record that carries one is not hashable."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: float
    dwell_ms: int | None = None
    text: str | None = None
    context: dict[str, str] | None = None

    @classmethod
    def from_event(cls, event: Event) -> EventRecord:
        return cls(event_id=event.event_id, user_id=event.user_id, item_id=event.item_id,
                   event_type=event.event_type.name.lower(), ts=event.ts,
                   dwell_ms=event.dwell_ms, text=event.text,
                   context=dict(event.context) or None)  # fmt: skip

    def to_event(self) -> Event:
        """The event the stream's update rule takes; ``EventRejected`` for an unknown type."""
        return Event(event_id=self.event_id, user_id=self.user_id, item_id=self.item_id,
                     event_type=parse_type(self.event_type), ts=self.ts,
                     dwell_ms=self.dwell_ms, text=self.text,
                     context=self.context or {})  # fmt: skip


# --------------------------------------------------------------------------- fields


_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_LIMIT = 10**MAX_INT_DIGITS


def _show(value: object) -> str:
    """``repr(value)``, cut to 64 characters: a reason never echoes a client's megabyte."""
    try:
        shown = repr(value)
    except ValueError:  # an int too long for str()
        return "<a very long integer>"
    return shown if len(shown) <= 64 else shown[:60] + "..."


def _object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EventRejected(f"expected a JSON object, got {type(value).__name__}")
    return value


def _unicode(name: str, value: str) -> str:
    """``value``, unless it holds a lone surrogate (it would fail ``.encode()`` downstream)."""
    found = None if value.isascii() else _SURROGATE.search(value)
    if found is not None:
        raise EventRejected(
            f"field {name!r} is not valid Unicode: a lone surrogate at character {found.start()}"
        )
    return value


def _text(name: str, value: str, max_chars: int) -> str:
    """A non-empty string field of at most ``max_chars`` characters, valid Unicode."""
    if not value:
        raise EventRejected(f"field {name!r} is empty")
    if len(value) > max_chars:
        raise EventRejected(f"field {name!r} is {len(value)} chars, at most {max_chars} allowed")
    return _unicode(name, value)


def _string(obj: Mapping[str, Any], name: str, max_chars: int = MAX_ID_CHARS) -> str:
    if name not in obj:
        raise EventRejected(f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, str):
        raise EventRejected(f"field {name!r} must be a string, got {type(value).__name__}")
    return _text(name, value, max_chars)


def parse_type(name: object) -> EventType:
    """The kind an event type name (a topic's, or a record's) stands for."""
    if not isinstance(name, str) or name not in EVENT_TYPES:
        raise EventRejected(f"unknown event type {_show(name)}")
    return EVENT_TYPES[name]


def parse_ts(value: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string (naive times are taken as UTC)."""
    if isinstance(value, bool):
        raise EventRejected("field 'ts' must be epoch seconds or ISO-8601, got a boolean")
    if isinstance(value, int) and abs(value) >= _INT_LIMIT:
        raise EventRejected(long_int("ts"))
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
        raise EventRejected(f"field 'ts' must be a finite, non-negative time, got {_show(value)}")
    if ts > time.time() + MAX_FUTURE_S:
        raise EventRejected(
            f"field 'ts' is more than a day in the future ({_show(value)}): epoch seconds "
            "expected, not milliseconds"
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
            f"field 'context' has {len(value)} fields, at most {MAX_CONTEXT_FIELDS}")  # fmt: skip
    if not all(isinstance(v, str) for v in value.values()):
        raise EventRejected("field 'context' must map names to strings")
    for name, text in value.items():
        _unicode("context", name)
        _unicode("context", text)
    return dict(value)


def _dwell(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("dwell_ms")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventRejected(f"field 'dwell_ms' must be an integer >= 0, got {_show(value)}")
    if abs(value) >= _INT_LIMIT:
        raise EventRejected(long_int("dwell_ms"))
    if value < 0:
        raise EventRejected(f"field 'dwell_ms' must be an integer >= 0, got {value}")
    if value > MAX_DWELL_MS:
        raise EventRejected(f"field 'dwell_ms' is out of range: at most {MAX_DWELL_MS}")
    return int(value)


def _comment_text(obj: Mapping[str, Any]) -> str:
    text = obj.get("text")
    if not isinstance(text, str):
        raise EventRejected("comment events need a string field 'text'")
    if not text.strip():
        raise EventRejected("field 'text' is empty: a comment needs the user's words")
    return _text("text", text, MAX_TEXT_CHARS)


def _kind(obj: Mapping[str, Any], topic_type: EventType | None) -> EventType:
    """The event's kind: the topic's, which a ``type`` field may repeat; in a file, ``type``."""
    declared = obj.get("type")
    if topic_type is None:
        if declared is None:
            raise EventRejected("missing field 'type'")
        if not isinstance(declared, str) or declared not in EVENT_TYPES:
            raise EventRejected(
                f"field 'type' must be one of {sorted(EVENT_TYPES)}, got {_show(declared)}"
            )
        return EVENT_TYPES[declared]
    name = topic_type.name.lower()
    if declared is not None and declared != name:
        raise EventRejected(f"unknown event type {_show(declared)} on the {name} topic")
    return topic_type


# --------------------------------------------------------------------------- records


def parse_event(
    obj: object,
    topic_type: EventType | None = None,
    *,
    key: bytes | None = None,
    max_user_id_len: int = MAX_USER_ID_LEN,
    source: str = "", offset: int = -1,  # fmt: skip
) -> Event:
    """Validate one event's JSON object; raise ``EventRejected`` with the reason.

    ``topic_type`` is the kind of the topic the event came from (``None`` for a file line,
    whose own ``type`` field then decides); ``key`` the Kafka key, which must be the user id
    (``None``: not checked; the topic decoder refuses a null key after the fields);
    ``source``/``offset``: where the record was read (:class:`interest_state.Event`)."""
    fields = _object(obj)
    kind = _kind(fields, topic_type)
    user_id = _string(fields, "user_id", max_user_id_len)
    if key is not None and key != user_id.encode():
        raise EventRejected("message key must be the user_id (state lives in the key's partition)")
    if "ts" not in fields:
        raise EventRejected("missing field 'ts'")
    text = _comment_text(fields) if kind is EventType.COMMENT else None
    return Event(
        event_id=_string(fields, "event_id"),
        user_id=user_id,
        item_id=_string(fields, "item_id"),
        event_type=kind,
        ts=parse_ts(fields["ts"]),
        dwell_ms=_dwell(fields) if kind is EventType.BROWSE else None,
        text=text,
        context=_context(fields),
        source=source,
        offset=offset,
    )


def parse_item(obj: object) -> ItemRecord:
    """Validate one item's JSON object: an id and a title; ``text`` falls back on the title."""
    fields = _object(obj)
    item_id = _string(fields, "item_id")
    title = _string(fields, "title", MAX_TITLE_CHARS)
    text = fields.get("text") or title
    if not isinstance(text, str):
        raise EventRejected("field 'text' must be a string")
    tags = fields.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise EventRejected("field 'tags' must be a list of strings")
    for tag in tags:
        _unicode("tags", tag)
    return ItemRecord(item_id, title, _text("text", text, MAX_TEXT_CHARS), tuple(tags),
                      _vector(fields.get("vector")))  # fmt: skip


def _vector(value: object) -> tuple[float, ...] | None:
    """An item's optional ``vector``: 1..MAX_VECTOR_LEN finite numbers (``null``: none)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise EventRejected(f"field 'vector' must be a non-empty list of numbers: {_show(value)}")
    if len(value) > MAX_VECTOR_LEN:
        raise EventRejected(f"field 'vector' has {len(value)} numbers, at most {MAX_VECTOR_LEN}")
    for n, x in enumerate(value):
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise EventRejected(f"field 'vector' must hold numbers, got {_show(x)} at {n}")
        if (isinstance(x, int) and abs(x) >= _INT_LIMIT) or not math.isfinite(x):
            raise EventRejected(f"field 'vector' must hold finite numbers, got {_show(x)} at {n}")
    return tuple(float(x) for x in value)


def catalog_vector_length(item: ItemRecord, length: int | None) -> int | None:
    """The catalog's vector length after ``item`` (``length``: the one so far, ``None``: no
    item had a vector yet); ``EventRejected`` when the item's ``vector`` has another length."""
    if item.vector is None:
        return length
    if length is not None and len(item.vector) != length:
        raise EventRejected(
            f"field 'vector' has {len(item.vector)} numbers, the catalog's vectors {length}"
        )
    return len(item.vector)


def item_to_obj(item: ItemRecord) -> dict[str, Any]:
    """The JSON object of an item (``vector`` only when it has one)."""
    obj: dict[str, Any] = {"item_id": item.item_id, "title": item.title, "text": item.text,
           "tags": list(item.tags)}  # fmt: skip
    return obj if item.vector is None else {**obj, "vector": list(item.vector)}


def event_to_obj(event: EventRecord) -> dict[str, Any]:
    """The JSON object of an event; optional fields that are ``None`` are left out."""
    obj: dict[str, Any] = {
        "event_id": event.event_id,
        "user_id": event.user_id,
        "item_id": event.item_id,
        "type": event.event_type,
        "ts": float(event.ts),
    }
    if event.dwell_ms is not None:
        obj["dwell_ms"] = event.dwell_ms
    if event.text is not None:
        obj["text"] = event.text
    if event.context is not None:
        obj["context"] = dict(event.context)
    return obj
