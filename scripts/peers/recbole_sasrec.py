"""RecBole 1.2.1 SASRec as a peer, trained and ranked on the project's leave-one-out split.

Run with the peer's own interpreter (``scripts/peers/setup-recbole.sh`` makes it)::

    .cache/peers/recbole-venv/bin/python scripts/peers/recbole_sasrec.py \
        --items items.jsonl --events events.jsonl --out DIR

The split is the project's (``loo.py`` re-implements ``streams/offline/evaluate.py: load_dataset``:
the project lives in another environment). RecBole reads it from atomic benchmark files
(``benchmark_filename: [train, valid, test]``), so its own splitter never runs. After training
(early stopping on RecBole's validation NDCG@10) every evaluated user is ranked over the whole
catalog by the best model's ``full_sort_predict``, the ranking input's items masked, and the
top 20 of both stages go to ``DIR/recbole-sasrec.json`` for ``interest-stream evaluate --peer``.
"""

from __future__ import annotations

import os

# The RecBole checkpoint holds its Config object; torch >= 2.6 loads weights only by default.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# RecBole 1.2.1 still names aliases that numpy 2 removed.
for _name, _value in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _name):
        setattr(np, _name, _value)

import torch  # noqa: E402
from loo import (  # noqa: E402  (scripts/peers/ is on sys.path: this file's folder)
    K_VALUES,
    STAGES,
    Event,
    PeerError,
    UserSplit,
    events_fingerprint,
    metrics_from_ranks,
    ranks_in,
    read_events,
    read_items,
    split,
)

DATASET = "interest-stream"
PEER = "RecBole 1.2.1 SASRec"
TOP_N = 20


# --------------------------------------------------------------------------- RecBole files


