"""The project's leave-one-out protocol, re-implemented without the project's packages.

The peers run in their own environments, so they cannot import ``streams``; this module mirrors
``streams/offline/evaluate.py: load_dataset`` / ``_split``, ``streams/contract.py: parse_event``
(how ``ts`` is read) and ``streams/offline/rankers.py: events_fingerprint``, and the evaluator's
metric definitions. ``check_split.py`` compares it with the project's own code on a pair of files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

EVENT_TYPES = frozenset({"click", "browse", "comment"})
K_VALUES = (10, 20)
STAGES = ("validation", "test")


class PeerError(Exception):
    """Bad input files, or RecBole not seeing the data the way it was written."""


# --------------------------------------------------------------------------- data and split


@dataclass(frozen=True, slots=True)
class Event:
    user_id: str
    item_id: str
    event_type: str
    ts: float


@dataclass(frozen=True, slots=True)
class UserSplit:
    user_id: str
    history: tuple[Event, ...]
    valid: Event
    test: Event

    def context(self, stage: str) -> list[str]:
        events = self.history if stage == "validation" else (*self.history, self.valid)
        return [e.item_id for e in events]

    def target(self, stage: str) -> str:
        return (self.valid if stage == "validation" else self.test).item_id


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            line = raw.decode("utf-8")
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise PeerError(f"{path}:{lineno}: expected a JSON object")
                yield lineno, obj


def _field(path: Path, lineno: int, obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise PeerError(f"{path}:{lineno}: field {key!r} must be a non-empty string")
    return value


def parse_ts(value: object) -> float:
    """Epoch seconds as ``streams.contract.parse_ts`` reads them (ISO-8601 without offset: UTC)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"ts must be a number or an ISO-8601 string, got {value!r}")
    if isinstance(value, str):
        when = datetime.fromisoformat(value)
        ts = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    else:
        ts = float(value)
    if not math.isfinite(ts):
        raise ValueError(f"ts must be finite, got {value!r}")
    return ts


def read_items(path: Path) -> list[str]:
    ids = [_field(path, n, obj, "item_id") for n, obj in _json_lines(path)]
    if len(set(ids)) != len(ids):
        raise PeerError(f"{path}: duplicate item_id")
    if not ids:
        raise PeerError(f"{path}: the catalog is empty")
    return ids


def read_events(path: Path) -> list[Event]:
    events: list[Event] = []
    for n, obj in _json_lines(path):
        kind = _field(path, n, obj, "type")
        if kind not in EVENT_TYPES:
            raise PeerError(f"{path}:{n}: unknown type {kind!r}")
        try:
            ts = parse_ts(obj.get("ts"))
        except ValueError as exc:
            raise PeerError(f"{path}:{n}: {exc}") from None
        if events and ts < events[-1].ts:
            raise PeerError(f"{path}:{n}: events are not in chronological order; sort by ts first")
        user, item = _field(path, n, obj, "user_id"), _field(path, n, obj, "item_id")
        events.append(Event(user, item, kind, ts))
    return events


def split(
    items: Sequence[str], events: Sequence[Event]
) -> tuple[list[UserSplit], dict[str, list[Event]], dict[str, int]]:
    """Leave-one-out by time; returns the splits, every user's training sequence, statistics."""
    known = set(items)
    by_user: dict[str, list[Event]] = {}
    for e in events:
        if e.item_id in known:
            by_user.setdefault(e.user_id, []).append(e)
    splits: list[UserSplit] = []
    train: dict[str, list[Event]] = {}
    for user, user_events in by_user.items():
        ordered = sorted(user_events, key=lambda e: e.ts)  # stable: file order breaks ties
        if len(ordered) < 3:
            train[user] = ordered
            continue
        splits.append(UserSplit(user, tuple(ordered[:-2]), ordered[-2], ordered[-1]))
        train[user] = ordered[:-2]
    kept = sum(len(v) for v in by_user.values())
    stats = {
        "items": len(items),
        "events": len(events),
        "events_unknown_item": len(events) - kept,
        "users": len(by_user),
        "users_skipped_short": len(by_user) - len(splits),
        "users_evaluated": len(splits),
        "train_events": sum(len(v) for v in train.values()),
    }
    return splits, train, stats


def events_fingerprint(train: dict[str, list[Event]]) -> str:
    """``streams.offline.rankers.events_fingerprint`` of the training events, in our order."""
    ordered = sorted((e for seq in train.values() for e in seq), key=lambda e: e.ts)
    digest = hashlib.sha256()
    for e in ordered:
        digest.update(f"{e.user_id}\t{e.item_id}\t{e.event_type}\t{e.ts!r}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- metrics


def metrics_from_ranks(ranks: Sequence[float]) -> dict[str, tuple[float, float]]:
    """HR/NDCG@10,20 and MRR@10 (mean, standard error over users); a rank of inf is a miss."""
    r = np.asarray(ranks, dtype=float)
    per_user = {}
    for k in K_VALUES:
        hit = r <= k
        per_user[f"HR@{k}"] = hit.astype(float)
        per_user[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(np.minimum(r, k) + 1), 0.0)
    per_user[f"MRR@{K_VALUES[0]}"] = np.where(r <= K_VALUES[0], 1.0 / np.minimum(r, 1e9), 0.0)
    n = len(r)
    return {
        m: (float(v.mean()), float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0)
        for m, v in per_user.items()
    }


def ranks_in(ranked: Sequence[Sequence[str]], targets: Sequence[str]) -> list[float]:
    return [
        lst.index(t) + 1 if t in lst else math.inf for lst, t in zip(ranked, targets, strict=True)
    ]
