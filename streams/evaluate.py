"""Offline evaluation: leave-one-out by time, full ranking over all items, models side by side.

Per user, events sorted by time: the last is the test target, the one before it the validation
target, the rest the history (users with fewer than 3 events are skipped and counted). A model
is fitted once on the training events (every user's history, never a validation or test
event) and then ranks the whole catalog for each user from the events before the target: the
history for validation, history + validation event for test. Numbers are reported with the
user's own events masked (what a live recommender serves) and unmasked. See
``docs/evaluation.md``.

A model is anything shaped like :class:`Recommender`. :class:`ShortTermModel` is the stream's
own model: it replays events through the very same :func:`interest_state.update` and ranks with
:func:`interest_state.rank`, so the quality measured here is the quality served online.

    StreamError
     └── EvaluationError   the data cannot be evaluated, or a model broke the ranking contract
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import click
import numpy as np

from encoders import EncoderError, ItemIndex, TextEncoder, is_exported
from interest_state import (
    Event,
    EventType,
    InterestState,
    InterestStateError,
    Observation,
    UpdateParams,
    rank,
    update,
)
from interest_state.params import MAX_RING_LEN
from streams.datasets import EventRecord, ItemRecord, read_events, read_items
from streams.errors import StreamError
from streams.settings import Settings

__all__ = [
    "STAGES",
    "Dataset",
    "EvaluationError",
    "EvaluationReport",
    "MetricValue",
    "ModelScores",
    "PopularityModel",
    "Recommender",
    "ShortTermModel",
    "TrainData",
    "UserContext",
    "UserSplit",
    "default_models",
    "evaluate_command",
    "load_dataset",
    "metric_names",
    "run_evaluation",
    "score_ranks",
    "target_ranks",
]

log = logging.getLogger(__name__)

STAGES = ("validation", "test")
RANK_BATCH = 256
"""Users ranked per model call (one matrix product each in :class:`ShortTermModel`)."""
CHART_MISSING = "matplotlib is not installed: PNG chart skipped (pip install matplotlib)"


class EvaluationError(StreamError):
    """The data set cannot be evaluated, or a model broke the ranking contract."""


# --------------------------------------------------------------------------- data and split


@dataclass(frozen=True, slots=True)
class UserContext:
    """What a model may read about one user at ranking time: the events before the target."""

    user_id: str
    events: tuple[EventRecord, ...]

    def seen(self) -> frozenset[str]:
        return frozenset(event.item_id for event in self.events)


@dataclass(frozen=True, slots=True)
class UserSplit:
    """One user's events split by time: history, validation event, test event."""

    user_id: str
    history: tuple[EventRecord, ...]
    validation: EventRecord
    test: EventRecord

    def context(self, stage: str) -> UserContext:
        events = self.history if stage == "validation" else (*self.history, self.validation)
        return UserContext(self.user_id, events)

    def target(self, stage: str) -> str:
        return (self.validation if stage == "validation" else self.test).item_id


@dataclass(frozen=True, slots=True)
class TrainData:
    """What :meth:`Recommender.fit` may read: the catalog and the training events only."""

    items: tuple[ItemRecord, ...]
    events: tuple[EventRecord, ...]


@dataclass(frozen=True, slots=True)
class Dataset:
    users: tuple[UserSplit, ...]
    train: TrainData
    stats: dict[str, Any]


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
    return Dataset(tuple(chosen), TrainData(items, tuple(train)), stats)


def _split(per_user: Iterable[list[EventRecord]]) -> tuple[list[UserSplit], list[EventRecord]]:
    splits: list[UserSplit] = []
    train: list[EventRecord] = []
    for events in per_user:
        ordered = sorted(events, key=lambda e: e.ts)  # stable: file order breaks ties
        if len(ordered) < 3:
            train.extend(ordered)
            continue
        history = tuple(ordered[:-2])
        splits.append(UserSplit(ordered[0].user_id, history, ordered[-2], ordered[-1]))
        train.extend(history)
    train.sort(key=lambda e: e.ts)
    return splits, train


# --------------------------------------------------------------------------- models


class Recommender(Protocol):
    """A model the evaluator can run: fitted once, then asked for many users at a time."""

    name: str

    def fit(self, data: TrainData) -> None:
        """Learn from training events only (never a validation or test event)."""
        ...

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        """Top-``k`` item ids per user, best first, over the whole catalog.

        With ``exclude_seen`` no item of the user's context may be returned.
        """
        ...


