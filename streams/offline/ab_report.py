"""``interest-stream ab report``: the A/B test's result, read back from the topics.

The workers' ``/metrics`` show each variant's online HR@10 since their start; this report reads
the whole log instead, so it covers every worker, every restart and the whole experiment. It
reads the ``recommendations`` topic and the event topics from the start (a consumer outside any
group, like :mod:`streams.offline.from_kafka`: the workers' group is untouched) up to their end
offsets when it starts, and scores the events as the workers do
(:mod:`streams.worker.online_quality`):

- A user's messages are in one partition (key ``user_id``), so their log order is the order
  they were sent. An event is scored against the user's last message *before the first message
  that names it* in ``event_ids``: the list the user had when the event happened. It is a hit at
  rank ``r`` when its item is the ``r``-th of that list's first ``k``; the variant (and model
  version) of that list gets the score. An event named again later (a redelivery after a
  restart, a client's duplicate) is scored once; one with no list before it is *unscored*.
- HR@k = hits / scored events and MRR@k = the mean of ``1/rank`` (a miss counts 0), per variant.
- **B - A with a 95 % confidence interval: a bootstrap over users.** One user's events are
  correlated (the same taste, lists that follow each other), so the user is the unit: each of
  ``resamples`` rounds draws each variant's users with replacement and recomputes the ratio of
  sums; the interval is the 2.5th and 97.5th percentile of the differences (percentile method,
  fixed seed: the same log gives the same interval). Users are split by variant, so the two
  groups are independent samples.

Messages without a ``variant`` field (written before A/B existed) count as ``A``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

import click
import numpy as np
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from streams.errors import BrokerError, EventRejected
from streams.offline.from_kafka import read_partitions
from streams.settings import Settings
from streams.worker.kafka_auth import feed_consumer
from streams.worker.schemas import decode_event
from streams.worker.topics import true_end_offsets

__all__ = [
    "Message",
    "Scored",
    "VariantResult",
    "ab_group",
    "bootstrap_difference",
    "read_topics",
    "report",
    "results",
    "score_log",
]

K = 10
RESAMPLES = 2000
STALL_S = 60.0
"""Reading fails when no partition moves for this long."""


@dataclass(frozen=True, slots=True)
class Message:
    """One recommendation message, as far as the report needs it."""

    user_id: str
    event_ids: tuple[str, ...]
    items: tuple[str, ...]
    variant: str = "A"
    model_version: str = ""

    @classmethod
    def decode(cls, raw: bytes) -> Message:
        body = json.loads(raw)
        return cls(
            str(body["user_id"]),
            tuple(str(e) for e in body.get("event_ids") or ()),
            tuple(str(i["item_id"]) for i in body.get("items") or ()),
            str(body.get("variant") or "A"),
            str(body.get("model_version") or ""),
        )


@dataclass(slots=True)
class Scored:
    """Each variant's users: ``user -> [scored events, hits, sum of 1/rank]``; and the events
    with no list before them."""

    users: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    versions: dict[str, set[str]] = field(default_factory=dict)
    unscored: int = 0

    def add(self, variant: str, version: str, user_id: str, rank: int | None) -> None:
        tally = self.users.setdefault(variant, {}).setdefault(user_id, [0, 0, 0.0])
        tally[0] += 1
        if rank is not None:
            tally[1] += 1
            tally[2] += 1.0 / rank
        self.versions.setdefault(variant, set()).add(version)

    def arrays(self, variant: str) -> np.ndarray:
        """``(users, 3)``: scored events, hits, reciprocal ranks of each of ``variant``'s users."""
        rows = list(self.users.get(variant, {}).values())
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), 3)


def score_log(messages: Iterable[Message], item_of: Mapping[str, str], k: int = K) -> Scored:
    """Score the events against the lists before them (see the module docstring). ``messages``
    in log order (each user's in the order they were sent); ``item_of``: event id -> item id
    (events not in it, e.g. read past the events' end, are skipped)."""
    out = Scored()
    last: dict[str, Message] = {}
    seen: set[str] = set()
    for message in messages:
        before = last.get(message.user_id)
        for event_id in message.event_ids:
            if event_id in seen or event_id not in item_of:
                continue
            seen.add(event_id)
            if before is None:
                out.unscored += 1
                continue
            listed = before.items[:k]
            item = item_of[event_id]
            rank = listed.index(item) + 1 if item in listed else None
            out.add(before.variant, before.model_version, message.user_id, rank)
        last[message.user_id] = message
    return out


