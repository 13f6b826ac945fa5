"""``interest-stream train``: the sequence Transformer from an items file and an events file.

The split is the evaluator's (:func:`streams.offline.evaluate.load_dataset`): per user the last
event is the test target, the one before the validation target (early stopping), the rest training
data. The catalog is encoded once by the ONNX text encoder; the model is trained with torch (the
``export`` extra), exported to ONNX, checked against torch, and written with its model card.
The card carries a fingerprint of the training events, which the evaluator checks so that a
model is never scored on events it was trained on.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from encoders import EncoderError, TextEncoder, is_exported
from encoders.build.sequence_data import TrainConfig, TrainingData
from streams.contract import EventRecord
from streams.offline.evaluate import Dataset, data_paths, load_dataset
from streams.offline.rankers import events_fingerprint, to_sequence
from streams.settings import Settings

__all__ = [
    "train_command",
    "train_sequence",
    "training_data",
]

log = logging.getLogger(__name__)


def training_data(dataset: Dataset, encoder: TextEncoder) -> TrainingData:
    """Text vectors of the catalog, per-user training sequences, validation (context, target)."""
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
    )


def train_sequence(
    items_path: Path,
    events_path: Path,
    encoder: TextEncoder,
    out_dir: Path,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train, export and validate; returns the model card written into ``out_dir``."""
    from encoders.build.sequence_export import export_sequence_model, train_sequence_model

    start = time.perf_counter()
    dataset = load_dataset(items_path, events_path)
    data = training_data(dataset, encoder)
    result = train_sequence_model(data, config, on_epoch)
    card = {
        "data": {
            **dataset.stats,
            "train_fingerprint": events_fingerprint(dataset.train.events),
            "text_encoder": encoder.model_version,
        },
        "split": "leave-one-out by time: last event test, previous validation, rest training",
        "metrics": {
            "validation_masked_ndcg10": result.best_ndcg10,
            "validation_masked_hr10": next(
                (h["val_hr10"] for h in result.history if h["epoch"] == result.best_epoch), None
            ),
        },
        "seconds_total": round(time.perf_counter() - start, 2),
    }
    return export_sequence_model(result, out_dir, card=card)


def _show(record: dict[str, float] | None) -> str:
    if not record:
        return ""
    text = f"loss {record['loss']:.3f}"
    if "val_ndcg10" in record:
        text += f" val NDCG@10 {record['val_ndcg10']:.4f}"
    return text


@click.command("train")
@click.option("--items", "items_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Items file (default: MovieLens-100k).")  # fmt: skip
@click.option("--events", "events_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Chronological events file (default: ml-100k).")  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Model folder (default: <home>/models/sequence).")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True,
              help="Validation checks without improvement before stopping.")  # fmt: skip
@click.option("--eval-every", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-len", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--dim", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--heads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dropout", type=click.FloatRange(0.0, 0.9), default=0.3, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=2e-3,
              show_default=True)  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.pass_context
def train_command(ctx: click.Context, /, items_path: Path | None, events_path: Path | None,
                  out_dir: Path | None, **params: Any) -> None:  # fmt: skip
    """Train the sequence Transformer, export it to ONNX and write its model card."""
    settings = ctx.obj if isinstance(ctx.obj, Settings) else Settings.from_env()
    items_path, events_path = data_paths(settings, items_path, events_path)
    out_dir = out_dir or settings.home / "models" / "sequence"
    try:
        config = TrainConfig(**params)
        if config.dim % config.heads:
            raise click.UsageError(f"--dim {config.dim} is not divisible by --heads {config.heads}")
        if not is_exported(settings.resolved_model_dir):
            from streams.worker.runtime import (
                ensure_model,  # imports faust: only when an export is due
            )

            ensure_model(settings)
        encoder = TextEncoder.load(settings.resolved_model_dir, provider=settings.provider)
        with click.progressbar(length=config.epochs, label="training",
                               item_show_func=_show) as bar:  # fmt: skip

            def progress(record: dict[str, float]) -> None:
                bar.update(1, record)
                # no terminal (CI, a log file): one line per validation check
                if "val_ndcg10" in record and not sys.stdout.isatty():
                    click.echo(f"epoch {record['epoch']:.0f}: {_show(record)}")

            card = train_sequence(items_path, events_path, encoder, out_dir, config, progress)
    except EncoderError as exc:
        raise click.ClickException(str(exc)) from exc
    training = card["training"]
    click.echo(
        f"model {card['version']} in {out_dir}: best validation NDCG@10 "
        f"{training['best_validation_ndcg10']:.4f} at epoch {training['best_epoch']} "
        f"({training['epochs_run']} epochs, {training['seconds']:.0f} s training)"
    )
