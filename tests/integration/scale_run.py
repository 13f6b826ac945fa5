"""Two workers share the partitions, one is SIGKILLed, the other takes over, a third joins.

A harness (not a test) shared by ``test_scale.py`` and ``scripts/scale_runs.py`` (issue 20,
item 1), built on :mod:`tests.integration.kill_run` (its events, producer, watchers, drain and
final-state comparison): :func:`run_scale` runs the same events as a one-worker run, but

1. starts workers A and B (one group, their own state folders and web ports) and waits until
   each reports partitions on ``/metrics.json`` (``partitions_owned``; which ones: the keys of
   ``consumer_lag``);
2. starts the producer; once ``kill_at`` of the events are sent and B has sent a
   recommendation, SIGKILLs B. B leaves no group: the broker drops it only when its session
   times out (``INTEREST_STREAM_SESSION_TIMEOUT_S``, 6 s in the tests' deployments, heartbeats
   every 2 s), then A rejoins and recovers B's partitions' table from the changelog;
3. once A reports every partition (and ``join_after_s`` more), starts C on an empty state
   folder and waits until C reports partitions;
4. after the last event, asks C for every user (``/users/{id}``; the users C answers itself,
   not forwarded to their owner) and for how many recommendations it sent.

Then :func:`tests.integration.kill_run.run_scenario` drains and reads the changelog as for a
one-worker run, and :func:`tests.integration.kill_run.judge` compares it with one.

Each change (B killed, C joined) gets a :class:`Pause`: the longest gap between two
consecutive recommendations (all partitions, by broker timestamp) from the change to the next
one, and per event partition the longest an event sent then waited for its first
recommendation (a gap in one partition's recommendations may only mean that its users were
idle; an event's wait may not). C's change is timed from its process start: it joins the group
once it is healthy, so its rebalance shows some seconds into the window.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from streams.bench.scale import longest_gap
from tests.integration.conftest import Deployment, Worker
from tests.integration.kill_run import (
    Collected,
    RecWatcher,
    RunResult,
    Scenario,
    Sender,
    SentEvent,
    format_result,
    run_scenario,
)

__all__ = [
    "Pause",
    "ScalePlan",
    "ScaleResult",
    "format_scale",
    "format_scale_table",
    "run_scale",
]

LOOKBACK_S = 2.0
"""A change's events include those sent this long before it (fetched, not yet answered)."""


@dataclass(frozen=True, slots=True)
class ScalePlan:
    kill_at: float = 0.15
    """B is killed once this share of the events is sent (and B has sent a recommendation)."""
    join_after_s: float = 1.0
    """C starts this long after A reports every partition."""
    own_s: float = 60.0
    """The longest wait for a change of partitions to show on ``/metrics.json``."""


DEFAULT_PLAN = ScalePlan()


@dataclass(frozen=True, slots=True)
class Pause:
    """The stream around one change, in seconds (``at_s`` from the run's start)."""

    change: str
    at_s: float
    sent: int
    gap_s: float | None
    """Longest gap between two consecutive recommendations, from the change to the next."""
    gap_from_s: float | None
    """Where that gap began, from the change (negative: it began before)."""
    waits: dict[int, float]
    """Event partition -> the longest an event sent then (from ``LOOKBACK_S`` before the change
    to the next) waited for its first recommendation."""
    unanswered: int
    """Events sent then that no recommendation lists."""
    unanswered_at: str = ""
    """Where they are: ``topic[partition] first..last offset (count)``."""


@dataclass
class ScaleResult:
    run: RunResult
    owned_a: tuple[int, ...] = ()
    owned_b: tuple[int, ...] = ()
    """The event partitions A and B reported before B was killed."""
    takeover_s: float | None = None
    """From B's kill until A reported every partition (``/metrics.json`` is sampled every 2 s)."""
    owned_c: tuple[int, ...] = ()
    owned_a_after: tuple[int, ...] = ()
    """The event partitions C and A reported once C had some."""
    c_healthy_s: float | None = None
    c_owned_s: float | None = None
    """From C's start until it was healthy / reported partitions."""
    c_users: int = 0
    """Users whose ``/users/{id}`` C answered itself, with recommendations, after the stream."""
    c_recommendations: int = 0
    """Recommendation messages C sent (its ``recommendations_out``)."""
    pauses: tuple[Pause, ...] = ()
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the workers


def _owned(worker: Worker) -> tuple[int, tuple[int, ...]]:
    """(partitions_owned, the event partitions among the ``consumer_lag`` keys) of a worker."""
    try:
        status, body = worker.get("/metrics.json")
    except (OSError, ValueError):
        return 0, ()
    if status != 200:
        return 0, ()
    lag = body.get("consumer_lag") or {}
    return int(body.get("partitions_owned") or 0), tuple(
        sorted({int(k.rsplit("/", 1)[1]) for k in lag})
    )


