"""The project's data files: JSON Lines of items and of events, read and written.

Each line is the same JSON object a Kafka topic carries, checked by the one contract the
worker's topic decoder uses (:mod:`streams.contract`; see ``docs/data-formats.md``):

* items file  -> ``items`` topic:  ``{"item_id", "title", "text", "tags", optional "vector"}``
* events file -> ``events.*`` topics: ``{"event_id", "user_id", "item_id", "type", "ts",
  optional "dwell_ms", "text", "context"}``, in chronological order.

On top of the contract a file has three rules of its own: item ids are unique, every item's
``vector`` has the same length, and events never go back in time. Errors name the file and
the line. No faust or aiokafka here, so the offline tools and tests load data without a broker.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from streams.contract import (
    MAX_USER_ID_LEN,
    EventRecord,
    ItemRecord,
    catalog_vector_length,
    event_to_obj,
    item_to_obj,
    load_json,
    parse_event,
    parse_item,
)
from streams.errors import DatasetError, EventRejected

__all__ = [
    "atomic_write_lines",
    "read_events",
    "read_items",
    "write_events",
    "write_items",
]


def atomic_write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (each without newline) to ``path`` via a temp file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for line in lines:
                fh.write(line)
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)  # mkstemp makes 0600; data files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _dump(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def write_items(path: Path, items: Iterable[ItemRecord]) -> None:
    """Write an items file (JSON Lines), atomically. Checks every record against the contract."""
    path = Path(path)

    def lines() -> Iterator[str]:
        seen: set[str] = set()
        for n, item in enumerate(items, start=1):
            obj = item_to_obj(item)
            try:
                parse_item(obj)
            except EventRejected as exc:
                raise DatasetError(f"{path}: item #{n} ({item.item_id!r}): {exc.reason}") from None
            if item.item_id in seen:
                raise DatasetError(f"{path}: item #{n}: duplicate item_id {item.item_id!r}")
            seen.add(item.item_id)
            yield _dump(obj)

    atomic_write_lines(path, lines())


def write_events(path: Path, events: Iterable[EventRecord]) -> None:
    """Write an events file (JSON Lines), atomically.

    Every record is checked against the contract, and the events must already be in
    chronological order (non-decreasing ``ts``): the file is never left half-written.
    """
    path = Path(path)

    def lines() -> Iterator[str]:
        prev_ts = -math.inf
        for n, event in enumerate(events, start=1):
            obj = event_to_obj(event)
            try:
                parse_event(obj)
            except EventRejected as exc:
                raise DatasetError(
                    f"{path}: event #{n} ({event.event_id!r}): {exc.reason}"
                ) from None
            if obj["ts"] < prev_ts:
                raise DatasetError(
                    f"{path}: event #{n} ({event.event_id!r}) has ts={obj['ts']!r}, earlier "
                    f"than the event before it (ts={prev_ts!r}); events must be chronological"
                )
            prev_ts = obj["ts"]
            yield _dump(obj)

    atomic_write_lines(path, lines())


def _iter_json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """Yield (line number, parsed JSON) for every non-blank line; errors name file and line."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                obj = load_json(raw)  # the topic decoder's: UTF-8, depth, integer limits
            except EventRejected as exc:
                raise DatasetError(f"{path}:{lineno}: {exc.reason}") from None
            yield lineno, obj


def read_items(path: Path) -> list[ItemRecord]:
    """Read an items file. Raises :class:`DatasetError` naming file and line on a bad line."""
    path = Path(path)
    items: list[ItemRecord] = []
    first_line: dict[str, int] = {}
    vector_length: int | None = None
    for lineno, obj in _iter_json_lines(path):
        try:
            item = parse_item(obj)
            vector_length = catalog_vector_length(item, vector_length)
        except EventRejected as exc:
            raise DatasetError(f"{path}:{lineno}: {exc.reason}") from None
        if item.item_id in first_line:
            raise DatasetError(
                f"{path}:{lineno}: duplicate item_id {item.item_id!r} "
                f"(first on line {first_line[item.item_id]})"
            )
        first_line[item.item_id] = lineno
        items.append(item)
    return items


def read_events(path: Path, *, max_user_id_len: int = MAX_USER_ID_LEN) -> Iterator[EventRecord]:
    """Stream the events of an events file, in file order.

    Raises :class:`DatasetError` naming file and line on a line the worker would dead-letter,
    or when an event is earlier than the one before it (the file must be chronological).
    Errors surface while iterating. ``max_user_id_len``: the worker's ``Settings`` value.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such events file")

    def gen() -> Iterator[EventRecord]:
        prev_ts = -math.inf
        prev_line = 0
        for lineno, obj in _iter_json_lines(path):
            try:
                event = parse_event(obj, max_user_id_len=max_user_id_len)
            except EventRejected as exc:
                raise DatasetError(f"{path}:{lineno}: {exc.reason}") from None
            if event.ts < prev_ts:
                raise DatasetError(
                    f"{path}:{lineno}: events are not in chronological order: ts={event.ts!r} "
                    f"is earlier than ts={prev_ts!r} on line {prev_line}; "
                    "sort the file by ts (stable) first"
                )
            prev_ts, prev_line = event.ts, lineno
            yield EventRecord.from_event(event)

    return gen()
