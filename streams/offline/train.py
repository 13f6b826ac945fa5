"""``interest-stream train``: the sequence Transformer from an items file and an events file,
or from the event topics (``--from-kafka``).

The split is the evaluator's (:func:`streams.offline.evaluate.load_dataset`): per user the last
event that is not a dislike is the test target, the one before the validation target (early
stopping), the earlier events training data. The catalog is encoded once by the ONNX text encoder;
the model is trained with torch (the ``export`` extra), exported to ONNX, checked against torch, and
written with its model card.
The card carries a fingerprint of the training events, which the evaluator checks so that a
model is never scored on events it was trained on.

``--from-kafka`` reads the event topics (:mod:`streams.offline.from_kafka`) into an items file
and an events file (``--snapshot``) and trains on those: the same format, the same split. An
``--out`` that is a versioned live folder (a link into ``<out>.versions``, made by
``interest-stream trainer``: :mod:`streams.offline.versions`) gets the model as a new version,
promoted without a comparison and logged as such; a model is never written into a kept version.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from encoders import EncoderError, TextEncoder, is_exported
from encoders.build.sequence_data import TrainConfig, TrainingData
from encoders.errors import InputError
from streams.contract import EventRecord, ItemRecord
from streams.offline.evaluate import Dataset, data_paths, load_dataset
from streams.offline.from_kafka import SINCE, Since, read_log
from streams.offline.rankers import events_fingerprint, to_sequence
from streams.offline.versions import ModelStore, append_decision
from streams.settings import Settings

__all__ = [
    "load_encoder",
    "model_options",
    "train_command",
    "train_config",
    "train_dataset",
    "item_vector_matrix",
    "train_sequence",
    "training_data",
]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger(__name__)


def training_data(dataset: Dataset, encoder: TextEncoder) -> TrainingData:
    """Text vectors, tags and ``vector``s of the catalog, per-user training sequences,
    validation (context, target). The items' vectors must share one length (that of the
    first); an item without one gets a zero row (no contribution)."""
    items = dataset.train.items
    vectors = encoder.encode([item.text for item in items])
    by_user: dict[str, list[EventRecord]] = defaultdict(list)
    for event in dataset.train.events:  # chronological
        by_user[event.user_id].append(event)
    validation = tuple(
        (to_sequence(user.history), user.validation.item_id) for user in dataset.users
    )
    return TrainingData(
        item_ids=tuple(item.item_id for item in items),
        text_vectors=vectors,
        train=tuple(to_sequence(events) for events in by_user.values()),
        validation=validation,
        item_tags=tuple(item.tags for item in items),
        item_vectors=item_vector_matrix(items),
    )


def item_vector_matrix(items: Sequence[ItemRecord]) -> np.ndarray | None:
    """float32 [n_items, V] of the items' ``vector`` (zeros for an item without one), or
    ``None`` when no item has one; :class:`EncoderError` when two lengths differ."""
    lengths = {len(item.vector) for item in items if item.vector is not None}
    if not lengths:
        return None
    if len(lengths) > 1:
        raise InputError(f"the items' vectors have different lengths {sorted(lengths)}: one "
                         "length per catalog")  # fmt: skip
    out = np.zeros((len(items), lengths.pop()), dtype=np.float32)
    for n, item in enumerate(items):
        if item.vector is not None:
            out[n] = item.vector
    return out


def train_sequence(
    items_path: Path,
    events_path: Path,
    encoder: TextEncoder,
    out_dir: Path,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    *,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, export and validate; returns the model card written into ``out_dir``."""
    start = time.perf_counter()
    dataset = load_dataset(items_path, events_path)
    return train_dataset(dataset, encoder, out_dir, config, on_epoch, source=source, start=start)


def train_dataset(
    dataset: Dataset,
    encoder: TextEncoder,
    out_dir: Path,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    *,
    source: Mapping[str, Any] | None = None,
    start: float | None = None,
) -> dict[str, Any]:
    """:func:`train_sequence` on a split already loaded; ``source`` (e.g. what reading the
    topics found) goes into the card's ``data.source``."""
    from encoders.build.sequence_export import export_sequence_model, train_sequence_model

    start = time.perf_counter() if start is None else start
    data = training_data(dataset, encoder)
    result = train_sequence_model(data, config, on_epoch)
    card = {
        "data": {
            **dataset.stats,
            "train_fingerprint": events_fingerprint(dataset.train.events),
            "text_encoder": encoder.model_version,
            **({"source": dict(source)} if source else {}),
        },
        "split": "leave-one-out by time: last event test, previous validation, rest training "
                 "(dislikes never targets)",
        "metrics": {
            "validation_masked_ndcg10": result.best_ndcg10,
            "validation_masked_hr10": next(
                (h["val_hr10"] for h in result.history if h["epoch"] == result.best_epoch), None
            ),
        },
        "seconds_total": round(time.perf_counter() - start, 2),
    }
    return export_sequence_model(result, out_dir, card=card, item_tags=data.item_tags,
                                 item_vectors=data.item_vectors)  # fmt: skip


def _show(record: dict[str, float] | None) -> str:
    if not record:
        return ""
    text = f"loss {record['loss']:.3f}"
    if "val_ndcg10" in record:
        text += f" val NDCG@10 {record['val_ndcg10']:.4f}"
    return text


