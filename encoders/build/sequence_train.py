"""The sequence (interest) Transformer in torch, and its training; needs torch (the export extra).

The model: a causal pre-LayerNorm Transformer over a user's last ``max_len`` events. Each
position is the item vector (a projection of the item's text vector plus a learned id embedding
for items seen in training; index 0 = cold, text only) plus event-type, time-gap-bucket and
position embeddings (position = count of real events before it in the window, so left padding
changes nothing). Optional inputs (:class:`TrainConfig`, off by default): the mean of a learned
embedding of each of the item's tags and a projection of the item's ``vector`` join the item
vector (so they reach new items through :meth:`SequenceModel.item_vectors_from_text` too),
hour-of-day and day-of-week embeddings join each position, and dislikes are inputs with a type
row of their own (left out otherwise). The output at the last position is the user vector;
scores are inner products with the same item vectors (input and output share them). Training:
full softmax cross-entropy over all items at every position (the target: the next event that is
not a dislike), Adam, early stopping on validation NDCG@10 with the user's seen items masked.
Export: :mod:`encoders.build.sequence_export`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from encoders.build.sequence_data import TrainConfig, TrainingData, next_targets
from encoders.errors import (
    EXPORT_INSTALL_HINT,
    ExportDependencyError,
    InputError,
)
from encoders.runtime.sequence import (
    DISLIKE,
    N_GAP_BUCKETS,
    ModelInputs,
    SequenceEvent,
    SequenceFeatures,
    features,
)

try:
    import torch
    from torch import nn
except ImportError as exc:  # pragma: no cover - the export extra is part of the dev install
    raise ExportDependencyError(f"training needs torch ({EXPORT_INSTALL_HINT}): {exc}") from exc

__all__ = [
    "SequenceTransformer",
    "TrainConfig",
    "TrainResult",
    "TrainingData",
    "model_inputs",
    "tag_index",
    "tensors",
    "train_sequence_model",
]


@dataclass(slots=True)
class TrainResult:
    model: SequenceTransformer
    config: TrainConfig
    row_of: dict[str, int]
    item_ids: tuple[str, ...]
    best_epoch: int
    best_ndcg10: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    n_warm: int = 0
    validation_batch: SequenceFeatures | None = None
    inputs: ModelInputs = field(default_factory=ModelInputs)


# --------------------------------------------------------------------------- the model


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``last_only``: queries of the last position only (output [B, 1, D]); keys and values
        still come from every position, so the last row equals the full block's last row."""
        b, n, d = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(self.ln1(x)).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if last_only:
            q, bias, x = q[:, :, -1:, :], bias[:, :, -1:, :], x[:, -1:, :]
        att = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + bias
        att = self.drop(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, q.shape[2], d)
        x = x + self.drop(self.proj(y))
        out: torch.Tensor = x + self.drop(self.ff(self.ln2(x)))
        return out


