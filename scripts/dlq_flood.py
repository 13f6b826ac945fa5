"""Does a flood of bad records starve good ones? (issue 21, item 1) Measured on a real worker.

Starts the embedded broker (or uses ``KAFKA_BOOTSTRAP``) and one worker process as the
integration fixtures do, then, in one run and against the same worker:

1. ``calm``: ``--good`` good ml-100k events at ``--rate``/s, nothing else;
2. ``flood``: as many good events of other users at the same rate, with ``--bad`` not-JSON
   records spread evenly between them (keys of random users, all event topics).

For each phase it prints the good events' latency from their send (librdkafka's produce call)
to the recommendation that answers them on the output topic (read by a librdkafka consumer),
p50 / p99 / max, and for the flood the dead-letter rate (dead letters on the ``dlq`` topic over
the span of their producer timestamps) and the flood / calm ratio of p50 and p99.
Usage: ``.venv/bin/python scripts/dlq_flood.py [--good 1000 --bad 20000 --rate 200]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streams.local.broker import EmbeddedBroker  # noqa: E402
from tests.integration.conftest import Deployment  # noqa: E402
from tests.integration.poison_records import create_topics  # noqa: E402
from tests.integration.test_poison import good_events, setup_topics  # noqa: E402

Rec = tuple[str, bytes | None, bytes | None]


class Reader(threading.Thread):
    """Reads the recommendation topic from the start: first arrival time of each event id."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-flood",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                                  "auto.offset.reset": "earliest"})  # fmt: skip
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])

    def run(self) -> None:
        while not self.stop.is_set():
            for msg in self.consumer.consume(num_messages=500, timeout=0.05):
                if msg.error():
                    continue
                now = time.time()
                for event_id in json.loads(msg.value()).get("event_ids", ()):
                    self.seen.setdefault(event_id, now)
        self.consumer.close()


def paced(
    bootstrap: str, records: Sequence[Rec], per_s: float, acked: dict[int, float]
) -> dict[int, float]:
    """Produce ``records`` in order at ``per_s`` records/s; the send time of each, by index
    (and in ``acked`` the time the broker acked it)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all",
                         "queue.buffering.max.messages": 200_000})  # fmt: skip
    sent: dict[int, float] = {}

    def on_ack(n: int) -> Callable[[object, object], None]:
        return lambda err, _msg: acked.__setitem__(n, time.time()) if err is None else None

    start = time.time()
    for n, (topic, key, value) in enumerate(records):
        due = start + n / per_s
        while (now := time.time()) < due:
            time.sleep(min(due - now, 0.002))
        sent[n] = time.time()
        producer.produce(topic, value=value, key=key, on_delivery=on_ack(n))
        producer.poll(0)
    if producer.flush(30):
        raise RuntimeError("the records were not all delivered in 30 s")
    return sent


def flooded(good: Sequence[Rec], bad_count: int, topics: Sequence[str]) -> list[Rec]:
    """``good`` with ``bad_count`` not-JSON records spread evenly between its records."""
    rng = random.Random(7)  # noqa: S311 (keys, not secrets)
    per_good = bad_count / len(good)
    out: list[Rec] = []
    made = 0
    for n, record in enumerate(good):
        out.append(record)
        while made < round((n + 1) * per_good):
            key = str(rng.randrange(100_000, 999_999)).encode()
            out.append((topics[made % len(topics)], key, b"not json %d" % made))
            made += 1
    return out


def latencies(records: Sequence[Rec], sent: dict[int, float], seen: dict[str, float],
              wait_s: float) -> list[float]:  # fmt: skip
    """Send -> recommendation of every good record, in ms (waits up to ``wait_s`` for all)."""
    ids = {n: json.loads(v)["event_id"] for n, (_, _, v) in enumerate(records)
           if v is not None and v.startswith(b"{")}  # fmt: skip
    deadline = time.time() + wait_s
    while time.time() < deadline and not all(i in seen for i in ids.values()):
        time.sleep(0.1)
    missing = [i for i in ids.values() if i not in seen]
    if missing:
        print(f"  {len(missing)} good events not answered, e.g. {missing[:3]}")
    return [(seen[i] - sent[n]) * 1000.0 for n, i in ids.items() if i in seen]


def to_broker(records: Sequence[Rec], sent: dict[int, float], acked: dict[int, float]) -> float:
    """p50 of the good records' send -> broker ack, in ms: what the broker alone adds."""
    return round(statistics.median((acked[n] - sent[n]) * 1000.0 for n, (_, _, v) in
                                   enumerate(records) if v and v.startswith(b"{")), 1)  # fmt: skip