def write_benchmark(
    folder: Path,
    items: Sequence[str],
    splits: Sequence[UserSplit],
    train: dict[str, list[Event]],
    max_len: int,
) -> dict[str, str]:
    """Atomic files ``<dataset>.{item,train.inter,valid.inter,test.inter}``; returns item tokens.

    Ids are written as tokens ``i<catalog index>`` / ``u<n>`` so that any id (spaces and tabs
    included) survives RecBole's tab- and space-separated format. Training rows are every
    prefix of a user's training sequence (at most ``max_len`` items) with the next item as
    target, as RecBole's own augmentation makes them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    token = {item: f"i{n}" for n, item in enumerate(items)}
    user_token = {user: f"u{n}" for n, user in enumerate(train)}
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"

    def row(user: str, seq: Sequence[str], target: str) -> str:
        return (
            f"{user_token[user]}\t{' '.join(token[i] for i in seq[-max_len:])}\t{token[target]}\n"
        )

    train_rows = [
        row(user, [e.item_id for e in seq[:n]], seq[n].item_id)
        for user, seq in train.items()
        for n in range(1, len(seq))
    ]
    files = {
        "item": ["item_id:token\n", *(f"{token[i]}\n" for i in items)],
        "train.inter": [header, *train_rows],
        "valid.inter": [
            header,
            *(row(s.user_id, s.context("validation"), s.target("validation")) for s in splits),
        ],
        "test.inter": [
            header,
            *(row(s.user_id, s.context("test"), s.target("test")) for s in splits),
        ],
    }
    for suffix, lines in files.items():
        (folder / f"{DATASET}.{suffix}").write_text("".join(lines), encoding="utf-8")
    return token


# --------------------------------------------------------------------------- training


def recbole_config(args: argparse.Namespace, data_root: Path, work: Path) -> dict[str, Any]:
    return {
        "data_path": str(data_root),
        "checkpoint_dir": str(work / "saved"),
        "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
        "alias_of_item_id": ["item_id_list"],
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "use_gpu": args.device != "cpu" and torch.cuda.is_available(),
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "epochs": args.epochs,
        "stopping_step": args.patience,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 4096,
        "learning_rate": args.lr,
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "n_layers": args.layers,
        "n_heads": args.heads,
        "hidden_size": args.hidden,
        "inner_size": args.inner,
        "hidden_dropout_prob": args.hidden_dropout,
        "attn_dropout_prob": args.attn_dropout,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": list(K_VALUES),
        "valid_metric": "NDCG@10",
    }


@dataclass
class Trained:
    model: Any
    dataset: Any
    seconds: float
    best_epoch: int
    epochs_run: int
    valid_scores: list[float]
    recbole_metrics: dict[str, dict[str, float]]


def train(args: argparse.Namespace, data_root: Path, work: Path) -> Trained:
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    config = Config(
        model="SASRec", dataset=DATASET, config_dict=recbole_config(args, data_root, work)
    )
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)  # writes under ./log (the caller has changed into the work folder)
    logging.getLogger().setLevel(logging.INFO if args.verbose else logging.WARNING)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    scores: list[float] = []
    start = time.perf_counter()
    _, best_result = trainer.fit(
        train_data,
        valid_data,
        saved=True,
        show_progress=False,
        callback_fn=lambda epoch, score: _progress(scores, epoch, score, start),
    )
    seconds = time.perf_counter() - start
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    best_epoch = int(torch.load(trainer.saved_model_file, map_location="cpu")["epoch"])
    metrics = {"validation": dict(best_result), "test": dict(test_result)}
    return Trained(trainer.model.eval(), dataset, seconds, best_epoch, len(scores), scores, metrics)


def _progress(scores: list[float], epoch: int, score: float, start: float) -> None:
    scores.append(float(score))
    best = int(np.argmax(scores))
    print(
        f"epoch {epoch:3d}  valid NDCG@10 {score:.4f}  best {scores[best]:.4f} (epoch {best})"
        f"  {time.perf_counter() - start:7.1f}s",
        flush=True,
    )


# --------------------------------------------------------------------------- ranking and metrics


def rank(
    trained: Trained, contexts: Sequence[Sequence[str]], token: dict[str, str], max_len: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Top-``TOP_N`` catalog ids per user: with the context's items masked (fewer ids if fewer
    are left), and unmasked (RecBole's own evaluation of sequential models masks nothing)."""
    token_id = trained.dataset.field2token_id["item_id"]
    id_token = trained.dataset.field2id_token["item_id"]
    item_of = {tok: item for item, tok in token.items()}
    to_items = [item_of.get(str(tok), "") for tok in id_token]  # id 0 is [PAD], never ranked
    masked: list[list[str]] = []
    unmasked: list[list[str]] = []
    for lo in range(0, len(contexts), 512):
        batch = [[token_id[token[i]] for i in ctx] for ctx in contexts[lo : lo + 512]]
        scores = _scores(trained, batch, max_len)
        scores[:, 0] = -torch.inf  # RecBole's padding id
        unmasked.extend(_top(scores, to_items))
        for row, ids in enumerate(batch):
            scores[row, ids] = -torch.inf
        masked.extend(_top(scores, to_items))
    return masked, unmasked