def _wait_owned(
    workers: Sequence[Worker], want: Callable[[list[int]], bool], limit_s: float
) -> list[tuple[int, ...]]:
    """Poll until ``want(counts)`` holds for the workers' ``partitions_owned``; -> the
    partitions each reported last (the assertion says what they reported when it never did)."""
    deadline = time.monotonic() + limit_s
    while True:
        got = [_owned(w) for w in workers]
        if want([n for n, _ in got]) or time.monotonic() > deadline:
            if not want([n for n, _ in got]):
                raise AssertionError(f"partitions owned after {limit_s:.0f} s: {got}")
            return [parts for _, parts in got]
        time.sleep(0.3)


def _metric(worker: Worker, name: str) -> int:
    try:
        status, body = worker.get("/metrics.json")
    except (OSError, ValueError):
        return 0
    return int(body.get(name) or 0) if status == 200 else 0


class Plan:
    """The :data:`~tests.integration.kill_run.Disturb` of the scale scenario; it fills
    ``result`` (all but ``run`` and ``pauses``) and keeps the watcher and the sender."""

    def __init__(self, plan: ScalePlan, events: Sequence[SentEvent]) -> None:
        self.plan = plan
        self.events = events
        self.users = sorted({ev.user_id for ev in events})
        self.t0 = 0.0
        self.result = ScaleResult(run=None)  # type: ignore[arg-type]  # set by run_scale
        self.changes: list[tuple[str, float, int]] = []
        """(what, when (epoch s), events sent then)."""
        self.watcher: RecWatcher | None = None
        self.sender: Sender | None = None

    def __call__(
        self,
        dep: Deployment,
        watcher: RecWatcher,
        got: Collected,
        n_events: int,
        scenario: Scenario,
        t0: float,
    ) -> float:
        self.watcher, self.sender, self.t0 = watcher, got.sender, t0
        out, own_s = self.result, self.plan.own_s
        with ThreadPoolExecutor(2) as pool:
            a, b = pool.map(lambda name: dep.start_worker(name, home=dep.tmp / name), "ab")
        out.owned_a, out.owned_b = _wait_owned(
            [a, b], lambda n: min(n) > 0 and sum(n) >= dep.partitions, own_s
        )
        started = time.time()
        got.sender.start()
        first = _first_rec(watcher, started, scenario.recover_s)
        got.first_rec_s = None if first is None else first - started
        while got.sender.sent < self.plan.kill_at * n_events and got.sender.is_alive():
            time.sleep(0.05)
        deadline = time.monotonic() + scenario.recover_s
        while _metric(b, "recommendations_out") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        out.owned_a, out.owned_b = _wait_owned([a, b], lambda n: min(n) > 0, own_s)
        killed = time.time()
        self.changes.append(("B killed", killed, got.sender.sent))
        b.kill()
        _wait_owned([a], lambda n: n[0] >= dep.partitions, own_s + scenario.recover_s)
        out.takeover_s = time.time() - killed
        time.sleep(self.plan.join_after_s)
        joined = time.time()
        self.changes.append(("C joined", joined, got.sender.sent))
        c = dep.start_worker("c", home=dep.tmp / "c")
        out.c_healthy_s = time.time() - joined
        out.owned_c, out.owned_a_after = _wait_owned([c, a], lambda n: n[0] > 0, own_s)
        out.c_owned_s = time.time() - joined
        got.sender.join()
        out.c_users = self._served(c)
        out.c_recommendations = _metric(c, "recommendations_out")
        return joined

    def _served(self, worker: Worker) -> int:
        """How many users ``worker`` itself answers ``/users/{id}`` for, with recommendations
        (not forwarded to their owner: ``served_by``, where the worker says it, is its own)."""
        served = 0
        for user in self.users:
            status, body = worker.get(f"/users/{user}")
            by = str(body.get("served_by", f":{worker.port}")).rstrip("/")
            served += (status == 200 and bool(body.get("recommendations"))
                       and by.endswith(f":{worker.port}"))  # fmt: skip
        return served


def _first_rec(watcher: RecWatcher, since: float, limit_s: float) -> float | None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        first = watcher.first_after(since)
        if first is not None:
            return first
        time.sleep(0.1)
    return None


# --------------------------------------------------------------------------- the pauses


def pauses(plan: Plan) -> tuple[Pause, ...]:
    """A :class:`Pause` for each change of ``plan``, from its watcher's recommendations."""
    watcher, sender = plan.watcher, plan.sender
    assert watcher is not None and sender is not None
    with watcher.lock:
        answers = sorted(watcher.answers)
    first: dict[str, float] = {}
    for stamp, ids in answers:
        for event_id in ids:
            first.setdefault(event_id, stamp)
    stamps = [stamp for stamp, _ in answers]
    out = []
    for n, (what, at, sent) in enumerate(plan.changes):
        end = plan.changes[n + 1][1] if n + 1 < len(plan.changes) else sender.done_at or at
        gap, gap_from = longest_gap(stamps, at, end)
        waits: dict[int, float] = defaultdict(float)
        unanswered = 0
        missing: dict[tuple[str, int], list[int]] = defaultdict(list)
        for ev, sent_at in zip(plan.events, sender.sent_at, strict=False):
            if not at - LOOKBACK_S <= sent_at < end or ev.event_id not in sender.where:
                continue
            partition = sender.where[ev.event_id][1]
            if ev.event_id not in first:
                unanswered += 1
                topic, _, offset = sender.where[ev.event_id]
                missing[topic.rsplit(".", 1)[-1], partition].append(offset)
                continue
            waits[partition] = max(waits[partition], first[ev.event_id] - sent_at)
        gap_rel = None if gap_from is None else gap_from - at
        where = ", ".join(f"{t}[{p}] {min(o)}..{max(o)} ({len(o)})"
                          for (t, p), o in sorted(missing.items()))  # fmt: skip
        out.append(Pause(what, at - plan.t0, sent, gap, gap_rel, dict(sorted(waits.items())),
                         unanswered, where))  # fmt: skip
    return tuple(out)


