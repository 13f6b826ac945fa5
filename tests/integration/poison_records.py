"""Bad records an operator can meet on the input topics, and the plumbing to send and watch them.

:func:`bad_events` is the catalogue for the event topics (``click``, ``browse``, ``comment``),
:func:`bad_items` the one for the compacted ``items`` topic: each :class:`Bad` is one kind of
record with its raw key and value bytes, exactly as a careless or hostile producer would send
them. None of them may stop a worker; each must end on the dead-letter topic with a reason.

The producer here allows 16 MiB records (librdkafka's ``message.max.bytes``) and the topics are
created with ``max.message.bytes`` to match, so the 5 MB value and the 1.1 MB key reach the
broker; a record the broker still refuses is reported as such (it never reached the worker).
:class:`Watch` reads the dead-letter and recommendation topics as they grow; :func:`metrics`,
:func:`up_problem` and :func:`start` ask a worker process how it is.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.conftest import Deployment, Worker
from tests.integration.kafka_client import Record

MAX_BYTES = 16 * 1024 * 1024
POISON_USER = "poison-user"
LONE_SURROGATE = "\ud800"  # json.dumps writes it as the escape "\ud800", as the records
DEEP = 10_000


@dataclass(frozen=True)
class Bad:
    """One kind of bad record. ``topic`` is ``click``/``browse``/``comment``/``items``."""

    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    #: too large to re-send whole: its dead letter must be cut and say so (``dlq.trunc*``)
    oversized: bool = False


@dataclass(frozen=True)
class Sent:
    """Where the broker put a record, or why it refused it."""

    topic: str
    partition: int
    offset: int
    error: str | None = None


# --------------------------------------------------------------------------- the catalogue


def _raw(obj: Any, **literals: str) -> bytes:
    """``obj`` as JSON, each field named in ``literals`` replaced by that raw JSON text."""
    body = {**obj, **{name: f"@@{name}@@" for name in literals}}
    text = json.dumps(body)
    for name, literal in literals.items():
        text = text.replace(f'"@@{name}@@"', literal)
    return text.encode()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def bad_events(item_id: str, ts: float) -> list[Bad]:
    """At least 30 kinds of malformed event record; ``item_id`` is a real catalogue item.

    A record that is an event in all but one respect has ``event_id`` ``poison-<kind>``, so a
    bad record that is applied anyway shows up by name in a recommendation's ``event_ids``.
    """
    key = POISON_USER.encode()

    def ev(kind: str, **fields: Any) -> dict[str, Any]:
        base = {"event_id": f"poison-{kind}", "user_id": POISON_USER, "item_id": item_id, "ts": ts}
        return {k: v for k, v in {**base, **fields}.items() if v is not ...}

    def bad(kind: str, topic: str = "click", k: bytes | None = key, **fields: Any) -> Bad:
        return Bad(kind, topic, k, _raw(ev(kind, **fields)))

    def literal(kind: str, topic: str = "click", **literals: str) -> Bad:
        return Bad(kind, topic, key, _raw(ev(kind), **literals))

    def encoded(kind: str, encoding: str) -> Bad:
        return Bad(kind, "click", key, json.dumps(ev(kind)).encode(encoding))

    def spliced(kind: str, tail: bytes) -> Bad:
        return Bad(kind, "click", key, _raw(ev(kind))[:-1] + tail)

    surrogate_key = LONE_SURROGATE.encode("utf-8", "surrogatepass")
    return [
        # not JSON, not UTF-8, not an object
        Bad("not-json", "click", key, b"{not json"),
        Bad("empty-bytes", "click", key, b""),
        spliced("truncated-json", b', "x": '),
        spliced("trailing-garbage", b"} and more"),
        spliced("invalid-utf8", b', "x": "\xff\xfe\xfd"}'),
        spliced("utf8-encoded-surrogate", b', "x": "\xed\xa0\x80"}'),
        encoded("utf16-json", "utf-16"),
        encoded("utf16le-json-no-bom", "utf-16-le"),
        encoded("utf32-json", "utf-32"),
        Bad("null-value", "click", key, None),
        Bad("json-array", "click", key, b"[1, 2]"),
        Bad("json-string", "click", key, b'"an event"'),
        Bad("json-number", "click", key, b"42"),
        Bad("json-null", "click", key, b"null"),
        Bad("json-true", "click", key, b"true"),
        # missing or mistyped fields
        bad("missing-event-id", event_id=...),
        bad("missing-user-id", user_id=...),
        bad("missing-item-id", item_id=...),
        bad("missing-ts", ts=...),
        bad("comment-missing-text", "comment"),
        bad("event-id-number", event_id=17),
        bad("event-id-empty", event_id=""),
        bad("event-id-257-chars", event_id="e" * 257),
        bad("user-id-list", user_id=[POISON_USER]),
        bad("user-id-empty", k=b"", user_id=""),
        bad("user-id-129-chars", k=b"u" * 129, user_id="u" * 129),
        bad("item-id-number", item_id=5),
        bad("item-id-257-chars", item_id="i" * 257),
        bad("unknown-item-id", item_id="no-such-item"),
        bad("ts-bool", ts=True),
        bad("ts-list", ts=[ts]),
        bad("ts-unparsable", ts="yesterday"),
        bad("ts-milliseconds", ts=ts * 1000),
        bad("ts-negative", ts=-1),
        bad("dwell-negative", "browse", dwell_ms=-5),
        bad("dwell-string", "browse", dwell_ms="5000"),
        bad("dwell-float", "browse", dwell_ms=1.5),
        bad("dwell-bool", "browse", dwell_ms=True),
        bad("comment-text-number", "comment", text=42),
        bad("comment-text-empty", "comment", text=""),
        bad("context-list", context=["mobile"]),
        bad("context-number-values", context={"device": 1}),
        bad("context-33-fields", context={f"f{i}": "x" for i in range(33)}),
        bad("type-browse-on-click-topic", type="browse"),
        bad("type-unknown", type="purchase"),
        # limits: nesting, numbers
        Bad("nested-10000-deep", "click", key, _nested(DEEP).encode()),
        literal("nested-10000-deep-in-context", context=_nested(DEEP)),
        literal("ts-int-1e400", ts="1" + "0" * 400),
        literal("ts-5000-digits", ts="9" * 5000),
        literal("ts-float-1e400", ts="1e400"),
        literal("ts-nan", ts="NaN"),
        literal("ts-infinity", ts="Infinity"),
        literal("dwell-int-1e400", "browse", dwell_ms="1" + "0" * 400),
        literal("dwell-5000-digits", "browse", dwell_ms="9" * 5000),
        literal("dwell-minus-infinity", "browse", dwell_ms="-Infinity"),
        # lone surrogates, written as the JSON escape
        bad("surrogate-in-user-id", k=surrogate_key, user_id=LONE_SURROGATE),
        bad("surrogate-in-event-id", event_id=f"poison-{LONE_SURROGATE}"),
        bad("surrogate-in-item-id", item_id=LONE_SURROGATE),
        bad("surrogate-in-comment-text", "comment", text=f"great {LONE_SURROGATE} film"),
        bad("surrogate-in-context-value", context={"device": LONE_SURROGATE}),
        bad("surrogate-in-context-key", context={LONE_SURROGATE: "tv"}),
        # keys
        bad("null-key", k=None),
        bad("key-not-user-id", k=b"someone-else"),
        bad("key-empty", k=b""),
        Bad("key-1.1MB", "click", b"k" * 1_100_000, _raw(ev("key-1.1MB")), oversized=True),
        # sizes
        bad("comment-1.1MB", "comment", text="wonderful " * 110_000),
        Bad("value-5MB", "comment", key, _raw(ev("value-5MB", text="x" * 5_000_000)),
            oversized=True),
    ]


def bad_items(when: str) -> list[Bad]:
    """Bad records for the ``items`` topic (keys ``poison-item-<when>-<kind>``)."""

    def item(kind: str, value: bytes) -> Bad:
        return Bad(f"items-{when}-{kind}", "items", f"poison-item-{when}-{kind}".encode(), value)

    def obj(kind: str, **fields: Any) -> dict[str, Any]:
        return {"item_id": f"poison-item-{when}-{kind}", "title": "A title", **fields}

    return [
        item("not-json", b"<item>not json</item>"),
        item("json-array", b'["an", "item"]'),
        item("nested-10000-deep", _nested(DEEP).encode()),
        item("nested-10000-deep-in-tags", _raw(obj("deep-tags"), tags=_nested(DEEP))),
        item("missing-title", json.dumps({"item_id": f"poison-item-{when}-no-title"}).encode()),
        item("title-1MB", _raw(obj("title-1mb", title="t" * 1_048_576))),
        item("surrogate-in-title", _raw(obj("surrogate", title=f"Bad {LONE_SURROGATE} title"))),
        item("5000-digit-number", _raw(obj("digits"), year="9" * 5000)),
        item("invalid-utf8", b'{"item_id": "x", "title": "\xff\xfe"}'),
    ]


# --------------------------------------------------------------------------- Kafka


def create_topics(bootstrap: str, names: Iterable[str], partitions: int, compacted: str) -> None:
    """Create ``names`` allowing 16 MiB records (``compacted`` with cleanup.policy=compact)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [
        NewTopic(
            name,
            partitions,
            1,
            config={
                "max.message.bytes": str(MAX_BYTES),
                **({"cleanup.policy": "compact"} if name == compacted else {}),
            },
        )
        for name in names
    ]
    for name, future in admin.create_topics(topics, request_timeout=15).items():
        try:
            future.result(20)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise AssertionError(f"cannot create topic {name}: {exc}") from exc