def tag_index(item_tags: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> np.ndarray:
    """int64 [n_items + 1, K]: each item's known tags as rows 1.. of the vocabulary, left-aligned,
    0 = none (row 0, the padding item, has none); K = the most known tags of one item (>= 1)."""
    row = {tag: n + 1 for n, tag in enumerate(vocabulary)}
    rows = [sorted({row[t] for t in tags if t in row}) for tags in item_tags]
    out = np.zeros((len(rows) + 1, max([1, *map(len, rows)])), dtype=np.int64)
    for n, known in enumerate(rows, start=1):
        out[n, : len(known)] = known
    return out


class SequenceTransformer(nn.Module):
    """Hidden states [B, L, D] from padded event features; item vectors shared in and out.

    ``tags`` (``tag_index`` rows, :func:`tag_index`) and ``vectors`` (float32 [n_items, V]) are
    the optional item inputs; ``config.context`` adds the hour and weekday embeddings."""

    def __init__(
        self,
        text_vectors: np.ndarray,
        id_index: np.ndarray,
        n_ids: int,
        config: TrainConfig,
        *,
        type_rows: int = ModelInputs().n_type_rows,
        tags: tuple[np.ndarray, int] | None = None,
        vectors: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        dim = config.dim
        text = np.vstack([np.zeros((1, text_vectors.shape[1]), np.float32), text_vectors])
        self.register_buffer("text", torch.from_numpy(text.astype(np.float32)))
        self.register_buffer("id_index", torch.from_numpy(id_index.astype(np.int64)))
        self.text_proj = nn.Linear(text.shape[1], dim)
        self.id_emb = nn.Embedding(n_ids + 1, dim, padding_idx=0)
        self.type_emb = nn.Embedding(type_rows, dim, padding_idx=0)
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, dim)
        self.blocks = nn.ModuleList(
            _Block(dim, config.heads, config.dropout) for _ in range(config.layers)
        )
        self.drop = nn.Dropout(config.dropout)
        self.ln = nn.LayerNorm(dim)
        self.max_len = config.max_len
        for emb in (self.id_emb, self.type_emb, self.gap_emb, self.pos_emb):
            nn.init.normal_(emb.weight, std=0.02)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()
        # The optional parts come last, so a model without them is initialised as before.
        self.tag_emb = self.vector_proj = self.hour_emb = self.weekday_emb = None
        if tags is not None:
            index, n_tags = tags
            self.register_buffer("tag_rows", torch.from_numpy(index.astype(np.int64)))
            self.tag_emb = self._embedding(n_tags + 1, dim)
        if vectors is not None:
            extra = np.vstack([np.zeros((1, vectors.shape[1]), np.float32), vectors])
            self.register_buffer("extra", torch.from_numpy(extra.astype(np.float32)))
            self.vector_proj = nn.Linear(extra.shape[1], dim, bias=False)
        if config.context:
            self.hour_emb, self.weekday_emb = self._embedding(25, dim), self._embedding(8, dim)

    @staticmethod
    def _embedding(rows: int, dim: int) -> nn.Embedding:
        emb = nn.Embedding(rows, dim, padding_idx=0)
        nn.init.normal_(emb.weight, std=0.02)
        with torch.no_grad():
            emb.weight[0].zero_()
        return emb

    def item_vectors(self) -> torch.Tensor:
        """All rows [n_items + 1, D]; row 0 (padding) is never a candidate."""
        out: torch.Tensor = self.text_proj(self.text) + self.id_emb(self.id_index)
        if self.tag_emb is not None or self.vector_proj is not None:
            out = out + self.feature_vectors()
        return out

    def feature_vectors(self) -> torch.Tensor:
        """The tags' and item vectors' part of every item row (0 for a model without them)."""
        out = torch.zeros(())
        if self.tag_emb is not None:
            rows = cast(torch.Tensor, self.tag_rows)
            known = (rows > 0).sum(dim=1, keepdim=True).clamp(min=1)
            out = out + self.tag_emb(rows).sum(dim=1) / known
        if self.vector_proj is not None:
            out = out + self.vector_proj(self.extra)
        return out

    def forward(
        self,
        item_rows: torch.Tensor,
        event_types: torch.Tensor,
        gap_buckets: torch.Tensor,
        mask: torch.Tensor,
        hours: torch.Tensor | None = None,
        weekdays: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Hidden states [B, L, D]; with ``last_only`` [B, 1, D], the last position only (the
        final block then computes one query per user: what the stream and export need).
        ``hours`` and ``weekdays`` are read by a model with context only."""
        real = mask > 0
        pos = (torch.cumsum(real.long(), dim=1) - 1).clamp(min=0, max=self.max_len - 1)
        x = self.item_vectors()[item_rows] + self.type_emb(event_types)
        if self.hour_emb is not None and self.weekday_emb is not None:
            if hours is None or weekdays is None:
                raise InputError("a model with context needs hours and weekdays")
            x = x + self.hour_emb(hours) + self.weekday_emb(weekdays)
        x = self.drop(x + self.gap_emb(gap_buckets) + self.pos_emb(pos))
        order = torch.cumsum(torch.ones_like(item_rows), dim=1)
        query, key = order.unsqueeze(2), order.unsqueeze(1)
        allowed = ((key <= query) & real.unsqueeze(1)) | (key == query)
        bias = torch.zeros_like(allowed, dtype=x.dtype).masked_fill(~allowed, -1e9).unsqueeze(1)
        for n, block in enumerate(self.blocks):
            x = block(x, bias, last_only and n == len(self.blocks) - 1)
        out: torch.Tensor = self.ln(x)
        return out


# --------------------------------------------------------------------------- training


def _windows(
    sequences: Sequence[Sequence[SequenceEvent]],
    row_of: dict[str, int],
    max_len: int,
    context: bool = False,
    dislikes: bool = False,
) -> tuple[SequenceFeatures, np.ndarray]:
    """Every training position once: windows of ``max_len`` inputs with next-item targets
    (:func:`next_targets`)."""
    inputs: list[SequenceFeatures] = []
    targets: list[np.ndarray] = []
    for seq in sequences:
        full = features([seq], row_of, len(seq) or 1, context=context, dislikes=dislikes)
        n = int(full.mask.sum())
        if n < 2:
            continue
        arrays = [a[0, -n:] for a in full.arrays()]
        following = next_targets(arrays[0], arrays[1])
        for end in range(n - 1, 0, -max_len):
            start = max(0, end - max_len)
            if not following[start:end].any():
                continue  # nothing but dislikes follow: no target (a batch of such: a NaN loss)
            pad = max_len - (end - start)
            window = [np.pad(a[start:end], (pad, 0)) for a in arrays]
            inputs.append(SequenceFeatures(*(w[None, :] for w in window)))
            targets.append(np.pad(following[start:end], (pad, 0))[None, :])
    parts = zip(*(f.arrays() for f in inputs), strict=True)
    stacked = SequenceFeatures(*(np.concatenate(p) for p in parts))
    return stacked, np.concatenate(targets)


def tensors(batch: SequenceFeatures, rows: np.ndarray | slice) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a[rows])) for a in batch.arrays()]


def _validation_ndcg(
    model: SequenceTransformer, batch: SequenceFeatures, targets: np.ndarray, seen: np.ndarray
) -> tuple[float, float]:
    """Full-ranking NDCG@10 and HR@10 of the targets, ``seen`` ([B, n_items] bool) masked."""
    model.eval()
    with torch.inference_mode():
        users = model(*tensors(batch, slice(None)), last_only=True)[:, -1, :]
        scores = (users @ model.item_vectors()[1:].T).masked_fill(torch.from_numpy(seen), -1e30)
        target_score = scores.gather(1, torch.from_numpy(targets - 1)[:, None])
        rank = (scores > target_score).sum(dim=1).double() + 1.0  # a seen target: a miss
    hit = rank <= 10
    ndcg = torch.where(hit, 1.0 / torch.log2(rank + 1.0), torch.zeros_like(rank))
    return float(ndcg.mean()), float(hit.double().mean())


def _seen_matrix(
    contexts: Sequence[Sequence[SequenceEvent]], row_of: dict[str, int], n_items: int
) -> np.ndarray:
    seen = np.zeros((len(contexts), n_items), dtype=bool)
    for n, context in enumerate(contexts):
        rows = [row_of[e.item_id] - 1 for e in context if e.item_id in row_of]
        seen[n, rows] = True
    return seen


def train_sequence_model(
    data: TrainingData,
    config: TrainConfig,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train with early stopping; the returned model holds the best validation weights."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    row_of = {item_id: n + 1 for n, item_id in enumerate(data.item_ids)}
    warm = sorted({row_of[e.item_id] for seq in data.train for e in seq if e.item_id in row_of})
    id_index = np.zeros(len(data.item_ids) + 1, dtype=np.int64)
    id_index[warm] = np.arange(1, len(warm) + 1)
    uses = model_inputs(data, config)
    model = SequenceTransformer(
        data.text_vectors, id_index, len(warm), config, type_rows=uses.n_type_rows,
        tags=(tag_index(data.item_tags, uses.tags), len(uses.tags)) if config.tags else None,
        vectors=data.item_vectors if config.item_vectors else None,
    )  # fmt: skip
    inputs, targets = _windows(data.train, row_of, config.max_len, config.context, config.dislikes)
    val_batch = features([c for c, _ in data.validation], row_of, config.max_len,
                         width=config.max_len, context=config.context,
                         dislikes=config.dislikes)  # fmt: skip
    val_targets = np.array([row_of[t] for _, t in data.validation], dtype=np.int64)
    val_seen = _seen_matrix([c for c, _ in data.validation], row_of, len(data.item_ids))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = TrainResult(model, config, row_of, data.item_ids, 0, -1.0, n_warm=len(warm),
                         inputs=uses)  # fmt: skip
    best_state: dict[str, torch.Tensor] = {}
    stale = 0
    for epoch in range(1, config.epochs + 1):
        loss = _epoch(model, opt, inputs, targets, config.batch_size, rng)
        record = {"epoch": float(epoch), "loss": loss}
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            record["val_ndcg10"], record["val_hr10"] = _validation_ndcg(
                model, val_batch, val_targets, val_seen
            )
            if record["val_ndcg10"] > result.best_ndcg10:
                result.best_ndcg10, result.best_epoch, stale = record["val_ndcg10"], epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if stale >= config.patience:
            break
    if best_state:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    result.validation_batch = val_batch
    return result


def model_inputs(data: TrainingData, config: TrainConfig) -> ModelInputs:
    """The inputs ``config`` asks for, from ``data``; :class:`InputError` when the data lacks
    them (tags asked for and no item has one, item vectors asked for and none given, dislikes
    asked for and no training event is one)."""
    vocabulary: tuple[str, ...] = ()
    if config.tags:
        vocabulary = tuple(sorted({tag for tags in data.item_tags for tag in tags}))
        if not vocabulary:
            raise InputError("training with tags, but no catalog item has tags")
    vector_dim = 0
    if config.item_vectors:
        vectors = data.item_vectors
        if vectors is None or vectors.ndim != 2 or vectors.shape[1] < 1:
            raise InputError("training with item vectors, but the catalog has none")
        if vectors.shape[0] != len(data.item_ids) or not np.isfinite(vectors).all():
            raise InputError(f"item vectors of shape {vectors.shape} for {len(data.item_ids)} "
                             "items, or not finite")  # fmt: skip
        vector_dim = int(vectors.shape[1])
    if config.dislikes and not any(e.event_type == DISLIKE for seq in data.train for e in seq):
        raise InputError("training with dislikes, but no training event is a dislike")
    return ModelInputs(vocabulary, vector_dim, config.context, config.dislikes)


def _epoch(
    model: SequenceTransformer,
    opt: torch.optim.Optimizer,
    inputs: SequenceFeatures,
    targets: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> float:
    model.train()
    order = rng.permutation(len(targets))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        hidden = model(*tensors(inputs, rows))
        target = torch.from_numpy(targets[rows])
        keep = target > 0
        logits = hidden[keep] @ model.item_vectors()[1:].T
        loss = nn.functional.cross_entropy(logits, target[keep] - 1)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        n = int(keep.sum())
        total, count = total + float(loss.detach()) * n, count + n
    return total / max(count, 1)
