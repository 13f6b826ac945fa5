"""Check that ``loo.py`` splits a data set exactly as the project does, and a peer file fits it.

Run with the project's interpreter (it imports ``streams``)::

    .venv/bin/python scripts/peers/check_split.py --items items.jsonl --events events.jsonl \
        [--peer DIR/recbole-sasrec.json]

Compares, user by user, the history, validation and test items of ``loo.split`` with
``streams.offline.evaluate.load_dataset``, the statistics, and the training-events fingerprint with
``streams.offline.rankers.events_fingerprint``. With ``--peer``: the file's fingerprint, one ranked
list per evaluated user and stage, and that no masked list holds an item of its ranking input.
Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import loo

from streams.offline.evaluate import load_dataset
from streams.offline.rankers import events_fingerprint


def compare(items: Path, events: Path) -> tuple[list[str], str, dict[str, list[str]]]:
    """Differences (empty when none), the fingerprint, each user's context per stage."""
    project = load_dataset(items, events)
    splits, train, stats = loo.split(loo.read_items(items), loo.read_events(events))
    problems: list[str] = []
    mine = loo.events_fingerprint(train)
    theirs = events_fingerprint(project.train.events)
    if mine != theirs:
        problems.append(f"fingerprint: loo {mine}, project {theirs}")
    project_stats = {k: v for k, v in project.stats.items() if not k.endswith("_path")}
    if stats != project_stats:
        problems.append(f"statistics: loo {stats}, project {project_stats}")
    ours = [
        (s.user_id, s.context("test"), s.target("validation"), s.target("test")) for s in splits
    ]
    proj = [
        (u.user_id, [e.item_id for e in (*u.history, u.validation)], u.validation.item_id,
         u.test.item_id)
        for u in project.users
    ]  # fmt: skip
    if ours != proj:
        first = next(i for i, (a, b) in enumerate(zip(ours, proj, strict=False)) if a != b)
        problems.append(f"users differ from #{first}: loo {ours[first]}, project {proj[first]}")
    contexts = {f"{stage}\t{s.user_id}": s.context(stage) for s in splits for stage in loo.STAGES}
    return problems, theirs, contexts


def check_peer(path: Path, fingerprint: str, contexts: dict[str, list[str]]) -> list[str]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    problems: list[str] = []
    if data.get("split_fingerprint") != fingerprint:
        problems.append(f"{path}: split_fingerprint {data.get('split_fingerprint')}")
    for key, context in contexts.items():
        stage, user = key.split("\t", 1)
        ranked = data.get("ranked", {}).get(stage, {}).get(user)
        if ranked is None:
            problems.append(f"{path}: no {stage} list for user {user!r}")
        elif set(ranked) & set(context):
            problems.append(f"{path}: {stage} list of {user!r} holds items of its context")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=Path, required=True)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--peer", type=Path, action="append", default=[])
    args = p.parse_args()
    problems, fingerprint, contexts = compare(args.items, args.events)
    for peer in args.peer:
        problems += check_peer(peer, fingerprint, contexts)
    for line in problems[:20]:
        print(f"DIFFERENT {line}")
    if not problems:
        users = len(contexts) // len(loo.STAGES)
        print(f"same split: {users} users, training-events fingerprint {fingerprint}")
        for peer in args.peer:
            print(f"peer file fits: {peer}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