class PopularityModel:
    """Items by how often they occur in the training events; ties go by catalog order."""

    name = "popularity"

    def __init__(self) -> None:
        self._order: list[str] = []

    def fit(self, data: TrainData) -> None:
        counts = Counter(event.item_id for event in data.events)
        position = {item.item_id: n for n, item in enumerate(data.items)}
        self._order = sorted(position, key=lambda item_id: (-counts[item_id], position[item_id]))

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        ranked: list[list[str]] = []
        for user in users:
            seen = user.seen() if exclude_seen else frozenset()
            ranked.append(list(islice((i for i in self._order if i not in seen), k)))
        return ranked


class ShortTermModel:
    """The stream's decayed short-term vector: :func:`update` replays, :func:`rank` ranks.

    The catalog is encoded once by ``fit`` into an :class:`ItemIndex`, as the catalog feed
    does. The default ``history_len`` is the largest ring, so the seen-filter of :func:`rank`
    covers the whole context (it does not change the vector); context items beyond the ring
    are filtered here.
    """

    name = "short-term-decay"

    def __init__(self, encoder: TextEncoder, params: UpdateParams | None = None) -> None:
        self.encoder = encoder
        self.params = params or UpdateParams(history_len=MAX_RING_LEN)
        self.index = ItemIndex(encoder.dim)
        self._comment_vectors: dict[str, np.ndarray] = {}
        self._states: dict[tuple[str, int, str], InterestState] = {}

    def fit(self, data: TrainData) -> None:
        fresh = [item for item in data.items if item.item_id not in self.index]
        if fresh:
            vectors = self.encoder.encode([item.text for item in fresh])
            self.index.upsert([i.item_id for i in fresh], [i.title for i in fresh], vectors)
        self._states.clear()

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        self._encode_comments(users)
        states = [self._state(user) for user in users]
        seen = [user.seen() if exclude_seen else frozenset() for user in users]
        beyond_ring = max(
            (len(s - st.seen_items()) for s, st in zip(seen, states, strict=True)), default=0
        )
        recs = rank(states, self.index, k + beyond_ring, exclude_seen=exclude_seen)
        return [
            [r.item_id for r in user_recs if r.item_id not in user_seen][:k]
            for user_recs, user_seen in zip(recs, seen, strict=True)
        ]

    def _encode_comments(self, users: Sequence[UserContext]) -> None:
        """One encoder call for every comment text not encoded yet (as the pipeline does)."""
        todo = {
            e.event_id: e.text
            for user in users
            for e in user.events
            if e.event_type == "comment" and e.text and e.event_id not in self._comment_vectors
        }
        if todo:
            vectors = self.encoder.encode(list(todo.values()))
            self._comment_vectors.update(zip(todo, vectors, strict=True))

    def _state(self, user: UserContext) -> InterestState:
        last = user.events[-1].event_id if user.events else ""
        key = (user.user_id, len(user.events), last)
        if key not in self._states:
            self._states[key] = self._replay(user)
        return self._states[key]

    def _replay(self, user: UserContext) -> InterestState:
        observations = []
        for record in user.events:
            vector = self.index.vector(record.item_id)
            if vector is not None:  # the stream dead-letters events of unknown items
                text_vector = self._comment_vectors.get(record.event_id)
                observations.append(Observation(_to_event(record), vector, text_vector))
        try:
            state, _ = update(InterestState.empty(self.index.dim), observations, self.params)
        except InterestStateError as exc:
            raise EvaluationError(f"user {user.user_id!r}: {exc}") from exc
        return state


def _to_event(record: EventRecord) -> Event:
    return Event(
        event_id=record.event_id,
        user_id=record.user_id,
        item_id=record.item_id,
        event_type=EventType[record.event_type.upper()],
        ts=record.ts,
        dwell_ms=record.dwell_ms,
        text=record.text,
        context=record.context or {},
    )


def default_models(
    model_dir: Path, *, params: UpdateParams | None = None, provider: str = "auto"
) -> list[Recommender]:
    """Popularity and the stream's short-term model on the text encoder in ``model_dir``."""
    try:
        encoder = TextEncoder.load(model_dir, provider=provider)
    except EncoderError as exc:
        raise EvaluationError(f"cannot load the text encoder from {model_dir}: {exc}") from exc
    return [PopularityModel(), ShortTermModel(encoder, params)]


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class MetricValue:
    """Mean over users and its standard error, ``std(ddof=1) / sqrt(n)``."""

    mean: float
    se: float


@dataclass(frozen=True, slots=True)
class ModelScores:
    model: str
    stage: str
    masked: bool
    n_users: int
    metrics: dict[str, MetricValue]