def model_options(command: F) -> F:
    """The model's hyper-parameter options, shared by ``train`` and ``trainer``."""
    options = [
        click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True),
        click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Validation checks without improvement before stopping."),
        click.option("--eval-every", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--max-len", type=click.IntRange(min=1), default=50, show_default=True),
        click.option("--dim", type=click.IntRange(min=8), default=64, show_default=True),
        click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--heads", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--dropout", type=click.FloatRange(0.0, 0.9), default=0.3,
                     show_default=True),
        click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=2e-3,
                     show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=128,
                     show_default=True),
        click.option("--tags/--no-tags", default=TrainConfig().tags, show_default=True,
                     help="Fuse the items' tags into their vectors (docs/model.md)."),
        click.option("--context/--no-context", default=TrainConfig().context,
                     show_default=True, help="Hour of day and day of week (UTC) of each "
                     "event as model inputs."),
        click.option("--item-vectors/--no-item-vectors", default=TrainConfig().item_vectors,
                     show_default=True, help="Fuse the items' `vector` into their vectors."),
        click.option("--dislikes/--no-dislikes", default=TrainConfig().dislikes,
                     show_default=True, help="Dislike events as model inputs (never targets); "
                     "off: left out of its inputs."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def train_config(params: Mapping[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` of the :func:`model_options` values (a usage error when
    ``--dim`` is not divisible by ``--heads``)."""
    config = TrainConfig(**params)
    if config.dim % config.heads:
        raise click.UsageError(f"--dim {config.dim} is not divisible by --heads {config.heads}")
    return config


def load_encoder(settings: Settings) -> TextEncoder:
    """The text encoder the workers run, exported first when it is not there yet."""
    if not is_exported(settings.resolved_model_dir):
        from streams.worker.runtime import ensure_model  # imports faust: only when an export is due

        ensure_model(settings)
    return TextEncoder.load(settings.resolved_model_dir, provider=settings.provider)


@click.command("train")
@click.option("--items", "items_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Items file (default: MovieLens-100k; with --from-kafka: the "
              "items topic).")  # fmt: skip
@click.option("--events", "events_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Chronological events file (default: ml-100k).")  # fmt: skip
@click.option("--from-kafka", is_flag=True,
              help="Read the event topics (from the start, or --since), not a file.")  # fmt: skip
@click.option("--since", type=SINCE, default=None,
              help="With --from-kafka: records from this time (epoch s, ISO-8601) or this long "
              "ago (30d, 12h) on, by record timestamp.")  # fmt: skip
@click.option("--snapshot", "snapshot_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="With --from-kafka: where the topics' events and catalog are "
              "written (default: <home>/data/from-kafka).")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Model folder (default: <home>/models/sequence).")  # fmt: skip
@model_options
@click.pass_context
def train_command(ctx: click.Context, /, items_path: Path | None, events_path: Path | None,
                  from_kafka: bool, since: Since | None, snapshot_dir: Path | None,
                  out_dir: Path | None, **params: Any) -> None:  # fmt: skip
    """Train the sequence Transformer, export it to ONNX and write its model card."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    config = train_config(params)
    source: dict[str, Any] | None = None
    if from_kafka:
        if events_path is not None:
            raise click.UsageError("--from-kafka reads the events from the topics: no --events")
        if not settings.bootstrap:
            raise click.UsageError("--from-kafka needs a broker: KAFKA_BOOTSTRAP or --bootstrap")
        snapshot = read_log(settings, snapshot_dir or settings.home / "data" / "from-kafka",
                            since=since, items_path=items_path)  # fmt: skip
        click.echo(snapshot.summary())
        items_path, events_path, source = snapshot.items_path, snapshot.events_path, {
            **snapshot.as_dict(), "events_path": str(snapshot.events_path)}  # fmt: skip
    elif since is not None or snapshot_dir is not None:
        raise click.UsageError("--since and --snapshot go with --from-kafka")
    items_path, events_path = data_paths(settings, items_path, events_path)
    out_dir = out_dir or settings.home / "models" / "sequence"
    versioned = ModelStore(out_dir)  # a link into <out>.versions: a new version, never in place
    store = versioned if versioned.serving_folder() is not None else None
    target = store.staging() if store is not None else out_dir
    try:
        encoder = load_encoder(settings)
        with click.progressbar(length=config.epochs, label="training",
                               item_show_func=_show) as bar:  # fmt: skip

            def progress(record: dict[str, float]) -> None:
                bar.update(1, record)
                # no terminal (CI, a log file): one line per validation check
                if "val_ndcg10" in record and not sys.stdout.isatty():
                    click.echo(f"epoch {record['epoch']:.0f}: {_show(record)}")

            card = train_sequence(items_path, events_path, encoder, target, config, progress,
                                  source=source)  # fmt: skip
        if store is not None:
            _promote_by_hand(store, target, card)
    except EncoderError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if store is not None:
            store.discard(target)
    training = card["training"]
    click.echo(
        f"model {card['version']} in {out_dir}: best validation NDCG@10 "
        f"{training['best_validation_ndcg10']:.4f} at epoch {training['best_epoch']} "
        f"({training['epochs_run']} epochs, {training['seconds']:.0f} s training)"
    )


def _promote_by_hand(store: ModelStore, staged: Path, card: Mapping[str, Any]) -> None:
    """``train --out`` a versioned folder: a new version, served at once, logged as such."""
    serving = store.serving()
    store.promote(staged, how="train")
    append_decision(store.decisions, {
        "time": time.time(), "action": "manual", "promoted": True,
        "candidate": card["version"], "serving": serving,
        "reason": "interest-stream train --out: promoted without a comparison",
    })  # fmt: skip
    click.echo(f"promoted {card['version']} (was {serving}); "
               "`interest-stream model rollback` goes back")  # fmt: skip
