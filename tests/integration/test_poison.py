"""No record stops a worker (issue 21, item 1), tried as an operator would.

One real worker on the embedded broker gets every kind of malformed record of
:mod:`tests.integration.poison_records` between good ml-100k events, on the event topics and on
the compacted ``items`` topic. It must stay up, send each bad record to the dead-letter topic
exactly once with a reason (the original bytes, or a bounded prefix that says it was cut),
apply every good event, keep its counters consistent, apply an ``items`` tombstone as a delete,
and come back after a restart on the same state folder without dying on the same records.

Each test prints a table of kind -> outcome (``pytest -s``) and repeats it in its assertion.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from streams.data.movielens import prepare_ml100k
from tests.integration.conftest import HOME, Deployment, Worker
from tests.integration.kafka_client import Record, produce
from tests.integration.poison_records import (
    Bad,
    Sent,
    Watch,
    bad_events,
    bad_items,
    create_topics,
    log_excerpt,
    metrics,
    produce_each,
    start,
    up_problem,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

Rec = tuple[str, bytes | None, bytes | None]


# --------------------------------------------------------------------------- inputs


def setup_topics(dep: Deployment, catalog: list[Any]) -> None:
    t = dep.topics
    create_topics(dep.bootstrap, [t.click, t.browse, t.comment, t.items], dep.partitions, t.items)
    produce(
        dep.bootstrap,
        [
            (t.items, i.item_id.encode(), json.dumps({"item_id": i.item_id, "title": i.title,
                                                      "text": i.text}).encode())  # fmt: skip
            for i in catalog
        ],
    )


def good_events(
    dep: Deployment, catalog: list[Any], users: int, per_user: int, skip_users: int = 0
) -> list[Rec]:
    """The first ``per_user`` ml-100k events on catalogue items of ``users`` users."""
    _, events_path = prepare_ml100k(HOME / "data" / "ml-100k", HOME / "cache")
    known = {i.item_id for i in catalog}
    by_user: dict[str, list[dict[str, Any]]] = {}
    with open(events_path) as lines:
        for line in lines:
            event = json.loads(line)
            if event["item_id"] in known:
                by_user.setdefault(event["user_id"], []).append(event)
            full = [u for u, es in by_user.items() if len(es) >= per_user]
            if len(full) >= skip_users + users:
                break
    chosen = [u for u, es in by_user.items() if len(es) >= per_user][skip_users:]
    topic = {"click": dep.topics.click, "browse": dep.topics.browse}
    return [
        (topic[e["type"]], e["user_id"].encode(), json.dumps(e).encode())
        for u in chosen
        for e in by_user[u][:per_user]
    ]


def good_comments(dep: Deployment, records: Sequence[Rec], item_id: str) -> list[Rec]:
    users = sorted({k.decode() for _, k, _ in records if k})[:5]
    texts = ["loved the space battles", "too slow and sad", "a funny film for kids"]
    return [
        (dep.topics.comment, u.encode(), json.dumps({
            "event_id": f"good-comment-{n}", "user_id": u, "item_id": item_id,
            "ts": time.time() - 300, "text": texts[n % 3]}).encode())  # fmt: skip
        for n, u in enumerate(users)
    ]


def topic_of(dep: Deployment, bad: Bad) -> str:
    return getattr(dep.topics, bad.topic)  # type: ignore[no-any-return]


def event_id(record: Rec) -> str:
    return json.loads(record[2] or b"{}")["event_id"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- judging


def verdict(bad: Bad, sent: Sent, letters: list[Record], applied: set[str]) -> list[str]:
    """What is wrong with the outcome of one bad record ([] when it is what the issue asks)."""
    if sent.error is not None:
        return []  # the broker refused it: it never reached the worker (shown in the table)
    problems = [f"on the DLQ {len(letters)} times"] if len(letters) != 1 else []
    if f"poison-{bad.kind}" in applied:
        problems.append("APPLIED: its event_id is in a recommendation")
    for letter in letters[:1]:
        if not letter.headers.get("dlq.reason"):
            problems.append("no dlq.reason")
        cut = any(name.startswith("dlq.trunc") for name in letter.headers)
        if bad.oversized and not cut:
            problems.append("oversized but no dlq.trunc* header")
        if cut:
            problems += _cut_problems(bad, letter)
        else:
            if letter.value != bad.value:
                got = "null" if letter.value is None else f"{len(letter.value)} bytes"
                problems.append(f"value not the original (got {got})")
            if letter.key != bad.key:
                problems.append("key not the original")
    return problems


def _cut_problems(bad: Bad, letter: Record) -> list[str]:
    def prefix(got: bytes | None, orig: bytes | None) -> bool:
        return got is None or (orig is not None and orig.startswith(got))

    size = len(letter.key or b"") + len(letter.value or b"")
    problems = []
    if not (prefix(letter.key, bad.key) and prefix(letter.value, bad.value)):
        problems.append("cut key/value is not a prefix of the original")
    if size >= len(bad.key or b"") + len(bad.value or b"") or size > 1_000_000:
        problems.append(f"says it is cut but carries {size} bytes")
    return problems


def where(sent: Sent) -> str:
    if sent.error is not None:
        return f"REFUSED by broker ({sent.error[:40]})"
    return f"p{sent.partition}@{sent.offset}"


def table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def outcome_rows(
    bads: Sequence[Bad], sent: Sequence[Sent], watch: Watch, worker: Worker
) -> tuple[list[tuple[str, ...]], list[str]]:
    """Table rows (kind, topic, where, dlq, reason, verdict) and the failing kinds' lines."""
    letters, applied = watch.letters(), watch.applied()
    exited = " (the worker had exited)" if worker.proc.poll() is not None else ""
    rows: list[tuple[str, ...]] = []
    failures: list[str] = []
    for bad, s in zip(bads, sent, strict=True):
        got = letters.get((s.topic, s.partition, s.offset), [])
        problems = verdict(bad, s, got, applied)
        if not got and problems:
            problems[0] += exited
        reason = got[0].headers.get("dlq.reason", b"").decode(errors="replace") if got else "-"
        if s.error is not None:
            outcome = "not tested: the broker refused it"
        else:
            outcome = "ok" if not problems else "FAIL: " + "; ".join(problems)
        rows.append((bad.kind, bad.topic, where(s), str(len(got)), reason[:60], outcome))
        if problems:
            failures.append(f"{bad.kind}: {'; '.join(problems)}")
    return rows, failures