def metric_names(k_values: Sequence[int]) -> list[str]:
    ks = sorted(set(k_values))
    return [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + [f"MRR@{ks[0]}"]


def target_ranks(ranked: Sequence[Sequence[str]], targets: Sequence[str]) -> list[int | None]:
    """1-based position of each target in its list, ``None`` when it is not there."""
    return [
        items.index(target) + 1 if target in items else None
        for items, target in zip(ranked, targets, strict=True)
    ]


def score_ranks(ranks: Sequence[int | None], k_values: Sequence[int]) -> dict[str, MetricValue]:
    """HR@k, NDCG@k (one relevant item: ``1 / log2(rank + 1)``) and MRR at the smallest k."""
    r = np.array([math.inf if x is None else float(x) for x in ranks], dtype=np.float64)
    ks = sorted(set(k_values))
    per_user: dict[str, np.ndarray] = {}
    for k in ks:
        hit = r <= k
        per_user[f"HR@{k}"] = hit.astype(np.float64)
        per_user[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    per_user[f"MRR@{ks[0]}"] = np.where(r <= ks[0], 1.0 / r, 0.0)
    return {name: _mean_se(per_user[name]) for name in metric_names(ks)}


def _mean_se(values: np.ndarray) -> MetricValue:
    n = len(values)
    se = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return MetricValue(mean=float(np.mean(values)) if n else 0.0, se=se)


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    dataset: dict[str, Any]
    k_values: tuple[int, ...]
    scores: tuple[ModelScores, ...]
    seconds: dict[str, Any]
    json_path: Path
    markdown_path: Path
    chart_path: Path | None
    chart_note: str

    def score(self, model: str, stage: str, *, masked: bool) -> ModelScores:
        for s in self.scores:
            if (s.model, s.stage, s.masked) == (model, stage, masked):
                return s
        raise KeyError((model, stage, masked))

    def markdown(self) -> str:
        return _markdown(self)


def run_evaluation(
    items_path: Path,
    events_path: Path,
    model_dir: Path,
    *,
    out_dir: Path,
    k_values: Sequence[int] = (10, 20),
    max_users: int | None = None,
    models: Sequence[Recommender] | None = None,
) -> EvaluationReport:
    """Evaluate ``models`` (default: :func:`default_models` on ``model_dir``); write the files.

    Writes ``evaluation.json``, ``evaluation.md`` and, when matplotlib is installed,
    ``evaluation.png`` into ``out_dir``.
    """
    if not k_values or min(k_values) < 1:
        raise EvaluationError(f"k_values must be >= 1, got {tuple(k_values)}")
    start = time.perf_counter()
    data = load_dataset(Path(items_path), Path(events_path), max_users)
    seconds: dict[str, Any] = {"load": time.perf_counter() - start, "models": {}}
    chosen = list(models) if models is not None else default_models(Path(model_dir))
    scores: list[ModelScores] = []
    for model in chosen:
        model_scores, seconds["models"][model.name] = _evaluate_model(model, data, k_values)
        scores.extend(model_scores)
    seconds["total"] = time.perf_counter() - start
    return _write_outputs(data, tuple(sorted(set(k_values))), scores, seconds, Path(out_dir))


def _evaluate_model(
    model: Recommender, data: Dataset, k_values: Sequence[int]
) -> tuple[list[ModelScores], dict[str, float]]:
    start = time.perf_counter()
    model.fit(data.train)
    timings = {"fit": time.perf_counter() - start}
    scores: list[ModelScores] = []
    for stage in STAGES:
        start = time.perf_counter()
        contexts = [user.context(stage) for user in data.users]
        targets = [user.target(stage) for user in data.users]
        for masked in (True, False):
            ranked = _rank_all(model, contexts, max(k_values), masked)
            metrics = score_ranks(target_ranks(ranked, targets), k_values)
            scores.append(ModelScores(model.name, stage, masked, len(contexts), metrics))
        timings[stage] = time.perf_counter() - start
    log.info("%s: %s", model.name, {k: round(v, 2) for k, v in timings.items()})
    return scores, timings


def _rank_all(
    model: Recommender, users: Sequence[UserContext], k: int, masked: bool
) -> list[list[str]]:
    """Rank ``users`` in batches and check the model kept its contract."""
    ranked: list[list[str]] = []
    for start in range(0, len(users), RANK_BATCH):
        batch = users[start : start + RANK_BATCH]
        got = model.rank(batch, k, exclude_seen=masked)
        if len(got) != len(batch) or any(len(items) > k for items in got):
            raise EvaluationError(f"{model.name}: rank must give <= {k} items for each user")
        for user, items in zip(batch, got, strict=True):
            if masked and not user.seen().isdisjoint(items):
                raise EvaluationError(f"{model.name}: recommended a seen item to {user.user_id}")
        ranked.extend(got)
    return ranked


# --------------------------------------------------------------------------- outputs


def _write_outputs(
    data: Dataset,
    k_values: tuple[int, ...],
    scores: list[ModelScores],
    seconds: dict[str, Any],
    out_dir: Path,
) -> EvaluationReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_path = out_dir / "evaluation.png"
    chart_note = _write_chart(scores, k_values[0], chart_path)
    report = EvaluationReport(
        dataset=data.stats,
        k_values=k_values,
        scores=tuple(scores),
        seconds=seconds,
        json_path=out_dir / "evaluation.json",
        markdown_path=out_dir / "evaluation.md",
        chart_path=None if chart_note else chart_path,
        chart_note=chart_note,
    )
    report.json_path.write_text(json.dumps(_as_json(report), indent=2) + "\n", encoding="utf-8")
    report.markdown_path.write_text(report.markdown(), encoding="utf-8")
    return report


def _as_json(report: EvaluationReport) -> dict[str, Any]:
    return {
        "protocol": {
            "split": "leave-one-out by time: last event test, previous validation, rest history",
            "ranking": "full ranking over all catalog items",
            "masked": "items in the user's context (events before the target) excluded",
            "k_values": list(report.k_values),
            "standard_error": "std(ddof=1) / sqrt(n_users)",
        },
        "dataset": report.dataset,
        "seconds": report.seconds,
        "results": [
            {
                "model": s.model,
                "stage": s.stage,
                "masked": s.masked,
                "n_users": s.n_users,
                "metrics": {k: {"mean": v.mean, "se": v.se} for k, v in s.metrics.items()},
            }
            for s in report.scores
        ],
        "chart": str(report.chart_path) if report.chart_path else report.chart_note,
    }


def _markdown(report: EvaluationReport) -> str:
    names = metric_names(report.k_values)
    stats = report.dataset
    lines = [
        f"Leave-one-out by time, full ranking over {stats['items']} items; "
        f"{stats['users_evaluated']} users evaluated ({stats['users_skipped_short']} with "
        f"< 3 events skipped); mean ± standard error; {report.seconds['total']:.1f} s.",
        "",
        "| split | seen items | model | " + " | ".join(names) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for stage in STAGES:
        for masked in (True, False):
            for s in (s for s in report.scores if (s.stage, s.masked) == (stage, masked)):
                cells = [f"{s.metrics[n].mean:.4f} ± {s.metrics[n].se:.4f}" for n in names]
                mask = "masked" if masked else "unmasked"
                lines.append(f"| {stage} | {mask} | {s.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_chart(scores: Sequence[ModelScores], k: int, path: Path) -> str:
    """Bar chart of test HR@k and NDCG@k; returns '' when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning(CHART_MISSING)
        return CHART_MISSING
    rows = [s for s in scores if s.stage == "test"]
    labels = [f"{s.model}\n{'masked' if s.masked else 'unmasked'}" for s in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4.0))
    for offset, name in ((-0.2, f"HR@{k}"), (0.2, f"NDCG@{k}")):
        means = [s.metrics[name].mean for s in rows]
        errors = [s.metrics[name].se for s in rows]
        ax.bar(x + offset, means, width=0.4, yerr=errors, capsize=3, label=name)
    ax.set_xticks(x, labels)
    ax.set_title("test split, leave-one-out by time (error bars: standard error)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return ""


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
@click.pass_context
def evaluate_command(
    ctx: click.Context,
    items_path: Path | None,
    events_path: Path | None,
    out_dir: Path | None,
    max_users: int | None,
) -> None:
    """Offline quality: leave-one-out by time, popularity vs the stream's own model."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    items_path, events_path = _data_paths(settings, items_path, events_path)
    model_dir = settings.resolved_model_dir
    if not is_exported(model_dir):
        from streams.runtime import ensure_model  # imports faust: only when an export is due

        ensure_model(settings)
    params = UpdateParams(half_life_s=settings.half_life_s, history_len=MAX_RING_LEN)
    models = default_models(model_dir, params=params, provider=settings.provider)
    report = run_evaluation(
        items_path,
        events_path,
        model_dir,
        out_dir=out_dir or settings.home / "eval",
        max_users=max_users,
        models=models,
    )
    click.echo(report.markdown())
    click.echo(f"written: {report.json_path}, {report.markdown_path}")
    click.echo(str(report.chart_path) if report.chart_path else report.chart_note)


def _data_paths(
    settings: Settings, items_path: Path | None, events_path: Path | None
) -> tuple[Path, Path]:
    """Both given, or neither (MovieLens-100k, prepared on first use)."""
    if items_path is not None and events_path is not None:
        return items_path, events_path
    if items_path is not None or events_path is not None:
        raise click.UsageError("give both --items and --events, or neither (MovieLens-100k)")
    folder = settings.home / "data" / "ml-100k"
    items, events = folder / "items.jsonl", folder / "events.jsonl"
    if not (items.is_file() and events.is_file()):
        from streams.datasets import prepare_ml100k

        items, events = prepare_ml100k(folder, settings.home / "cache")
    return items, events
