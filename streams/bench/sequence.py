"""The ``sequence`` section of ``interest-stream bench``: the Transformer's users/s.

Each microbatch re-runs the sequence model over every touched user's whole window (``max_len``
events). A key/value cache per user would turn that into one new position attending to the
cached ones; its cost is bounded below by running the graph on a window of one event, which is
the baseline here. The ratio says how much a cache could save at most, the users/s figures say
whether it matters next to the rest of the pipeline, and the bytes say what a cache would cost
in state (2 tensors per layer, ``max_len x D`` floats each), against the state budget of a few
KB per user.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from encoders.runtime.sequence import (
    SequenceEvent,
    SequenceFeatures,
    SequenceModel,
    is_sequence_model,
)
from streams.bench.common import BenchConfig, Row, timed_rate
from streams.data.formats import read_events
from streams.settings import Settings

__all__ = ["sequence_section"]

BATCH_SIZES = (1, 64, 256)


def _histories(events_path: Path, max_len: int, users: int) -> list[list[SequenceEvent]]:
    by_user: dict[str, list[SequenceEvent]] = defaultdict(list)
    for event in read_events(events_path):
        by_user[event.user_id].append(SequenceEvent(event.item_id, event.event_type, event.ts))
    full = [h[-max_len:] for h in by_user.values() if len(h) >= max_len]
    return (full * (users // max(len(full), 1) + 1))[:users]


def _slice(batch: SequenceFeatures, start: int, size: int) -> SequenceFeatures:
    return SequenceFeatures(*(a[start : start + size] for a in batch.arrays()))


def _rate(model: SequenceModel, batch: SequenceFeatures, size: int, seconds: float) -> float:
    def step() -> int:
        model.run(_slice(batch, 0, size))
        return size

    return timed_rate(step, seconds)


def sequence_section(
    settings: Settings, cfg: BenchConfig, echo: Callable[[str], None], sizes: Sequence[int] = ()
) -> list[Row]:
    folder = settings.home / "models" / "sequence"
    events = settings.home / "data" / "ml-100k" / "events.jsonl"
    if not is_sequence_model(folder) or not events.is_file():
        echo(f"sequence: skipped, no model in {folder} (interest-stream train) or no ml-100k data")
        return []
    model = SequenceModel.load(folder, provider=settings.provider)
    sizes = tuple(sizes) or BATCH_SIZES
    histories = _histories(events, model.max_len, max(sizes))
    full = model.features(histories)
    one = SequenceFeatures(*(a[:, -1:] for a in full.arrays()))
    seconds = 0.5 if cfg.quick else 2.0
    layers = int(model.card["parameters"]["layers"])
    cache_bytes = 2 * layers * model.max_len * model.dim * 2  # fp16 keys and values
    rows = []
    for size in sizes:
        mine = _rate(model, full, size, seconds)
        bound = _rate(model, one, size, seconds)
        rows.append(Row("sequence", f"users/s, {model.max_len}-event window, batch {size}", mine,
                        "users/s", "1-event step (KV-cache bound)", bound,
                        f"a cache would hold {cache_bytes:,} B/user"))  # fmt: skip
    return rows