def _scores(trained: Trained, batch: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """``full_sort_predict`` on the last ``max_len`` items, right-padded as RecBole pads."""
    from recbole.data.interaction import Interaction

    seq = torch.zeros((len(batch), max_len), dtype=torch.long)
    for row, ids in enumerate(batch):
        tail = ids[-max_len:]
        seq[row, : len(tail)] = torch.tensor(tail)
    lengths = torch.tensor([min(len(ids), max_len) for ids in batch])
    inter = Interaction({"item_id_list": seq, "item_length": lengths})
    with torch.no_grad():
        return trained.model.full_sort_predict(inter.to(trained.model.device)).cpu()


def _top(scores: torch.Tensor, to_items: Sequence[str]) -> list[list[str]]:
    top = torch.topk(scores, min(TOP_N, scores.shape[1]), dim=1)
    return [
        [to_items[c] for c, v in zip(ids, vals, strict=True) if math.isfinite(v)]
        for ids, vals in zip(top.indices.tolist(), top.values.tolist(), strict=True)
    ]


def recount_gap(table: dict[str, dict[str, tuple[float, float]]], trained: Trained) -> float:
    """Largest |RecBole's own metric - ours from the unmasked lists| (RecBole rounds to 1e-4)."""
    gaps = [
        abs(trained.recbole_metrics[stage][name.replace("HR", "hit").lower()] - value[0])
        for stage in STAGES
        for name, value in table[f"{stage} unmasked"].items()
    ]
    return max(gaps)


def print_table(rows: dict[str, dict[str, tuple[float, float]]]) -> None:
    names = list(next(iter(rows.values())))
    print(f"{'':28s}" + "".join(f"{n:>18s}" for n in names))
    for label, values in rows.items():
        print(f"{label:28s}" + "".join(f"{values[n][0]:9.4f} ± {values[n][1]:.4f}" for n in names))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=Path, required=True)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10, help="RecBole stopping_step (epochs)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--inner", type=int, default=256)
    p.add_argument("--hidden-dropout", type=float, default=0.5)
    p.add_argument("--attn-dropout", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", choices=("cpu", "auto"), default="cpu")
    p.add_argument("--verbose", action="store_true", help="RecBole's own INFO log on stderr")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value pairs from the command line
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out.resolve()
    items = read_items(args.items.resolve())
    splits, train_seqs, stats = split(items, read_events(args.events.resolve()))
    if not splits:
        raise PeerError(f"{args.events}: no user has the 3 events leave-one-out needs")
    fingerprint = events_fingerprint(train_seqs)
    print(f"split: {json.dumps(stats)}\nsplit_fingerprint: {fingerprint}", flush=True)
    work = out / "recbole-work"
    token = write_benchmark(work / "data" / DATASET, items, splits, train_seqs, args.max_len)
    os.chdir(work)  # RecBole writes ./log and ./log_tensorboard
    trained = train(args, work / "data", work)
    if trained.dataset.item_num != len(items) + 1:
        raise PeerError(f"RecBole sees {trained.dataset.item_num - 1} items, catalog {len(items)}")
    ranked: dict[str, dict[str, dict[str, list[str]]]] = {"masked": {}, "unmasked": {}}
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for stage in STAGES:
        targets = [s.target(stage) for s in splits]
        lists = rank(trained, [s.context(stage) for s in splits], token, args.max_len)
        for mode, per_user in zip(("masked", "unmasked"), lists, strict=True):
            ranked[mode][stage] = {s.user_id: lst for s, lst in zip(splits, per_user, strict=True)}
            table[f"{stage} {mode}"] = metrics_from_ranks(ranks_in(per_user, targets))
    print(f"\nRecBole's own (unmasked) metrics: {json.dumps(trained.recbole_metrics)}")
    print(f"largest difference to our unmasked recount: {recount_gap(table, trained):.5f}")
    print(
        f"trained {trained.epochs_run} epochs in {trained.seconds:.0f}s, best epoch "
        f"{trained.best_epoch}; {stats['users_evaluated']} users, full ranking over "
        f"{len(items)} items\n"
    )
    print_table(table)
    write_json(
        out / "recbole-sasrec.json",
        {
            "model": "recbole-sasrec",
            "peer": PEER,
            "split_fingerprint": fingerprint,
            "parameters": {
                k: v for k, v in vars(args).items() if k not in ("items", "events", "out")
            },
            "training_seconds": round(trained.seconds, 1),
            "best_epoch": trained.best_epoch,
            "epochs_run": trained.epochs_run,
            "recbole_metrics": trained.recbole_metrics,
            "metrics": {
                label: {m: list(v) for m, v in row.items()} for label, row in table.items()
            },
            "split": stats,
            "ranked": ranked["masked"],
            "ranked_unmasked": ranked["unmasked"],
        },
    )
    print(f"\nwrote {out / 'recbole-sasrec.json'}")
    return 0


def write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PeerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
