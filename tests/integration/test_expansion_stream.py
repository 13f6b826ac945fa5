"""Interest expansion in the stream (issue 18, items 4 and 6) on a real broker and worker.

* The short-term interest reacts within one event: a sci-fi fan's burst of comments about
  children's films moves their list toward the comments' topic from the first comment (the
  mean cosine of the list's items to the comment's words rises), the list quotes the comment
  ("matches your comment '<words>'"), and each comment moves it further; the genre itself
  (Children's) enters the list from the second comment on (one comment's interest, weight 2,
  does not yet win the interest slot from the history's heavier ones).
* A new item published to ``items`` is in the list of a user it suits within seconds, with no
  restart; the seconds from publishing to the first list that holds it are printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders import TextEncoder
from tests.integration.conftest import Deployment
from tests.integration.kafka_client import Record, catalog_records, consume, produce

pytestmark = pytest.mark.integration

SCI_FI = ("50", "172", "181", "89", "96")
"""Star Wars, The Empire Strikes Back, Return of the Jedi, Blade Runner, Terminator 2."""
KIDS = "Children's"
COMMENTS = (
    ("1", "a sweet animated cartoon for little kids, the whole family will love it"),
    ("71", "lovely animated Disney film for children, songs and talking animals"),
    ("95", "fun cartoon musical for kids and families, great songs"),
    ("102", "charming animated kids movie about cats, perfect for children"),
)
"""A burst of comments: Toy Story, The Lion King, Aladdin, The Aristocats (all Children's)."""
NEW_ITEM: dict[str, Any] = {
    "item_id": "new-sf-1",
    "title": "Star Wars: Rebels of the Outer Rim",
    "text": "Star Wars: Rebels of the Outer Rim (1998) Action Adventure Sci-Fi War",
    "tags": ["Action", "Adventure", "Sci-Fi", "War"],
}
"""An item the catalog has never had, close to the sci-fi fan's interests."""


def _event(dep: Deployment, topic: str, event_id: str, item: str, ts: float, **more: Any
           ) -> tuple[str, bytes, bytes]:  # fmt: skip
    body = {"event_id": event_id, "user_id": "fan", "item_id": item, "ts": ts, **more}
    return topic, b"fan", json.dumps(body).encode()


def _answer(dep: Deployment, event_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """The fan's recommendation message that folded in ``event_id`` (items with reasons)."""

    def covers(record: Record) -> bool:
        if record.key != b"fan" or record.value is None:
            return False
        return event_id in json.loads(record.value).get("event_ids", ())

    records = consume(dep.bootstrap, dep.topics.recommendations,
                      lambda rs: any(covers(r) for r in rs), timeout_s=timeout_s)  # fmt: skip
    found = [json.loads(r.value or b"") for r in records if covers(r)]
    assert found, f"no recommendation for {event_id} in {timeout_s} s"
    return dict(found[-1])


def _share(items: Sequence[dict[str, Any]], tags: dict[str, set[str]], tag: str) -> float:
    """The share of ``items`` tagged ``tag``."""
    return sum(tag in tags.get(i["item_id"], set()) for i in items) / len(items)


def _closeness(items: Sequence[dict[str, Any]], vectors: dict[str, Any], topic: Any) -> float:
    """The mean cosine of ``items``' text vectors to ``topic`` (unit vectors)."""
    return float(np.mean([vectors[i["item_id"]] @ topic for i in items]))


def test_a_burst_of_comments_moves_the_list_to_their_topic_from_the_first_comment(
    deployment: Deployment, catalog: list[Any], model_dir: Path
) -> None:
    dep = deployment
    produce(dep.bootstrap, catalog_records(dep.topics.items, catalog))
    tags = {i.item_id: set(i.tags) for i in catalog}
    encoder = TextEncoder.load(model_dir, provider="cpu")
    vectors = dict(zip([i.item_id for i in catalog], encoder.encode([i.text for i in catalog]),
                       strict=True))  # fmt: skip
    topic = encoder.encode([COMMENTS[0][1]])[0]  # what the user wrote
    worker = dep.start_worker("w1")
    now = time.time() - 600
    history = [_event(dep, dep.topics.click, f"c{n}", item, now + n)
               for n, item in enumerate(SCI_FI)]  # fmt: skip
    produce(dep.bootstrap, history)
    lists = [_answer(dep, f"c{len(SCI_FI) - 1}")["items"]]
    for n, (item, text) in enumerate(COMMENTS):
        sent = time.monotonic()
        produce(dep.bootstrap, [_event(dep, dep.topics.comment, f"m{n}", item, now + 60 + n,
                                       text=text)])  # fmt: skip
        lists.append(_answer(dep, f"m{n}")["items"])
        print(f"comment {n + 1}: its list after {time.monotonic() - sent:.2f} s")
    shares = [_share(items, tags, KIDS) for items in lists]
    close = [_closeness(items, vectors, topic) for items in lists]
    print(f"{KIDS} share of the list, before and after each comment: "
          + ", ".join(f"{s:.0%}" for s in shares))  # fmt: skip
    print("mean cosine of the list to the comment's words: " + ", ".join(f"{c:.3f}" for c in close))
    for items in lists:
        print([(i["item_id"], i["reason"][:40]) for i in items])

    # The first comment moves the list toward its topic, and says so; every comment after it
    # moves it further, and from the second on the topic's genre fills the list.
    assert close[1] > close[0] + 0.02, (close, worker.tail())
    steps = zip(close[1:-1], close[2:], strict=True)
    assert all(b >= a - 0.01 for a, b in steps) and close[-1] > close[1] + 0.1, close
    assert any(i["reason"] == f"matches your comment '{COMMENTS[0][1]}'" for i in lists[1]), lists
    assert shares[2] > shares[0] and shares[-1] >= shares[0] + 0.3, shares
    status, body = worker.get("/users/fan")
    assert status == 200 and body["events"] == len(SCI_FI) + len(COMMENTS)


def test_a_new_item_is_recommended_within_seconds_without_a_restart(
    deployment: Deployment, catalog: list[Any]
) -> None:
    dep = deployment
    produce(dep.bootstrap, catalog_records(dep.topics.items, catalog))
    worker = dep.start_worker("w1")
    now = time.time() - 600
    produce(dep.bootstrap, [_event(dep, dep.topics.click, f"c{n}", clicked, now + n)
                            for n, clicked in enumerate(SCI_FI[:3])])  # fmt: skip
    item = str(NEW_ITEM["item_id"])
    before = [i["item_id"] for i in _answer(dep, "c2")["items"]]
    assert item not in before

    published = time.monotonic()
    produce(dep.bootstrap, [(dep.topics.items, item.encode(), json.dumps(NEW_ITEM).encode())])
    # One event after another from the fan until a list holds the new item (the catalog feed
    # and the events are separate consumers: the first events may come before the item).
    listed, n = None, 0
    while listed is None and time.monotonic() - published < 30:
        n += 1
        produce(dep.bootstrap, [_event(dep, dep.topics.click, f"again{n}", SCI_FI[n % 3],
                                       now + 10 + n)])  # fmt: skip
        items = _answer(dep, f"again{n}")["items"]
        listed = next((i for i in items if i["item_id"] == item), None)
    took = time.monotonic() - published
    assert listed is not None, (took, worker.tail())
    print(f"\nnew item published -> first list holding it: {took:.2f} s ({n} events sent), "
          f"at place {items.index(listed) + 1} of {len(items)}")  # fmt: skip
    assert listed["reason"].startswith("because you clicked"), listed
    assert took < 15
    assert worker.proc.poll() is None and len(dep.workers) == 1  # the same worker, no restart