# --------------------------------------------------------------------------- the tests


def interleave(good: Sequence[Rec], bad: Sequence[Rec]) -> list[Rec]:
    """A third of ``good`` first, one good after each bad while they last, the rest after."""
    third = len(good) // 3
    middle, after = list(good[third: 2 * third]), list(good[2 * third:])
    mixed: list[Rec] = list(good[:third])
    for record in bad:
        mixed.append(record)
        if middle:
            mixed.append(middle.pop(0))
    return [*mixed, *middle, *after]


@pytest.fixture
def watch(deployment: Deployment) -> Iterator[Watch]:
    """The deployment's dead-letter and recommendation topics, read from the start."""
    w = Watch(deployment)
    yield w
    w.close()


def test_no_event_record_stops_the_worker(
    deployment: Deployment, catalog: list[Any], watch: Watch
) -> None:
    dep = deployment
    setup_topics(dep, catalog)
    worker, problem = start(dep, "poison")
    assert worker is not None, problem
    good = good_events(dep, catalog, users=30, per_user=5)
    good += good_comments(dep, good, catalog[1].item_id)
    bads = bad_events(catalog[0].item_id, time.time() - 600)
    bad_recs = [(topic_of(dep, b), b.key, b.value) for b in bads]
    records = interleave(good, bad_recs)
    sent_all = produce_each(dep.bootstrap, records)
    position = {id(r): n for n, r in enumerate(records)}
    sent = [sent_all[position[id(r)]] for r in bad_recs]
    good_ids = {event_id(r) for r in good}
    finished = watch.wait(worker, sent, good_ids, timeout_s=150)

    problems = [] if finished else ["not every bad record was dead-lettered / good one applied"]
    problems += [p for p in [up_problem(worker)] if p]
    rows, failures = outcome_rows(bads, sent, watch, worker)
    problems += failures
    missing = sorted(good_ids - watch.applied())
    if missing:
        problems.append(f"{len(missing)} good events never applied, e.g. {missing[:5]}")
    delivered = sum(s.error is None for s in sent)
    want = {"events_in": len(good) + delivered, "events_applied": len(good),
            "dead_letters": delivered, "duplicates": 0}  # fmt: skip
    got = metrics(worker, want)
    if {k: got.get(k) for k in want} != want:
        problems.append(f"/metrics counters {({k: got.get(k) for k in want})}, expected {want}")
    problems += restart_on_the_same_records(dep, worker, bads, bad_recs, catalog, watch, rows)
    report = table(rows, ("kind", "topic", "where", "dlq", "reason", "outcome", "after restart"))
    print(f"\n{len(bads)} kinds of bad event record, {len(good)} good events\n{report}\n"
          + ("\n".join(problems) or "every check ok"))
    assert not problems, "\n".join([*problems, report, log_excerpt(worker)])


