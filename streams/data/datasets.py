"""Sample data and the project's on-disk data formats.

Two JSON Lines formats, each line the same JSON object a Kafka topic carries (see
``docs/data-formats.md``):

* items file  -> ``items`` topic:  ``{"item_id", "title", "text", "tags"}``
* events file -> ``events.*`` topics: ``{"event_id", "user_id", "item_id", "type", "ts",
  optional "dwell_ms", "text", "context"}``, in chronological order.

The sample data set is MovieLens-100k as shipped inside the ``recbole`` 1.2.1 wheel. The wheel
is fetched from the package index with pip (``--no-deps``; recbole is never installed) into a
cache folder and its two atomic files are read straight out of the zip.

This module uses the standard library only (no faust / aiokafka), so the offline tools and
tests can load data without a broker.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.errors import StreamError

__all__ = [
    "EVENT_TYPES",
    "MAX_USER_ID_LEN",
    "ML100K_EXPECTED",
    "DatasetError",
    "EventRecord",
    "ItemRecord",
    "event_to_obj",
    "fetch_recbole_wheel",
    "fetch_wheel",
    "item_to_obj",
    "load_ml100k",
    "prepare_ml100k",
    "rating_event",
    "read_atomic",
    "read_manifest",
    "sha256_file",
    "atomic_write_lines",
    "read_events",
    "read_items",
    "write_events",
    "write_items",
]

EVENT_TYPES: frozenset[str] = frozenset({"click", "browse", "comment"})
MAX_USER_ID_LEN = 128

RECBOLE_VERSION = "1.2.1"
RECBOLE_WHEEL = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
# sha256 of the wheel on PyPI (wheels there are immutable); checked after every download.
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_ML100K_DIR = "recbole/dataset_example/ml-100k"
ML100K_INTER = f"{_ML100K_DIR}/ml-100k.inter"
ML100K_ITEM = f"{_ML100K_DIR}/ml-100k.item"
ML100K_SOURCE = f"recbole=={RECBOLE_VERSION}:{_ML100K_DIR}"
ML100K_EXPECTED: Mapping[str, int] = {"users": 943, "items": 1682, "events": 100000}
CLICK_MIN_RATING = 4.0
_MANIFEST_VERSION = 1
_PIP_TIMEOUT_S = 600


class DatasetError(StreamError):
    """A data file or the sample data set cannot be read, written or fetched."""


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One catalogue item, as on the ``items`` topic."""

    item_id: str
    title: str
    text: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One user event, as on an ``events.<type>`` topic (``event_type`` is the JSON ``type``).

    ``context`` is a plain dict, so a record that carries one is not hashable.
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: float
    dwell_ms: int | None = None
    text: str | None = None
    context: dict[str, str] | None = None


# --------------------------------------------------------------------------- JSON <-> records


class _FieldError(ValueError):
    """A JSON object does not fit a format; the caller adds file and line."""


