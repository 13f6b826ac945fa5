"""MovieLens-100k, the sample data set, and what every MovieLens conversion shares.

MovieLens-100k as shipped inside the ``recbole`` 1.2.1 wheel: the wheel is fetched from the
package index with pip (``--no-deps``; recbole is never installed) into a cache folder, its two
atomic files are read straight out of the zip and written as the project's data files
(:mod:`streams.data.formats`). Rating >= 4 is a ``click``, below that a ``browse``; with
``dislikes`` (``interest-stream data ml-100k --dislikes``) a rating <= 2 is a ``dislike``, for
training and measuring a model that reads dislikes. MovieLens timestamps are epoch seconds, as
the event contract wants.

Shared with :mod:`streams.data.ml1m`: fetching a checked wheel, reading a RecBole atomic file,
a rating row as an event, and the ``manifest.json`` that makes a preparation idempotent.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Container, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from streams.contract import EventRecord, ItemRecord
from streams.data.formats import atomic_write_lines, write_events, write_items
from streams.errors import DatasetError

__all__ = [
    "CLICK_MIN_RATING",
    "DISLIKE_MAX_RATING",
    "MANIFEST_VERSION",
    "ML100K_EXPECTED",
    "ML100K_SOURCE",
    "fetch_recbole_wheel",
    "fetch_wheel",
    "load_ml100k",
    "manifest_matches",
    "prepare_ml100k",
    "prepared_paths",
    "rating_event",
    "read_atomic",
    "read_manifest",
    "sha256_file",
    "write_prepared",
]

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
DISLIKE_MAX_RATING = 2.0
"""With ``dislikes``: a rating at or below this is a ``dislike`` (1-2 of MovieLens's 1-5 stars)."""
MANIFEST_VERSION = 1
_PIP_TIMEOUT_S = 600


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


def rating_event(
    row: list[str], item_ids: Container[str], source: str, prefix: str, *, dislikes: bool = False
) -> EventRecord:
    """A MovieLens rating row ``(user_id, item_id, rating, timestamp)`` as an event: rating
    >= 4 is a ``click``, below that a ``browse`` (with ``dislikes``: <= 2 a ``dislike``); event
    id ``<prefix>-<user>-<item>-<ts>``."""
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
        event_type="click" if rating >= CLICK_MIN_RATING
        else "dislike" if dislikes and rating <= DISLIKE_MAX_RATING else "browse",
        ts=ts,
    )


def load_ml100k(
    cache_dir: Path, *, dislikes: bool = False
) -> tuple[list[ItemRecord], list[EventRecord]]:
    """Load MovieLens-100k from the recbole wheel (fetched into ``cache_dir`` once).

    Items: ``text`` is ``"<title> (<year>) <genres>"``, ``tags`` the genres. Events: rating >= 4
    is a ``click``, below that a ``browse`` (with ``dislikes``: <= 2 a ``dislike``); sorted by
    ``(ts, user_id, item_id)``.
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
        event = rating_event(row, item_ids, ML100K_INTER, "ml100k", dislikes=dislikes)
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


def prepared_paths(out_dir: Path) -> tuple[Path, Path]:
    """``(items.jsonl, events.jsonl)`` of a prepared data set's folder."""
    return Path(out_dir) / "items.jsonl", Path(out_dir) / "events.jsonl"


def manifest_matches(out_dir: Path, source: str) -> bool:
    """Whether ``out_dir`` holds both files of ``source`` as its ``manifest.json`` records them."""
    paths = prepared_paths(out_dir)
    manifest = read_manifest(Path(out_dir) / "manifest.json")
    return (
        manifest is not None
        and manifest.get("manifest_version") == MANIFEST_VERSION
        and manifest.get("source") == source
        and all(p.is_file() for p in paths)
        and manifest.get("sha256") == {p.name: sha256_file(p) for p in paths}
    )


def write_prepared(
    out_dir: Path,
    items: Sequence[ItemRecord],
    events: Sequence[EventRecord],
    manifest: Mapping[str, Any],
) -> tuple[Path, Path]:
    """Write both files, then ``manifest.json``: ``manifest`` plus the version and sha256s."""
    paths = prepared_paths(out_dir)
    manifest_path = Path(out_dir) / "manifest.json"
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # a crash below leaves no stale manifest behind
    write_items(paths[0], items)
    write_events(paths[1], events)
    full = {
        **manifest,
        "manifest_version": MANIFEST_VERSION,
        "sha256": {p.name: sha256_file(p) for p in paths},
    }
    atomic_write_lines(manifest_path, [json.dumps(full, indent=2, sort_keys=True)])
    return paths


def prepare_ml100k(
    out_dir: Path, cache_dir: Path, *, dislikes: bool = False
) -> tuple[Path, Path]:
    """Write ``out_dir/items.jsonl`` and ``out_dir/events.jsonl`` from MovieLens-100k (with
    ``dislikes``: ratings <= 2 as ``dislike`` events).

    Idempotent: when both files exist and ``out_dir/manifest.json`` (source, counts, sha256 of
    both files) matches them, nothing is fetched or rewritten. Returns
    ``(items_path, events_path)``.
    """
    source = ML100K_SOURCE + (f" (rating <= {DISLIKE_MAX_RATING:g}: dislike)" if dislikes else "")
    if manifest_matches(out_dir, source):
        return prepared_paths(out_dir)
    items, events = load_ml100k(cache_dir, dislikes=dislikes)
    counts = {
        "users": len({e.user_id for e in events}),
        "items": len(items),
        "events": len(events),
        **{kind: sum(1 for e in events if e.event_type == kind)
           for kind in ("click", "browse") + (("dislike",) if dislikes else ())},
    }  # fmt: skip
    wrong = {k: (counts[k], v) for k, v in ML100K_EXPECTED.items() if counts[k] != v}
    if wrong:
        raise DatasetError(f"MovieLens-100k counts (got, expected) are off: {wrong}")
    manifest = {
        "source": source,
        "wheel_sha256": RECBOLE_WHEEL_SHA256,
        "click_min_rating": CLICK_MIN_RATING,
        **({"dislike_max_rating": DISLIKE_MAX_RATING} if dislikes else {}),
        "counts": counts,
    }
    return write_prepared(out_dir, items, events, manifest)