def restart_on_the_same_records(
    dep: Deployment, worker: Worker, bads: Sequence[Bad], bad_recs: Sequence[Rec],
    catalog: list[Any], watch: Watch, rows: list[tuple[str, ...]],
) -> list[str]:  # fmt: skip
    """Kill -9 the worker, send every bad record again, restart on the same state folder: it
    must come up, dead-letter them again, apply new good events, and stay up."""
    worker.kill()
    good = good_events(dep, catalog, users=5, per_user=3, skip_users=30)
    again = produce_each(dep.bootstrap, [*bad_recs, *good])[: len(bad_recs)]
    second, problem = start(dep, "poison-restart", home="poison")
    rows[:] = [(*row, "-") for row in rows]
    if second is None:
        return [problem or "restart failed"]
    done = watch.wait(second, again, {event_id(r) for r in good}, timeout_s=90)
    letters = watch.letters()
    failures = []
    for n, (bad, s) in enumerate(zip(bads, again, strict=True)):
        ok = s.error is not None or (s.topic, s.partition, s.offset) in letters
        rows[n] = (*rows[n][:-1], "ok" if ok else "FAIL: not dead-lettered")
        if not ok:
            failures.append(f"after restart: {bad.kind} not dead-lettered")
    if not done:
        failures.append("after restart: not every record was dead-lettered / good one applied")
    up = up_problem(second, seconds=5)
    return [*failures, *([f"after restart: {up}\n{log_excerpt(second)}"] if up else [])]


def popular(bodies: Sequence[dict[str, Any]]) -> tuple[str, list[str]]:
    """The item most often in users' latest recommendation, and the users it was shown to."""
    latest = {b["user_id"]: [i["item_id"] for i in b["items"]] for b in bodies}
    counts = Counter(i for items in latest.values() for i in items)
    assert counts, "no recommendation was sent at all"
    item = counts.most_common(1)[0][0]
    return item, sorted(u for u, items in latest.items() if item in items)


def follow_up(dep: Deployment, bodies: Sequence[dict[str, Any]], users: Sequence[str],
              gone: str, tag: str) -> list[Rec]:  # fmt: skip
    """Three clicks per user on items they were recommended (never ``gone``)."""
    latest = {b["user_id"]: [i["item_id"] for i in b["items"]] for b in bodies}
    out: list[Rec] = []
    for u in users:
        for n, item in enumerate([i for i in latest[u] if i != gone][:3]):
            event = {"event_id": f"{tag}-{u}-{n}", "user_id": u, "item_id": item,
                     "ts": time.time() - 60}  # fmt: skip
            out.append((dep.topics.click, u.encode(), json.dumps(event).encode()))
    return out


def recommended_after(watch: Watch, item: str, since: float, ids: set[str]) -> list[str]:
    """Users sent ``item`` after ``since`` (epoch s) or in an answer to one of ``ids``."""
    return sorted(
        {b["user_id"] for b in watch.bodies()
         if (b.get("ts", 0) >= since or ids & set(b.get("event_ids", [])))
         and item in {i["item_id"] for i in b["items"]}}
    )  # fmt: skip