def produce_each(
    bootstrap: str, records: Sequence[tuple[str, bytes | None, bytes | None]]
) -> list[Sent]:
    """Send ``records`` in order; return, for each, where it went or the error (no assert)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "acks": "all",
            "enable.idempotence": False,
            "message.max.bytes": MAX_BYTES + 1_000_000,
            "message.timeout.ms": 30_000,
        }
    )
    results: list[Sent | None] = [None] * len(records)

    def callback(i: int, topic: str) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                results[i] = Sent(topic, -1, -1, str(err))
            else:
                results[i] = Sent(msg.topic(), msg.partition(), msg.offset())

        return done

    for i, (topic, key, value) in enumerate(records):
        try:
            producer.produce(topic, value=value, key=key, on_delivery=callback(i, topic))
        except (KafkaException, BufferError) as exc:
            results[i] = Sent(topic, -1, -1, f"refused by the producer: {exc}")
        producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} records still unsent after 60 s"
    return [
        r or Sent(t, -1, -1, "no delivery report")
        for r, (t, _, _) in zip(results, records, strict=True)
    ]


class Tail:
    """A topic read from the beginning, kept open: ``records`` grows with each :meth:`poll`."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"poison-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.records: list[Record] = []

    def poll(self, seconds: float = 0.2) -> list[Record]:
        fresh = []
        for msg in self.consumer.consume(num_messages=1000, timeout=seconds):
            if msg.error():
                continue
            headers = dict(msg.headers() or [])
            fresh.append(
                Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers)
            )
        self.records.extend(fresh)
        return fresh

    def until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Poll until ``done()`` (checked after each poll) or the timeout; ``done()``'s last."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            if done():
                return True
        return done()

    def close(self) -> None:
        self.consumer.close()


