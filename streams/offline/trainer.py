"""``interest-stream trainer``: retrain from the log on a schedule, promote only a better model.

Its own process, never inside a worker. A round reads the event topics into the training files
(:mod:`streams.offline.from_kafka`), trains a candidate on them (the split and the training of
``interest-stream train``), scores the candidate and the serving model on the same most recent
held-out events (:mod:`streams.offline.compare`: NDCG@10 of the served blend), and promotes the
candidate only when it is better by the margin and passes the checks every worker makes before a
swap (:func:`streams.worker.long_term.load_checked`). Promotion swaps the folder the workers
hot-reload, atomically, and keeps the last K versions (:mod:`streams.offline.versions`). Every
decision is one JSON line in the decisions log, with its figures; the dashboard shows the last.

A round is due when no round is recorded, when ``--every-events`` events arrived on the event
topics since the last round (summed end offsets), or ``--every-hours`` have passed; the trainer
checks every ``--check-s`` seconds. ``--once``: one round now, then exit (what tests use). What
the last round read up to is kept in ``<live>.versions/trainer.json``, so a restarted trainer
goes on counting from there.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from encoders import EncoderError, TextEncoder
from encoders.build.sequence_data import TrainConfig
from encoders.runtime.sequence import SequenceModel
from streams.errors import ModelRejected, StreamError
from streams.offline.compare import METRIC, decide, held_out_scores, lineup
from streams.offline.evaluate import Dataset, load_dataset
from streams.offline.from_kafka import SINCE, LogSnapshot, Since, log_ends, read_log
from streams.offline.rankers import to_sequence
from streams.offline.train import load_encoder, model_options, train_config, train_dataset
from streams.offline.versions import ModelStore, append_decision
from streams.settings import Settings
from streams.worker.long_term import load_checked

__all__ = [
    "STATE_FILE",
    "Plan",
    "TrainerState",
    "describe",
    "due",
    "new_events",
    "run_round",
    "serve",
    "trainer_command",
]

log = logging.getLogger(__name__)

STATE_FILE = "trainer.json"
"""In ``<live>.versions``: when the last round ran and the end offsets it read up to."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What a round does: where, with which model, the margin, and where the data comes from."""

    live: Path
    config: TrainConfig
    margin: float = 0.01
    keep: int = 5
    since: Since | None = None
    items_path: Path | None = None
    snapshot_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class TrainerState:
    """When the last round ran and the end offsets it read up to (``topic/partition``)."""

    trained_at: float
    ends: Mapping[str, int]

    @classmethod
    def load(cls, store: ModelStore) -> TrainerState | None:
        try:
            raw = json.loads((store.root / STATE_FILE).read_text(encoding="utf-8"))
            return cls(float(raw["trained_at"]), {str(k): int(v) for k, v in raw["ends"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, store: ModelStore) -> None:
        store.root.mkdir(parents=True, exist_ok=True)
        tmp = store.root / f".{STATE_FILE}.tmp"
        body = {"trained_at": self.trained_at, "ends": dict(self.ends)}
        tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        tmp.replace(store.root / STATE_FILE)


def new_events(state: TrainerState | None, ends: Mapping[str, int]) -> int:
    """Records appended to the event topics since ``state`` (a partition that shrank, e.g. a
    topic made again, counts from 0)."""
    before = state.ends if state is not None else {}
    return sum(end - before.get(key, 0) if end >= before.get(key, 0) else end
               for key, end in ends.items())  # fmt: skip


def due(
    state: TrainerState | None,
    now: float,
    arrived: int | None,
    every_events: int | None,
    every_hours: float | None,
) -> str | None:
    """Why a round is due now (``None``: it is not). ``arrived``: events since the last round."""
    if state is None:
        return "no round recorded yet"
    if every_hours is not None and now - state.trained_at >= every_hours * 3600.0:
        return f"{(now - state.trained_at) / 3600.0:.2f} h since the last round"
    if every_events is not None and arrived is not None and arrived >= every_events:
        return f"{arrived:,} new events since the last round"
    return None


def run_round(
    settings: Settings,
    plan: Plan,
    encoder: TextEncoder,
    items_path: Path,
    events_path: Path,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a candidate on the two files, compare, promote or not; log and return the decision."""
    store = ModelStore(plan.live, plan.keep)
    start = time.perf_counter()
    dataset = load_dataset(items_path, events_path)
    staged = store.staging()
    try:
        card = train_dataset(dataset, encoder, staged, plan.config, source=source)
        record = _compare(settings, plan, store, encoder, dataset, staged)
        record.update(candidate=card["version"], train_seconds=card["training"]["seconds"])
        if record["promoted"]:
            try:
                store.promote(staged, how="trainer", expect=record["serving"])
                record["promoted_at"] = time.time()
            except ModelRejected as exc:
                record.update(promoted=False, action="keep", reason=exc.reason)
    finally:
        store.discard(staged)
    record.update(
        time=time.time(), users=len(dataset.users), seconds=round(time.perf_counter() - start, 2),
        data={**dataset.stats, **(dict(source) if source else {})},
    )  # fmt: skip
    append_decision(store.decisions, record)
    return record


def _compare(
    settings: Settings,
    plan: Plan,
    store: ModelStore,
    encoder: TextEncoder,
    dataset: Dataset,
    staged: Path,
) -> dict[str, Any]:
    """The decision record of the candidate in ``staged`` against what the workers serve."""
    candidate = SequenceModel.load(staged, provider="cpu")
    serving_version = store.serving()  # promotion expects it still (no rollback meanwhile)
    serving: SequenceModel | None = None
    note = ""
    if serving_version is not None:
        try:
            serving = SequenceModel.load(plan.live, provider="cpu")
        except EncoderError as exc:  # a broken serving folder: workers rank short-term only
            note = f"; the serving model does not load ({exc}): compared with short-term only"
    models = lineup(encoder, settings, candidate, serving)
    cand, serv = held_out_scores(dataset, models)
    verdict = decide(cand[METRIC], serv[METRIC], plan.margin)
    reason = verdict.reason + note
    promote = verdict.promote
    if promote:
        probes = [to_sequence(user.history)[-candidate.max_len :] for user in dataset.users[:64]]
        try:
            load_checked(staged, text_dim=encoder.dim, probes=probes, provider="cpu")
        except ModelRejected as exc:
            promote, reason = False, f"{reason}; but the workers' checks refuse it: {exc.reason}"
    return {
        "action": "promote" if promote else "keep",
        "promoted": promote,
        "serving": serving_version,
        "metric": METRIC,
        "candidate_score": cand[METRIC],
        "serving_score": serv[METRIC],
        "candidate_figures": cand,
        "serving_figures": serv,
        "margin": plan.margin,
        "change": verdict.change,
        "reason": reason,
    }


def describe(record: Mapping[str, Any]) -> str:
    """One line for the log and the terminal."""
    serving = record.get("serving") or "short-term only"
    verb = "promoted" if record.get("promoted") else "kept"
    return (f"{verb}: candidate {record.get('candidate')} {METRIC} "
            f"{record.get('candidate_score'):.4f} vs {serving} {record.get('serving_score'):.4f} "
            f"on {record.get('users')} users ({record.get('reason')})")  # fmt: skip


def _one_round(
    settings: Settings, plan: Plan, encoder: TextEncoder, echo: Callable[[str], None]
) -> TrainerState:
    snapshot: LogSnapshot = read_log(
        settings, plan.snapshot_dir or settings.home / "trainer" / "snapshot",
        since=plan.since, items_path=plan.items_path,
    )  # fmt: skip
    echo(snapshot.summary())
    record = run_round(settings, plan, encoder, snapshot.items_path, snapshot.events_path,
                       snapshot.as_dict())  # fmt: skip
    echo(describe(record))
    return TrainerState(time.time(), snapshot.ends)


def serve(
    settings: Settings,
    plan: Plan,
    *,
    every_events: int | None,
    every_hours: float | None,
    check_s: float,
    once: bool,
    echo: Callable[[str], None],
) -> None:
    """Run rounds when due (one at once with ``once``); a failed round is logged and retried at
    the next check, except with ``once``, where it raises."""
    store = ModelStore(plan.live, plan.keep)
    encoder = load_encoder(settings)
    while True:
        state = TrainerState.load(store)
        try:
            if once:
                why: str | None = "--once"
            else:
                arrived = new_events(state, log_ends(settings)) if every_events else None
                why = due(state, time.time(), arrived, every_events, every_hours)
            if why is not None:
                echo(f"round: {why}")
                _one_round(settings, plan, encoder, echo).save(store)
        except (StreamError, EncoderError) as exc:
            if once:
                raise
            log.error("trainer round failed (next check in %.0f s): %s", check_s, exc)
        if once:
            return
        time.sleep(check_s)


@click.command("trainer")
@click.option("--models", "live", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The folder the workers hot-reload (default: INTEREST_STREAM_SEQUENCE_MODEL_DIR"
              ", <home>/models/sequence); versions beside it.")  # fmt: skip
@click.option("--every-events", type=click.IntRange(min=1), default=None,
              help="Retrain when this many new events are on the event topics.")  # fmt: skip
@click.option("--every-hours", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Retrain when this many hours passed since the last round.")  # fmt: skip
@click.option("--check-s", type=click.FloatRange(min=1.0), default=60.0, show_default=True,
              help="Seconds between two checks of the schedule.")  # fmt: skip
@click.option("--once", is_flag=True, help="One round now, then exit.")
@click.option("--margin", type=click.FloatRange(min=0.0), default=0.01, show_default=True,
              help="Promote when the candidate's NDCG@10 >= serving x (1 + margin).")  # fmt: skip
@click.option("--keep", type=click.IntRange(min=2), default=5, show_default=True,
              help="Versions kept (rollback goes back through them).")  # fmt: skip
@click.option("--since", type=SINCE, default=None,
              help="Records from this time, or this long ago (30d); default: all.")  # fmt: skip
@click.option("--items", "items_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Catalog file (default: the items topic).")  # fmt: skip
@click.option("--snapshot", "snapshot_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where each round writes the topics' events and catalog "
              "(default: <home>/trainer/snapshot).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads for training (0: torch's default, every core); fewer leave "
              "cores to workers on the same machine.")  # fmt: skip
@model_options
@click.pass_context
def trainer_command(ctx: click.Context, /, live: Path | None, every_events: int | None,
                    every_hours: float | None, check_s: float, once: bool, margin: float,
                    keep: int, since: Since | None, items_path: Path | None,
                    snapshot_dir: Path | None, threads: int, **params: Any) -> None:  # fmt: skip
    """Retrain from the event topics on a schedule; promote a candidate only when it beats the
    serving model by the margin on the most recent held-out events."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    if not settings.bootstrap:
        raise click.UsageError("the trainer reads the event topics: set KAFKA_BOOTSTRAP")
    if not once and every_events is None and every_hours is None:
        raise click.UsageError("give --every-events and/or --every-hours, or --once")
    plan = Plan(live or settings.resolved_sequence_model_dir, train_config(params), margin,
                keep, since, items_path, snapshot_dir)  # fmt: skip
    if threads:
        import torch  # the export extra, which training needs anyway

        torch.set_num_threads(threads)

    try:
        serve(settings, plan, every_events=every_events, every_hours=every_hours,
              check_s=check_s, once=once, echo=click.echo)  # fmt: skip
    except EncoderError as exc:
        raise click.ClickException(str(exc)) from exc