# --------------------------------------------------------------------------- one run


def run_scale(
    dep: Deployment,
    catalog: Sequence[Any],
    events: Sequence[SentEvent],
    scenario: Scenario,
    plan: ScalePlan = DEFAULT_PLAN,
    label: str = "A+B, B killed, C joins",
) -> ScaleResult:
    """Run ``events`` through workers A, B and C of ``dep`` as ``plan`` says (``scenario``: the
    rate, the drain, the partitions; its ``kills`` are not used)."""
    disturb = Plan(plan, events)
    disturb.result.run = run_scenario(dep, catalog, events, scenario, label, disturb=disturb)
    disturb.result.pauses = pauses(disturb)
    return disturb.result


# --------------------------------------------------------------------------- printing


def _parts(parts: Sequence[int]) -> str:
    return ",".join(map(str, parts)) or "-"


def _s(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _waits(pause: Pause, owners: dict[int, str]) -> str:
    return " ".join(f"p{p}{owners.get(p, '?')} {w:.1f}" for p, w in pause.waits.items())


def _owners(**held: Sequence[int]) -> dict[int, str]:
    return {p: name for name, parts in held.items() for p in parts}


def format_scale(r: ScaleResult) -> str:
    """The one-worker figures of the run (:func:`~tests.integration.kill_run.format_result`),
    then the partitions each worker held and the pause at each change."""
    lines = [format_result(r.run),
             f"  before the kill: A held {_parts(r.owned_a)}, B {_parts(r.owned_b)}; A held every "
             f"partition {_s(r.takeover_s)} s after B's kill",
             f"  C: healthy {_s(r.c_healthy_s)} s after its start, partitions after "
             f"{_s(r.c_owned_s)} s: C held {_parts(r.owned_c)}, A {_parts(r.owned_a_after)}; "
             f"C answered /users/{{id}} with recommendations for {r.c_users} users and sent "
             f"{r.c_recommendations} recommendation messages"]  # fmt: skip
    owners = {"B killed": _owners(A=r.owned_a, B=r.owned_b),
              "C joined": _owners(A=r.owned_a_after, C=r.owned_c)}  # fmt: skip
    for p in r.pauses:
        waits = _waits(p, owners.get(p.change, {}))
        lines.append(f"  pause at {p.change} ({p.at_s:.1f} s into the run, {p.sent} events sent): "
                     f"longest gap between recommendations {_s(p.gap_s)} s (from "
                     f"{p.gap_from_s or 0:+.1f} s); longest wait of an event for its first "
                     f"recommendation, by event partition (owner before the change): {waits}; "
                     f"unanswered {p.unanswered}"
                     + (f" at {p.unanswered_at}" if p.unanswered_at else ""))  # fmt: skip
    lines.extend(f"  {note}" for note in r.notes)
    return "\n".join(lines)


HEADER = ("run", "sent", "lost", "twice", "differ", "unanswered", "A / B held",
          "A took all s", "kill: gap s, max wait B's / A's s", "C held", "C users / recs",
          "join: gap s, max wait s", "wall s")  # fmt: skip


def _max_wait(pause: Pause | None, parts: Sequence[int] | None = None) -> str:
    if pause is None:
        return "-"
    waits = [w for p, w in pause.waits.items() if parts is None or p in parts]
    return _s(max(waits)) if waits else "-"


def _row(r: ScaleResult) -> tuple[str, ...]:
    by = {p.change: p for p in r.pauses}
    kill, join = by.get("B killed"), by.get("C joined")
    run = r.run
    return (run.label, str(run.sent), str(run.lost), str(run.applied_twice),
            "-" if run.users_differing is None else str(run.users_differing),
            str(run.unanswered), f"{len(r.owned_a)} / {len(r.owned_b)}", _s(r.takeover_s),
            f"{_s(kill.gap_s if kill else None)}, {_max_wait(kill, r.owned_b)} / "
            f"{_max_wait(kill, r.owned_a)}", _parts(r.owned_c),
            f"{r.c_users} / {r.c_recommendations}",
            f"{_s(join.gap_s if join else None)}, {_max_wait(join)}", _s(run.wall_s))  # fmt: skip


def format_scale_table(results: Sequence[ScaleResult]) -> str:
    rows = [HEADER, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows)  # fmt: skip