def bootstrap_difference(
    a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95 % intervals of B - A for HR (``"hr"``) and MRR (``"mrr"``): users resampled with
    replacement within each variant (``a``/``b``: :meth:`Scored.arrays`), percentile method."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both variants need scored users")
    rng = np.random.default_rng(seed)
    diffs = np.empty((resamples, 2))
    chunk = max(1, 2_000_000 // max(len(a), len(b)))  # bounds the index matrices' memory
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        sa = a[rng.integers(0, len(a), (n, len(a)))].sum(axis=1)  # (n, 3) per resample
        sb = b[rng.integers(0, len(b), (n, len(b)))].sum(axis=1)
        diffs[start : start + n] = sb[:, 1:] / sb[:, :1] - sa[:, 1:] / sa[:, :1]
    low, high = np.percentile(diffs, (2.5, 97.5), axis=0)
    return {"hr": (float(low[0]), float(high[0])), "mrr": (float(low[1]), float(high[1]))}


@dataclass(frozen=True, slots=True)
class VariantResult:
    """One variant's line of the report."""

    variant: str
    users: int
    scored: int
    hr: float
    mrr: float
    versions: tuple[str, ...]


def results(scored: Scored) -> list[VariantResult]:
    """Each variant's users, scored events, HR and MRR (ratios of sums over its users)."""
    out = []
    for variant in sorted(scored.users):
        sums = scored.arrays(variant).sum(axis=0)
        out.append(VariantResult(variant, len(scored.users[variant]), int(sums[0]),
                                 float(sums[1] / sums[0]), float(sums[2] / sums[0]),
                                 tuple(sorted(scored.versions.get(variant, ())))))  # fmt: skip
    return out


def report(scored: Scored, *, k: int = K, resamples: int = RESAMPLES, seed: int = 0) -> str:
    """The report's text: each variant's HR@k / MRR@k with its users and events, then B - A
    with its 95 % bootstrap interval (when both variants have scored users)."""
    found = results(scored)
    lines = [f"{'variant':<8} {'users':>7} {'events':>8} {f'HR@{k}':>8} {f'MRR@{k}':>8}  models"]
    for r in found:
        lines.append(f"{r.variant:<8} {r.users:>7,} {r.scored:>8,} {r.hr:>8.4f} {r.mrr:>8.4f}  "
                     f"{', '.join(r.versions)}")  # fmt: skip
    lines.append(f"unscored events (no list before them): {scored.unscored:,}")
    by = {r.variant: r for r in found}
    if "A" in by and "B" in by:
        ci = bootstrap_difference(scored.arrays("A"), scored.arrays("B"), resamples, seed)
        for name, key in ((f"HR@{k}", "hr"), (f"MRR@{k}", "mrr")):
            diff = getattr(by["B"], key) - getattr(by["A"], key)
            low, high = ci[key]
            lines.append(f"B - A {name}: {diff:+.4f} (95 % CI {low:+.4f} .. {high:+.4f})")
        lines.append(f"(interval: bootstrap over users, {resamples:,} resamples, seed {seed})")
    else:
        lines.append("B - A: needs scored events in both variants")
    return "\n".join(lines)


# --------------------------------------------------------------------------- reading the topics

Record: TypeAlias = ConsumerRecord[bytes, bytes]


def read_topics(settings: Settings) -> tuple[list[Message], dict[str, str]]:
    """The ``recommendations`` messages in log order (partition by partition: a user's are in
    one) and event id -> item id of every event that decodes, read whole."""
    if not settings.bootstrap:
        raise BrokerError("the A/B report reads the topics: set KAFKA_BOOTSTRAP")
    try:
        return asyncio.run(_read(settings))
    except KafkaError as exc:
        raise BrokerError(f"cannot read the topics at {settings.bootstrap}: {exc}") from exc


async def _read(settings: Settings) -> tuple[list[Message], dict[str, str]]:
    topics = settings.topics
    messages: dict[TopicPartition, list[Message]] = {}
    item_of: dict[str, str] = {}

    def on_record(record: Record) -> None:
        if record.value is None:
            return
        if record.topic == topics.recommendations:
            tp = TopicPartition(record.topic, record.partition)
            try:
                messages.setdefault(tp, []).append(Message.decode(record.value))
            except (ValueError, KeyError, TypeError):
                pass  # not one of ours
            return
        try:
            event = decode_event(record.value, topics.event_type_of(record.topic), record.key,
                                 settings.max_user_id_len)  # fmt: skip
        except EventRejected:
            return  # dead-lettered by the worker: in no list
        item_of.setdefault(event.event_id, event.item_id)

    consumer = feed_consumer(settings, max_poll_records=10_000, auto_offset_reset="earliest")
    await consumer.start()
    try:
        existing = await consumer.topics()
        names = [t for t in (*topics.events, topics.recommendations) if t in existing]
        parts = {t: sorted(consumer.partitions_for_topic(t)) for t in names}
        tps = [TopicPartition(t, n) for t in names for n in parts[t]]
        ends = await true_end_offsets(consumer, tps) if tps else {}
        starts = await consumer.beginning_offsets(tps) if tps else {}
        await read_partitions(consumer, starts, ends, on_record)
    finally:
        await consumer.stop()
    ordered = [m for tp in sorted(messages, key=lambda t: t.partition) for m in messages[tp]]
    return ordered, item_of


@click.group("ab")
def ab_group() -> None:
    """The A/B test of two sequence models (INTEREST_STREAM_AB_MODEL_DIR)."""


@ab_group.command("report")
@click.option("--resamples", type=click.IntRange(100, 100_000), default=RESAMPLES,
              show_default=True, help="Bootstrap resamples (over users).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="The bootstrap's seed.")
@click.pass_context
def report_command(ctx: click.Context, resamples: int, seed: int) -> None:
    """Each variant's online HR@10 / MRR@10 from the topics, and B - A with a 95 % interval."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    try:
        messages, item_of = read_topics(settings)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(messages):,} recommendation messages, {len(item_of):,} events read")
    click.echo(report(score_log(messages, item_of), resamples=resamples, seed=seed))
