"""A record's bytes as JSON, within the limits: strict UTF-8, nesting depth, integer length.

Used by the one contract (:mod:`streams.contract`, which re-exports :func:`load_json` and the
limits) for every topic record and file line; split from it to keep each module small.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

import numpy as np

from streams.errors import EventRejected

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "load_json", "long_int"]

MAX_INT_DIGITS = 20
"""The most digits of any JSON integer in a record (every 64-bit integer has at most 20)."""
MAX_DEPTH = 64
"""The deepest nesting of JSON arrays and objects in a record (an event's own is 2)."""


def long_int(name: str) -> str:
    """The reason for an integer field of more than :data:`MAX_INT_DIGITS` digits."""
    return f"field {name!r} is out of range: an integer of more than {MAX_INT_DIGITS} digits"


# --------------------------------------------------------------------------- bytes -> JSON

_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % (MAX_INT_DIGITS + 1))  # none: no int can be too long
# A string, or an unterminated one up to the end (the parser fails there): always matches, in
# one pass, so no input makes the scan quadratic.
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def load_json(raw: bytes) -> object:
    """The JSON value of one record (a topic's value, a file's line), within the limits.

    Strict UTF-8 (a leading BOM is skipped; UTF-16/32 JSON is refused, not guessed), nesting at
    most :data:`MAX_DEPTH` deep (checked before parsing), integers of at most
    :data:`MAX_INT_DIGITS` digits (a longer one is rejected naming its field). Raises
    ``EventRejected`` and nothing else, whatever the bytes; the caller bounds their size.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventRejected(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if "\x00" in text:
        raise EventRejected("not UTF-8 JSON: it holds NUL bytes (UTF-16 or UTF-32?)")
    if _nested_deeper(raw, MAX_DEPTH):
        raise EventRejected(f"JSON nested deeper than {MAX_DEPTH} levels")
    if _LONG_DIGITS.search(raw) is None:  # no integer can be too long: json's own speed
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise EventRejected(f"not JSON: {exc}") from None
    too_long: list[str] = []

    def parse_int(literal: str) -> object:
        if len(literal.lstrip("-")) <= MAX_INT_DIGITS:
            return int(literal)
        too_long.append(literal)
        return too_long  # a marker: never left in a value that is returned

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        for name, value in items:
            if value is too_long:
                raise EventRejected(long_int(name))
        return dict(items)

    try:
        value = json.loads(text, parse_int=parse_int, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise EventRejected(f"not JSON: {exc}") from None
    if too_long:  # in an array, or the whole value
        raise EventRejected(f"out of range: an integer of more than {MAX_INT_DIGITS} digits")
    return value


def _nested_deeper(raw: bytes, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (brackets inside strings don't count;
    counting every bracket over-estimates, so most records need nothing more)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = np.frombuffer(_JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKET), np.uint8)
    if brackets.size == 0:
        return False
    steps = np.where((brackets & 0x0F) == 0x0B, 1, -1)  # [ { open (0x5B, 0x7B); ] } close
    return bool(np.cumsum(steps).max() > limit)