# --------------------------------------------------------------------------- watching a worker


@dataclass
class Watch:
    """The dead-letter and recommendation topics of one deployment, read as they grow."""

    dep: Deployment
    dlq: Tail = field(init=False)
    recs: Tail = field(init=False)

    def __post_init__(self) -> None:
        self.dlq = Tail(self.dep.bootstrap, self.dep.topics.dlq, self.dep.partitions)
        self.recs = Tail(self.dep.bootstrap, self.dep.topics.recommendations, self.dep.partitions)

    def letters(self) -> dict[tuple[str, int, int], list[Record]]:
        out: dict[tuple[str, int, int], list[Record]] = {}
        for r in self.dlq.records:
            h = r.headers
            try:
                where = (h["dlq.topic"].decode(), int(h["dlq.partition"]), int(h["dlq.offset"]))
            except (KeyError, ValueError, AttributeError):
                where = ("?", r.partition, r.offset)
            out.setdefault(where, []).append(r)
        return out

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.value or b"{}") for r in self.recs.records]

    def applied(self) -> set[str]:
        return {e for b in self.bodies() for e in b.get("event_ids", [])}

    def wait(self, worker: Worker, sent: Sequence[Sent], want: set[str], timeout_s: float) -> bool:
        """Until every delivered ``sent`` is dead-lettered and every ``want`` id applied."""
        where = [(s.topic, s.partition, s.offset) for s in sent if s.error is None]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and worker.proc.poll() is None:
            self.dlq.poll(0.1)
            self.recs.poll(0.1)
            letters = self.letters()
            if all(w in letters for w in where) and want <= self.applied():
                self.dlq.poll(1.0)  # a second copy, if any, lands now
                return True
        self.dlq.poll(0.5)
        self.recs.poll(0.5)
        return False

    def close(self) -> None:
        self.dlq.close()
        self.recs.close()


def metrics(worker: Worker, want: dict[str, int], timeout_s: float = 15) -> dict[str, Any]:
    """/metrics.json once its counters reach ``want``, else the last one read."""
    body: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and worker.proc.poll() is None:
        try:
            status, got = worker.get("/metrics.json")
        except (OSError, ValueError):
            status, got = 0, None
        if status == 200 and isinstance(got, dict) and "events_in" in got:
            body = got
        if body and all(body.get(k) == v for k, v in want.items()):
            return body
        time.sleep(0.5)
    return body


def up_problem(worker: Worker, seconds: float = 0) -> str | None:
    """Why ``worker`` is not up (exited, /healthz not 200) now and for ``seconds`` more."""
    deadline = time.monotonic() + seconds
    while True:
        if worker.proc.poll() is not None:
            return f"worker exited with code {worker.proc.returncode}"
        try:
            status, body = worker.get("/healthz")
        except (OSError, ValueError) as exc:
            return f"/healthz does not answer: {exc}"
        if status != 200:
            return f"/healthz answered {status}: {body}"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.5)


def start(dep: Deployment, name: str, home: str | None = None) -> tuple[Worker | None, str | None]:
    """A started, healthy worker; or ``None`` and why not (with its log's errors)."""
    try:
        worker = dep.start_worker(name, dep.tmp / home if home else None)
    except AssertionError as exc:
        why = str(exc).splitlines()[0]
        return None, f"worker {name!r} did not come up: {why}\n{log_excerpt(dep.workers[-1])}"
    return worker, None


def log_excerpt(worker: Worker) -> str:
    """The worker log's errors (the first 20 lines that name one) and its last 20 lines."""
    lines = worker.log.read_text(errors="replace").splitlines()
    errors = [line for line in lines if "CRITICAL" in line or "ERROR" in line][:20]
    return "\n".join(["errors in the worker log:", *errors, "last lines:", *lines[-20:]])
