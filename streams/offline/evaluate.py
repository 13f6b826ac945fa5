"""Offline evaluation: leave-one-out by time, full ranking over all items, models side by side.

Per user, events sorted by time: the last is the test target, the one before it the validation
target, the earlier ones the history (users with fewer than 3 events are skipped, counted); a
dislike is never a target (the targets are the last two other events; later dislikes are left
out). A model is fitted on the training events (every user's history), then ranks the catalog
from the history (validation) or history + validation event (test), with the user's own events
masked (what a live recommender serves) and unmasked (docs/evaluation.md).

A model is anything shaped like :class:`Recommender` (:mod:`streams.offline.rankers`):
popularity, the stream's short-term vector replayed through the very same
:func:`interest_state.update` / :func:`interest_state.rank`, the sequence Transformer and its
blends and lists run exactly as the stream runs them (ring-built histories, ONNX Runtime,
:func:`interest_state.rank_blended`, :class:`streams.worker.lists.ListMaker`), and peers'
stored rankings (:mod:`streams.offline.peers`): the quality measured here is the quality served
online. Metrics and outputs: :mod:`streams.offline.report`.

    StreamError
     └── EvaluationError   the data cannot be evaluated, or a model broke the ranking contract
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click

from encoders import is_exported
from encoders.runtime.sequence import DISLIKE, is_sequence_model
from interest_state import UpdateParams
from interest_state.params import MAX_RING_LEN
from streams.contract import EventRecord
from streams.data.formats import read_events, read_items
from streams.errors import EvaluationError
from streams.offline.batches import rank_all
from streams.offline.beyond import ItemVectors, ListMetrics
from streams.offline.coldstart import ColdStart, ColdStartTable
from streams.offline.diverse import (
    MMR_GRID,
    MMRModel,
    choose_mmr_lambda,
    lists_models,
    served_model,
)
from streams.offline.peers import PeerModel
from streams.offline.rankers import (
    PopularityModel,
    Recommender,
    ShortTermModel,
    TrainData,
    UserContext,
)
from streams.offline.report import (
    CHART_MISSING,
    STAGES,
    EvaluationReport,
    MetricValue,
    ModelScores,
    metric_names,
    score_ranks,
    target_ranks,
    write_outputs,
)
from streams.offline.transformer import BlendModel, TransformerModel, default_models
from streams.settings import Settings

__all__ = [
    "CHART_MISSING",
    "BlendModel",
    "STAGES",
    "Dataset",
    "EvaluationReport",
    "MetricValue",
    "MMRModel",
    "ModelScores",
    "PeerModel",
    "PopularityModel",
    "Recommender",
    "ShortTermModel",
    "TrainData",
    "TransformerModel",
    "UserContext",
    "UserSplit",
    "choose_mmr_lambda",
    "default_models",
    "evaluate_command",
    "load_dataset",
    "metric_names",
    "run_evaluation",
    "score_ranks",
    "target_ranks",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data and split


@dataclass(frozen=True, slots=True)
class UserSplit:
    """One user's events split by time: history, validation event, test event."""

    user_id: str
    history: tuple[EventRecord, ...]
    validation: EventRecord
    test: EventRecord

    def context(self, stage: str) -> UserContext:
        events = self.history if stage == "validation" else (*self.history, self.validation)
        return UserContext(self.user_id, events, stage)

    def target(self, stage: str) -> str:
        return (self.validation if stage == "validation" else self.test).item_id


@dataclass(frozen=True, slots=True)
class Dataset:
    users: tuple[UserSplit, ...]
    train: TrainData
    stats: dict[str, Any]
    first_seen: dict[str, float] = field(default_factory=dict)
    """Each item's earliest event time in the whole file (every user, every split)."""

    def contexts(self, stage: str) -> list[UserContext]:
        return [user.context(stage) for user in self.users]


def load_dataset(items_path: Path, events_path: Path, max_users: int | None = None) -> Dataset:
    """Read both files and split them; events of items missing from the catalog are dropped.

    Training events are the histories of all splittable users plus every event of the users
    too short to split (they are never evaluated). ``max_users`` keeps the first users (by
    first event) for evaluation only; training data is the same with or without it.
    """
    items = tuple(read_items(items_path))
    if not items:
        raise EvaluationError(f"{items_path}: the catalog is empty")
    known = {item.item_id for item in items}
    by_user: dict[str, list[EventRecord]] = defaultdict(list)
    n_events = 0
    for event in read_events(events_path):
        n_events += 1
        if event.item_id in known:
            by_user[event.user_id].append(event)
    first_seen: dict[str, float] = {}
    for events in by_user.values():
        for event in events:
            first_seen[event.item_id] = min(event.ts, first_seen.get(event.item_id, event.ts))
    splits, train = _split(by_user.values())
    if not splits:
        raise EvaluationError(f"{events_path}: no user has the 3 events leave-one-out needs")
    chosen = splits[:max_users]
    stats = {
        "items_path": str(items_path),
        "events_path": str(events_path),
        "items": len(items),
        "events": n_events,
        "events_unknown_item": n_events - sum(len(v) for v in by_user.values()),
        "users": len(by_user),
        "users_skipped_short": len(by_user) - len(splits),
        "users_evaluated": len(chosen),
        "train_events": len(train),
    }
    return Dataset(tuple(chosen), TrainData(items, tuple(train)), stats, first_seen)