def summary(values: Sequence[float]) -> dict[str, float]:
    cut = statistics.quantiles(values, n=100)
    return {"n": len(values), "p50_ms": round(statistics.median(values), 1),
            "p99_ms": round(cut[98], 1), "max_ms": round(max(values), 1)}  # fmt: skip


def dead_letter_rate(bootstrap: str, topic: str, partitions: int, want: int) -> dict[str, float]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-flood-dlq",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    stamps: list[float] = []
    deadline = time.time() + 120
    while len(stamps) < want and time.time() < deadline:
        for msg in consumer.consume(num_messages=1000, timeout=0.2):
            if not msg.error():
                stamps.append(msg.timestamp()[1] / 1000.0)
    consumer.close()
    span = max(stamps) - min(stamps) if len(stamps) > 1 else float("nan")
    return {"dead_letters": len(stamps), "span_s": round(span, 2),
            "per_s": round(len(stamps) / span, 1)}  # fmt: skip


@contextlib.contextmanager
def broker(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with EmbeddedBroker() as b:
        yield b.bootstrap


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=int, default=1000, help="good events per phase")
    parser.add_argument("--bad", type=int, default=20000, help="not-JSON records in the flood")
    parser.add_argument("--rate", type=float, default=200.0, help="good events/s")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="keep the worker's folder here")
    args = parser.parse_args(argv)
    from streams.settings import Settings
    from streams.worker.runtime import ensure_model
    from tests.integration.conftest import HOME

    model_dir = ensure_model(Settings(home=HOME))
    from streams.data.formats import read_items
    from streams.data.movielens import prepare_ml100k

    items_path, _ = prepare_ml100k(HOME / "data" / "ml-100k", HOME / "cache")
    catalog: list[Any] = read_items(items_path)[:200]
    per_user = 10
    users = args.good // per_user
    with broker(args.bootstrap) as bootstrap, tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        dep = Deployment(bootstrap, model_dir, work)
        t = dep.topics
        setup_topics(dep, catalog)
        create_topics(bootstrap, [t.recommendations, t.dlq], dep.partitions, "")
        try:
            dep.start_worker("flood")
            reader = Reader(bootstrap, t.recommendations, dep.partitions)
            reader.start()
            result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
            calm = good_events(dep, catalog, users=users, per_user=per_user)
            acked: dict[int, float] = {}
            sent = paced(bootstrap, calm, args.rate, acked)
            result["calm"] = summary(latencies(calm, sent, reader.seen, 60))
            result["calm"]["to_broker"] = to_broker(calm, sent, acked)
            print("calm ", result["calm"], flush=True)
            good = good_events(dep, catalog, users=users, per_user=per_user, skip_users=users)
            mixed = flooded(good, args.bad, [t.click, t.browse])
            per_s = args.rate * len(mixed) / len(good)
            acked = {}
            sent = paced(bootstrap, mixed, per_s, acked)
            result["flood"] = summary(latencies(mixed, sent, reader.seen, 120))
            result["flood"]["to_broker"] = to_broker(mixed, sent, acked)
            result["flood"]["records_per_s"] = round(per_s, 1)
            print("flood", result["flood"], flush=True)
            result["dlq"] = dead_letter_rate(bootstrap, t.dlq, dep.partitions, args.bad)
            print("dlq  ", result["dlq"])
            result["ratio"] = {k: round(result["flood"][k] / result["calm"][k], 2)
                               for k in ("p50_ms", "p99_ms")}  # fmt: skip
            print("ratio", result["ratio"])
            reader.stop.set()
            if args.out:
                args.out.write_text(json.dumps(result, indent=2) + "\n")
        finally:
            dep.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