def _req_str(obj: Mapping[str, Any], key: str, *, max_len: int | None = None) -> str:
    if key not in obj:
        raise _FieldError(f"missing field {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise _FieldError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value:
        raise _FieldError(f"field {key!r} must not be empty")
    if max_len is not None and len(value) > max_len:
        raise _FieldError(f"field {key!r} is {len(value)} characters long (at most {max_len})")
    return value


def _parse_ts(value: object) -> float:
    if isinstance(value, bool):
        raise _FieldError("field 'ts' must be epoch seconds (number) or an ISO-8601 string")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise _FieldError(f"field 'ts' is not an ISO-8601 date-time: {value!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        ts = when.timestamp()
    else:
        raise _FieldError(
            "field 'ts' must be epoch seconds (number) or an ISO-8601 string, "
            f"got {type(value).__name__}"
        )
    if not math.isfinite(ts):
        raise _FieldError(f"field 'ts' must be finite, got {value!r}")
    return ts


def _item_from_obj(obj: object) -> ItemRecord:
    if not isinstance(obj, dict):
        raise _FieldError(f"expected a JSON object, got {type(obj).__name__}")
    item_id = _req_str(obj, "item_id")
    title = _req_str(obj, "title")
    text = obj.get("text")
    if text is None:
        text = title
    elif not isinstance(text, str):
        raise _FieldError(f"field 'text' must be a string, got {type(text).__name__}")
    tags_raw = obj.get("tags")
    if tags_raw is None:
        tags: tuple[str, ...] = ()
    elif isinstance(tags_raw, list) and all(isinstance(t, str) for t in tags_raw):
        tags = tuple(tags_raw)
    else:
        raise _FieldError("field 'tags' must be a list of strings")
    return ItemRecord(item_id=item_id, title=title, text=text, tags=tags)


def item_to_obj(item: ItemRecord) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "title": item.title,
        "text": item.text,
        "tags": list(item.tags),
    }


def _event_from_obj(obj: object) -> EventRecord:
    if not isinstance(obj, dict):
        raise _FieldError(f"expected a JSON object, got {type(obj).__name__}")
    event_id = _req_str(obj, "event_id")
    user_id = _req_str(obj, "user_id", max_len=MAX_USER_ID_LEN)
    item_id = _req_str(obj, "item_id")
    event_type = _req_str(obj, "type")
    if event_type not in EVENT_TYPES:
        raise _FieldError(f"field 'type' must be one of {sorted(EVENT_TYPES)}, got {event_type!r}")
    if "ts" not in obj:
        raise _FieldError("missing field 'ts'")
    ts = _parse_ts(obj["ts"])
    dwell = obj.get("dwell_ms")
    if dwell is not None and (isinstance(dwell, bool) or not isinstance(dwell, int) or dwell < 0):
        raise _FieldError(f"field 'dwell_ms' must be an integer >= 0, got {dwell!r}")
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise _FieldError(f"field 'text' must be a string, got {type(text).__name__}")
    if event_type == "comment" and not text:
        raise _FieldError("a comment event needs a non-empty 'text'")
    ctx_raw = obj.get("context")
    context: dict[str, str] | None = None
    if ctx_raw is not None:
        if not isinstance(ctx_raw, dict) or not all(isinstance(v, str) for v in ctx_raw.values()):
            raise _FieldError("field 'context' must be an object with string values")
        context = dict(ctx_raw)
    return EventRecord(
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        event_type=event_type,
        ts=ts,
        dwell_ms=dwell,
        text=text,
        context=context,
    )


def event_to_obj(event: EventRecord) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- file I/O


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
    """Write an items file (JSON Lines), atomically. Checks every record against the format."""
    path = Path(path)

    def lines() -> Iterator[str]:
        seen: set[str] = set()
        for n, item in enumerate(items, start=1):
            obj = item_to_obj(item)
            try:
                _item_from_obj(obj)
            except _FieldError as exc:
                raise DatasetError(f"{path}: item #{n} ({item.item_id!r}): {exc}") from None
            if item.item_id in seen:
                raise DatasetError(f"{path}: item #{n}: duplicate item_id {item.item_id!r}")
            seen.add(item.item_id)
            yield _dump(obj)

    atomic_write_lines(path, lines())


def write_events(path: Path, events: Iterable[EventRecord]) -> None:
    """Write an events file (JSON Lines), atomically.

    Every record is checked against the format, and the events must already be in
    chronological order (non-decreasing ``ts``): the file is never left half-written.
    """
    path = Path(path)

    def lines() -> Iterator[str]:
        prev_ts = -math.inf
        for n, event in enumerate(events, start=1):
            obj = event_to_obj(event)
            try:
                _event_from_obj(obj)
            except _FieldError as exc:
                raise DatasetError(f"{path}: event #{n} ({event.event_id!r}): {exc}") from None
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
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{path}:{lineno}: bad JSON: {exc.msg} (column {exc.colno})"
                ) from None
            yield lineno, obj


def read_items(path: Path) -> list[ItemRecord]:
    """Read an items file. Raises :class:`DatasetError` naming file and line on a bad line."""
    path = Path(path)
    items: list[ItemRecord] = []
    first_line: dict[str, int] = {}
    for lineno, obj in _iter_json_lines(path):
        try:
            item = _item_from_obj(obj)
        except _FieldError as exc:
            raise DatasetError(f"{path}:{lineno}: {exc}") from None
        if item.item_id in first_line:
            raise DatasetError(
                f"{path}:{lineno}: duplicate item_id {item.item_id!r} "
                f"(first on line {first_line[item.item_id]})"
            )
        first_line[item.item_id] = lineno
        items.append(item)
    return items