def _split(per_user: Iterable[list[EventRecord]]) -> tuple[list[UserSplit], list[EventRecord]]:
    splits: list[UserSplit] = []
    train: list[EventRecord] = []
    for events in per_user:
        ordered = sorted(events, key=lambda e: e.ts)  # stable: file order breaks ties
        targets = [n for n, e in enumerate(ordered) if e.event_type != DISLIKE][-2:]
        if len(targets) < 2 or targets[0] < 1:
            train.extend(ordered)
            continue
        history = tuple(ordered[: targets[0]])
        splits.append(UserSplit(ordered[0].user_id, history, *(ordered[n] for n in targets)))
        train.extend(history)
    train.sort(key=lambda e: e.ts)
    return splits, train


# --------------------------------------------------------------------------- the run


def run_evaluation(
    items_path: Path,
    events_path: Path,
    model_dir: Path,
    *,
    out_dir: Path,
    k_values: Sequence[int] = (10, 20),
    max_users: int | None = None,
    models: Sequence[Recommender] | None = None,
    item_vectors: ItemVectors | None = None,
    cold_start: ColdStart | None = None,
) -> EvaluationReport:
    """Evaluate ``models`` (default: :func:`default_models` on ``model_dir``); write the files.

    Writes ``evaluation.json``, ``evaluation.md`` and, when matplotlib is installed,
    ``evaluation.png`` into ``out_dir``. Beyond-accuracy metrics: :mod:`streams.offline.beyond`
    (ILD on ``item_vectors``, default the first :class:`ShortTermModel`'s text index); with
    :class:`MMRModel` rows, lambda is chosen on validation (:func:`choose_mmr_lambda`); with
    ``cold_start``, the cold-start table too (:mod:`streams.offline.coldstart`)."""
    if not k_values or min(k_values) < 1:
        raise EvaluationError(f"k_values must be >= 1, got {tuple(k_values)}")
    start = time.perf_counter()
    data = load_dataset(Path(items_path), Path(events_path), max_users)
    seconds: dict[str, Any] = {"load": time.perf_counter() - start, "models": {}}
    chosen = list(models) if models is not None else default_models(Path(model_dir))
    ranked: list[tuple[ModelScores, list[list[str]]]] = []
    for model in chosen:
        model_ranked, seconds["models"][model.name] = _evaluate_model(model, data, k_values)
        ranked.extend(model_ranked)
    if item_vectors is None:
        item_vectors = next((m.index for m in chosen if isinstance(m, ShortTermModel)), None)
    lists = ListMetrics.build(data.train, data.first_seen, item_vectors)
    k = min(k_values)
    scores = [
        replace(row, metrics={**row.metrics, **lists.score(r, data.contexts(row.stage), k)})
        for row, r in ranked
    ]
    mmr_models = [m for m in chosen if isinstance(m, MMRModel)]
    choice = choose_mmr_lambda(scores, [m for m in mmr_models if m.base is mmr_models[0].base], k)
    sections: dict[str, ColdStartTable] = {}
    if cold_start is not None:
        timelines = [(*u.history, u.validation, u.test) for u in data.users]
        sections["cold_start"] = cold_start.run(timelines, data.train, Path(events_path), chosen, k)
    seconds["total"] = time.perf_counter() - start
    return write_outputs(data.stats, tuple(sorted(set(k_values))), scores, seconds, Path(out_dir),
                         {"mmr": choice} if choice else None, sections)  # fmt: skip


def _evaluate_model(
    model: Recommender, data: Dataset, k_values: Sequence[int]
) -> tuple[list[tuple[ModelScores, list[list[str]]]], dict[str, float]]:
    """Accuracy scores of each (stage, masked) row, with the lists they were computed on."""
    start = time.perf_counter()
    model.fit(data.train)
    timings = {"fit": time.perf_counter() - start}
    scores: list[tuple[ModelScores, list[list[str]]]] = []
    for stage in STAGES:
        start = time.perf_counter()
        contexts = data.contexts(stage)
        targets = [user.target(stage) for user in data.users]
        for masked in (True, False):
            ranked = rank_all(model, contexts, max(k_values), masked)
            metrics = score_ranks(target_ranks(ranked, targets), k_values)
            row = ModelScores(model.name, stage, masked, len(contexts), metrics)
            scores.append((row, ranked))
        timings[stage] = time.perf_counter() - start
    log.info("%s: %s", model.name, {k: round(v, 2) for k, v in timings.items()})
    return scores, timings