def wait_gone(worker: Worker, item: str, users: Sequence[str], timeout_s: float) -> float | None:
    """When no /users/{u} of ``users`` recommends ``item`` any more (None: not in time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.proc.poll() is None:
        try:
            shown = [worker.get(f"/users/{u}")[1].get("recommendations", []) for u in users]
        except (OSError, ValueError):
            shown = [[{"item_id": item}]]
        if all(item not in {r["item_id"] for r in recs} for recs in shown):
            return time.time()
        time.sleep(0.5)
    return None


def test_bad_items_never_stop_a_worker_and_a_tombstone_deletes_the_item(
    deployment: Deployment, catalog: list[Any], watch: Watch
) -> None:
    dep = deployment
    setup_topics(dep, catalog)
    early = bad_items("at-start")  # on the topic before the worker starts
    early_sent = produce_each(dep.bootstrap, [(dep.topics.items, b.key, b.value) for b in early])
    worker, problem = start(dep, "items")
    if worker is None:
        pytest.fail(down_report(dep, watch, early, early_sent, problem or ""))
    good = good_events(dep, catalog, users=20, per_user=6)
    produce(dep.bootstrap, good)
    good_ids = {event_id(r) for r in good}
    watch.wait(worker, early_sent, good_ids, timeout_s=90)
    problem = up_problem(worker)
    if problem:
        pytest.fail(down_report(dep, watch, early, early_sent, problem))
    item, users = popular(watch.bodies())

    late = bad_items("running")  # while it runs
    sent = produce_each(dep.bootstrap, [*((dep.topics.items, b.key, b.value) for b in late),
                                        (dep.topics.items, item.encode(), None)])
    late_sent, tombstone = sent[:-1], sent[-1]
    sent_at = time.time()
    gone_at = wait_gone(worker, item, users, timeout_s=30)
    post = follow_up(dep, watch.bodies(), users, item, "post")
    produce(dep.bootstrap, post)
    post_ids = {event_id(r) for r in post}
    watch.wait(worker, [*early_sent, *late_sent], good_ids | post_ids, timeout_s=60)

    bads, bad_sent = [*early, *late], [*early_sent, *late_sent]
    rows, problems = outcome_rows(bads, bad_sent, watch, worker)
    deleted = tombstone_problems(watch, item, tombstone, gone_at or sent_at + 30, post_ids)
    if gone_at is None:
        deleted.append(f"/users/{{u}} still recommend {item!r} 30 s after its tombstone")
    problems += deleted
    problems += [p for p in [up_problem(worker)] if p]
    if not (good_ids | post_ids) <= watch.applied():
        missing = sorted((good_ids | post_ids) - watch.applied())
        problems.append(f"{len(missing)} good events never applied, e.g. {missing[:5]}")
    delivered = sum(s.error is None for s in bad_sent)
    want = {"events_applied": len(good) + len(post), "dead_letters": delivered}
    got = metrics(worker, want)
    if {k: got.get(k) for k in want} != want:
        problems.append(f"/metrics counters {({k: got.get(k) for k in want})}, expected {want}")
    problems += restart_keeps_the_item_deleted(dep, worker, watch, item, users)
    letters = watch.letters().get((tombstone.topic, tombstone.partition, tombstone.offset), [])
    rows.append(("items-tombstone", "items", where(tombstone), str(len(letters)), "-",
                 "FAIL: " + "; ".join(deleted) if deleted else "ok: deletes the item"))  # fmt: skip
    report = table(rows, HEAD)
    print(f"\nitems: {len(bads)} bad records; tombstone of item {item!r} ({len(users)} users were "
          f"recommended it)\n{report}\n" + ("\n".join(problems) or "every check ok"))
    assert not problems, "\n".join([*problems, report, log_excerpt(worker)])


HEAD = ("kind", "topic", "where", "dlq", "reason", "outcome")


def down_report(
    dep: Deployment, watch: Watch, bads: Sequence[Bad], sent: Sequence[Sent], why: str
) -> str:
    """Why the worker is down, the table of the bad records so far, and its log's errors."""
    worker = dep.workers[-1]
    watch.dlq.poll(1.0)
    rows, _ = outcome_rows(bads, sent, watch, worker)
    return "\n".join([why.splitlines()[0], table(rows, HEAD), log_excerpt(worker)])


def tombstone_problems(
    watch: Watch, item: str, tombstone: Sent, since: float, post_ids: set[str]
) -> list[str]:
    """A tombstone is a delete: not a dead letter, and the item is never recommended again."""
    if tombstone.error is not None:
        return [f"the broker refused the items tombstone: {tombstone.error}"]
    problems = []
    letters = watch.letters().get((tombstone.topic, tombstone.partition, tombstone.offset), [])
    if letters:
        reason = letters[0].headers.get("dlq.reason", b"").decode(errors="replace")
        problems.append(f"the items tombstone was dead-lettered ({reason!r}), not applied")
    shown = recommended_after(watch, item, since, post_ids)
    if shown:
        problems.append(f"deleted item {item!r} still recommended after its tombstone to {shown}")
    return problems


def restart_keeps_the_item_deleted(
    dep: Deployment, worker: Worker, watch: Watch, item: str, users: Sequence[str]
) -> list[str]:
    """Restart on the same state folder (every bad item is read again): it comes up, stays up,
    and the deleted item stays deleted."""
    worker.stop()
    second, problem = start(dep, "items-restart", home="items")
    if second is None:
        return [problem or "restart failed"]
    post = follow_up(dep, watch.bodies(), users, item, "post2")
    produce(dep.bootstrap, post)
    post_ids = {event_id(r) for r in post}
    watch.wait(second, [], post_ids, timeout_s=60)
    problems = []
    if not post_ids <= watch.applied():
        problems.append("after restart: new good events not applied")
    shown = recommended_after(watch, item, float("inf"), post_ids)
    if shown or wait_gone(second, item, users, timeout_s=5) is None:
        problems.append(f"after restart: deleted item {item!r} recommended again ({shown})")
    up = up_problem(second, seconds=5)
    return [*problems, *([f"after restart: {up}\n{log_excerpt(second)}"] if up else [])]