def read_events(path: Path) -> Iterator[EventRecord]:
    """Stream the events of an events file, in file order.

    Raises :class:`DatasetError` naming file and line on a bad line, or when an event is earlier
    than the one before it (the file must be chronological). Errors surface while iterating.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such events file")

    def gen() -> Iterator[EventRecord]:
        prev_ts = -math.inf
        prev_line = 0
        for lineno, obj in _iter_json_lines(path):
            try:
                event = _event_from_obj(obj)
            except _FieldError as exc:
                raise DatasetError(f"{path}:{lineno}: {exc}") from None
            if event.ts < prev_ts:
                raise DatasetError(
                    f"{path}:{lineno}: events are not in chronological order: ts={event.ts!r} "
                    f"is earlier than ts={prev_ts!r} on line {prev_line}; "
                    "sort the file by ts (stable) first"
                )
            prev_ts, prev_line = event.ts, lineno
            yield event

    return gen()


# --------------------------------------------------------------------------- MovieLens-100k


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_recbole_wheel(cache_dir: Path) -> Path:
    """Return ``cache_dir/wheels/recbole-1.2.1-py3-none-any.whl``, downloading it once."""
    return fetch_wheel(
        cache_dir, f"recbole=={RECBOLE_VERSION}", RECBOLE_WHEEL, RECBOLE_WHEEL_SHA256
    )


def fetch_wheel(cache_dir: Path, requirement: str, filename: str, sha256: str) -> Path:
    """Return ``cache_dir/wheels/<filename>``, downloading it once.

    Uses ``python -m pip download --no-deps --only-binary=:all: <requirement>`` (the package is
    not installed) and checks the wheel's sha256 before putting it into the cache.
    """
    wheels = Path(cache_dir) / "wheels"
    target = wheels / filename
    if target.is_file() and zipfile.is_zipfile(target):
        return target
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheels) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--quiet", requirement, "-d", tmp,
        ]  # fmt: skip
        try:
            proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
                cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatasetError(f"could not run pip to download {requirement}: {exc}") from exc
        got = Path(tmp) / filename
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise DatasetError(
                f"downloading {requirement} with pip failed (exit {proc.returncode}); is the "
                f"package index reachable? Or put {filename} into {wheels} by hand.\n{tail}"
            )
        digest = sha256_file(got)
        if digest != sha256:
            raise DatasetError(
                f"{filename}: sha256 {digest} does not match the expected {sha256}; "
                "refusing to use it"
            )
        os.replace(got, target)
    return target


def _decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # MovieLens titles were originally latin-1


def read_atomic(zf: zipfile.ZipFile, member: str, wanted: tuple[str, ...]) -> Iterator[list[str]]:
    """Yield the ``wanted`` columns of a RecBole atomic file (``name:type`` header, TSV)."""
    try:
        data = zf.read(member)
    except KeyError:
        raise DatasetError(f"{zf.filename}: has no {member}") from None
    lines = data.splitlines()
    if not lines:
        raise DatasetError(f"{zf.filename}:{member}: empty file")
    header = [col.split(":", 1)[0].strip() for col in _decode_line(lines[0]).split("\t")]
    missing = [w for w in wanted if w not in header]
    if missing:
        raise DatasetError(f"{zf.filename}:{member}: header {header} lacks columns {missing}")
    idx = [header.index(w) for w in wanted]
    for lineno, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        cols = _decode_line(raw).rstrip("\r").split("\t")
        if len(cols) != len(header):
            raise DatasetError(
                f"{zf.filename}:{member}:{lineno}: {len(cols)} columns, header has {len(header)}"
            )
        yield [cols[i].strip() for i in idx]


def rating_event(row: list[str], item_ids: Container[str], source: str, prefix: str) -> EventRecord:
    """A MovieLens rating row ``(user_id, item_id, rating, timestamp)`` as an event: rating
    >= 4 is a ``click``, below that a ``browse``; event id ``<prefix>-<user>-<item>-<ts>``."""
    user_id, item_id, rating_s, ts_s = row
    try:
        rating, ts = float(rating_s), float(ts_s)
    except ValueError:
        raise DatasetError(f"{source}: bad rating/timestamp {rating_s!r}/{ts_s!r}") from None
    if item_id not in item_ids:
        raise DatasetError(f"{source}: event refers to unknown item_id {item_id!r}")
    return EventRecord(
        event_id=f"{prefix}-{user_id}-{item_id}-{int(ts)}",
        user_id=user_id,
        item_id=item_id,
        event_type="click" if rating >= CLICK_MIN_RATING else "browse",
        ts=ts,
    )


def load_ml100k(cache_dir: Path) -> tuple[list[ItemRecord], list[EventRecord]]:
    """Load MovieLens-100k from the recbole wheel (fetched into ``cache_dir`` once).

    Items: ``text`` is ``"<title> (<year>) <genres>"``, ``tags`` the genres. Events: rating >= 4
    is a ``click``, below that a ``browse``; sorted by ``(ts, user_id, item_id)``.
    """
    wheel = fetch_recbole_wheel(cache_dir)
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{wheel}: not a readable wheel ({exc}); delete it to re-fetch") from exc
    with zf:
        item_rows = list(
            read_atomic(zf, ML100K_ITEM, ("item_id", "movie_title", "release_year", "class"))
        )
        inter_rows = list(
            read_atomic(zf, ML100K_INTER, ("user_id", "item_id", "rating", "timestamp"))
        )

    items: list[ItemRecord] = []
    item_ids: set[str] = set()
    for item_id, title, year, genres_s in item_rows:
        if not item_id or not title:
            raise DatasetError(f"{ML100K_ITEM}: item with empty id or title: {item_id!r}")
        if item_id in item_ids:
            raise DatasetError(f"{ML100K_ITEM}: duplicate item_id {item_id!r}")
        item_ids.add(item_id)
        genres = tuple(genres_s.split())
        parts = [title]
        if year.isdigit():  # one row says "unkonwn"
            parts.append(f"({year})")
        parts.extend(genres)
        items.append(ItemRecord(item_id=item_id, title=title, text=" ".join(parts), tags=genres))

    events: list[EventRecord] = []
    event_ids: set[str] = set()
    for row in inter_rows:
        event = rating_event(row, item_ids, ML100K_INTER, "ml100k")
        if event.event_id in event_ids:
            raise DatasetError(f"{ML100K_INTER}: duplicate event id {event.event_id!r}")
        event_ids.add(event.event_id)
        events.append(event)
    events.sort(key=lambda e: (e.ts, e.user_id, e.item_id))
    return items, events


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def prepare_ml100k(out_dir: Path, cache_dir: Path) -> tuple[Path, Path]:
    """Write ``out_dir/items.jsonl`` and ``out_dir/events.jsonl`` from MovieLens-100k.

    Idempotent: when both files exist and ``out_dir/manifest.json`` (source, counts, sha256 of
    both files) matches them, nothing is fetched or rewritten. Returns
    ``(items_path, events_path)``.
    """
    out_dir = Path(out_dir)
    items_path = out_dir / "items.jsonl"
    events_path = out_dir / "events.jsonl"
    manifest_path = out_dir / "manifest.json"

    manifest = read_manifest(manifest_path)
    if (
        manifest is not None
        and manifest.get("manifest_version") == _MANIFEST_VERSION
        and manifest.get("source") == ML100K_SOURCE
        and items_path.is_file()
        and events_path.is_file()
        and manifest.get("sha256")
        == {items_path.name: sha256_file(items_path), events_path.name: sha256_file(events_path)}
    ):
        return items_path, events_path

    items, events = load_ml100k(cache_dir)
    counts = {
        "users": len({e.user_id for e in events}),
        "items": len(items),
        "events": len(events),
        "click": sum(1 for e in events if e.event_type == "click"),
        "browse": sum(1 for e in events if e.event_type == "browse"),
    }
    wrong = {k: (counts[k], v) for k, v in ML100K_EXPECTED.items() if counts[k] != v}
    if wrong:
        raise DatasetError(f"MovieLens-100k counts (got, expected) are off: {wrong}")

    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # a crash below leaves no stale manifest behind
    write_items(items_path, items)
    write_events(events_path, events)
    new_manifest = {
        "manifest_version": _MANIFEST_VERSION,
        "source": ML100K_SOURCE,
        "wheel_sha256": RECBOLE_WHEEL_SHA256,
        "click_min_rating": CLICK_MIN_RATING,
        "counts": counts,
        "sha256": {
            items_path.name: sha256_file(items_path),
            events_path.name: sha256_file(events_path),
        },
    }
    atomic_write_lines(manifest_path, [json.dumps(new_manifest, indent=2, sort_keys=True)])
    return items_path, events_path