# --------------------------------------------------------------------------- CLI


@click.command("evaluate")
@click.option(
    "--items",
    "items_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Items file (default: MovieLens-100k under the home folder).",
)
@click.option(
    "--events",
    "events_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Events file (default: MovieLens-100k under the home folder).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output folder (default: <home>/eval).",
)
@click.option(
    "--max-users",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate only the first N users (training data is unchanged).",
)
@click.option(
    "--sequence-model",
    "sequence_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Exported sequence Transformer (default: <home>/models/sequence when it is there).",
)
@click.option(
    "--blend",
    "blend_weights",
    type=click.FloatRange(0.0, 1.0),
    multiple=True,
    help="Rank by W x Transformer + (1 - W) x short-term (standardised scores); repeatable "
    "(default: INTEREST_STREAM_BLEND_WEIGHT, what the stream serves).",
)
@click.option(
    "--peer",
    "peer_files",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    multiple=True,
    help="A peer system's stored rankings on this split (JSON); repeatable.",
)
@click.option(
    "--mmr",
    "mmr_lambdas",
    type=click.FloatRange(0.0, 1.0),
    multiple=True,
    help="Add the served ranker re-ranked by MMR with this lambda (1: no re-ranking); "
    f"repeatable (default: {', '.join(map(str, MMR_GRID))}; lambda is chosen on validation).",
)
@click.option("--no-mmr", is_flag=True, help="No MMR rows.")
@click.option("--lists", "list_slots", multiple=True, metavar="I,E", help="Add the served lists: "
              "MMR, I interest slots, E exploration slots (streams.worker.lists); repeatable.")
@click.option("--cold-start", is_flag=True, help="Add the cold-start table (first 1-5 events).")
@click.pass_context
def evaluate_command(
    ctx: click.Context,
    items_path: Path | None,
    events_path: Path | None,
    out_dir: Path | None,
    max_users: int | None,
    sequence_dir: Path | None,
    blend_weights: tuple[float, ...],
    peer_files: tuple[Path, ...],
    mmr_lambdas: tuple[float, ...],
    no_mmr: bool,
    list_slots: tuple[str, ...],
    cold_start: bool,
) -> None:
    """Offline quality by time: popularity, short-term, Transformer, blends, lists, peers."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    items_path, events_path = data_paths(settings, items_path, events_path)
    model_dir = settings.resolved_model_dir
    if not is_exported(model_dir) or settings.encoder_int8:
        from streams.worker.runtime import ensure_model  # imports faust: only when an export is due

        ensure_model(settings)
    params = UpdateParams(half_life_s=settings.half_life_s, history_len=MAX_RING_LEN)
    if sequence_dir is None and is_sequence_model(settings.resolved_sequence_model_dir):
        sequence_dir = settings.resolved_sequence_model_dir
    mmr_lambdas = () if no_mmr else (mmr_lambdas or MMR_GRID)
    if sequence_dir is not None and (mmr_lambdas or list_slots or not blend_weights):
        blend_weights = tuple(dict.fromkeys((*blend_weights, settings.blend_weight)))
    models = default_models(
        model_dir,
        params=params,
        provider=settings.provider,
        sequence_dir=sequence_dir,
        blend_weights=blend_weights,
        history_len=settings.history_len,
        quantized=settings.encoder_int8,
    )
    if mmr_lambdas or list_slots:
        served = served_model(models, settings.blend_weight if sequence_dir else None)
        models.extend(MMRModel(served, lam) for lam in mmr_lambdas)
        models.extend(lists_models(served, settings.mmr_lambda, list_slots))
    models.extend(PeerModel.load(path) for path in peer_files)
    report = run_evaluation(
        items_path,
        events_path,
        model_dir,
        out_dir=out_dir or settings.home / "eval",
        max_users=max_users,
        models=models,
        cold_start=ColdStart.from_settings(settings, sequence=sequence_dir is not None)
        if cold_start
        else None,
    )
    click.echo(report.markdown())
    click.echo(f"written: {report.json_path}, {report.markdown_path}")
    click.echo(str(report.chart_path) if report.chart_path else report.chart_note)


def data_paths(settings: Settings, items_path: Path | None,
               events_path: Path | None) -> tuple[Path, Path]:  # fmt: skip
    """Both given, or neither (MovieLens-100k, prepared on first use)."""
    if items_path is not None and events_path is not None:
        return items_path, events_path
    if items_path is not None or events_path is not None:
        raise click.UsageError("give both --items and --events, or neither (MovieLens-100k)")
    folder = settings.home / "data" / "ml-100k"
    items, events = folder / "items.jsonl", folder / "events.jsonl"
    if not (items.is_file() and events.is_file()):
        from streams.data.movielens import prepare_ml100k

        return prepare_ml100k(folder, settings.home / "cache")
    return items, events
