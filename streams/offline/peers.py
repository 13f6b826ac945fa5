"""Peer systems in the offline evaluation: rankings another system stored for this split.

A peer (RecBole's SASRec, say) is trained and run elsewhere on the same leave-one-out split and
writes, per stage, each user's ranked item ids; :class:`PeerModel` wraps the file as a
:class:`streams.offline.rankers.Recommender`, so the peer shows up in the same table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streams.errors import EvaluationError
from streams.offline.rankers import TrainData, UserContext, events_fingerprint

__all__ = ["PeerModel"]


Rankings = dict[str, dict[str, list[str]]]
"""stage -> user id -> item ids, best first."""


class PeerModel:
    """The stored rankings of a peer system, read from a JSON file::

        {"model": name, "split_fingerprint": sha256 of this split's training events,
         "ranked": {"validation": {user_id: [item ids, best first]}, "test": {...}},
         "ranked_unmasked": {...}}          # optional: the same without the seen mask

    ``fit`` refuses a file made on another split; ``rank`` returns the stored lists (without
    the user's context items when masked; ``ranked_unmasked`` when unmasked and present), so
    the peer shows up in the same table.
    """

    def __init__(
        self, name: str, fingerprint: str, ranked: Rankings, unmasked: Rankings | None = None
    ) -> None:
        self.name, self.fingerprint = name, fingerprint
        self.ranked, self.unmasked = ranked, unmasked

    @classmethod
    def load(cls, path: Path) -> PeerModel:
        try:
            data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
            name, fingerprint = str(data["model"]), str(data["split_fingerprint"])
            ranked = _rankings(data["ranked"])
            unmasked = _rankings(data["ranked_unmasked"]) if "ranked_unmasked" in data else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EvaluationError(f"peer file {path}: not a peer ranking ({exc!r})") from exc
        return cls(name, fingerprint, ranked, unmasked)

    def fit(self, data: TrainData) -> None:
        mine = events_fingerprint(data.events)
        if self.fingerprint != mine:
            raise EvaluationError(
                f"peer {self.name}: ranked on another split (fingerprint "
                f"{self.fingerprint[:12]}, this split {mine[:12]}); export it from the same "
                "training events"
            )

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        source = self.ranked if exclude_seen or self.unmasked is None else self.unmasked
        out: list[list[str]] = []
        for user in users:
            stored = source.get(user.stage, {}).get(user.user_id)
            if stored is None:
                raise EvaluationError(
                    f"peer {self.name}: no {user.stage or '(no stage)'} ranking for user "
                    f"{user.user_id!r}"
                )
            seen = user.seen() if exclude_seen else frozenset()
            out.append([item for item in stored if item not in seen][:k])
        return out


def _rankings(raw: Any) -> Rankings:
    return {
        str(stage): {str(user): [str(item) for item in items] for user, items in per_user.items()}
        for stage, per_user in raw.items()
    }
