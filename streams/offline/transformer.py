"""The stream with a sequence model, offline: :class:`TransformerModel` and its blends.

Each user's context is replayed through :func:`interest_state.update` with the stream's ring,
the ring-built histories are encoded by :class:`encoders.runtime.sequence.SequenceModel` (ONNX
Runtime, never the torch module) through :class:`streams.worker.long_term.ActiveSequence`, and
:func:`interest_state.rank_blended` ranks: exactly what :class:`streams.worker.pipeline.Pipeline`
does per batch. :func:`default_models` is the evaluator's default line-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from encoders import EncoderError, ItemIndex, TextEncoder
from encoders.runtime.sequence import SequenceModel
from interest_state import InterestState, Recommendation, UpdateParams, rank_blended
from streams.contract import ItemRecord
from streams.errors import EvaluationError
from streams.offline.rankers import (
    ContextKey,
    PopularityModel,
    Recommender,
    ShortTermModel,
    TrainData,
    UserContext,
    context_key,
    events_fingerprint,
    ids_of,
)
from streams.worker.long_term import ActiveSequence, AlignedItems

__all__ = ["BlendModel", "TransformerModel", "default_models"]


@dataclass(slots=True)
class _LongCache:
    """Replayed states with their long-term vectors, per context, for one training set."""

    fitted_on: TrainData | None = None
    states: dict[ContextKey, InterestState] = field(default_factory=dict)


class TransformerModel:
    """The stream with a sequence model, offline: the very code the pipeline runs per batch.

    Each user's context is replayed through :func:`update` with the stream's ring
    (``params.history_len``, default 50 = the model's window), the model encodes every user's
    ring once per call (:meth:`ActiveSequence.with_long_terms`, ONNX Runtime through
    :class:`SequenceModel`), and :func:`interest_state.rank_blended` ranks with ``weight`` on
    the long-term score (1.0 here: the Transformer alone, short-term only where it has nothing).
    The item matrix is aligned with the text index as the stream does (:class:`AlignedItems`):
    catalog items the model never saw get their vector from their text.

    ``fit`` trains nothing: it checks that the model card's training-events fingerprint is the
    one of this split (a model that saw validation or test events would score too well). With
    no ``encoder``, the model's own item vectors stand in for the text vectors (short-term
    state and explanations then live in the model's item space).
    """

    def __init__(
        self,
        model: SequenceModel,
        encoder: TextEncoder | None = None,
        *,
        name: str = "transformer",
        weight: float = 1.0,
        params: UpdateParams | None = None,
        index: ItemIndex | None = None,
    ) -> None:
        if not 0.0 <= weight <= 1.0:
            raise EvaluationError(f"blend weight must be in [0, 1], got {weight}")
        self.model, self.encoder, self.name, self.weight = model, encoder, name, weight
        if index is None:
            index = ItemIndex(encoder.dim if encoder is not None else model.dim)
        self.short = ShortTermModel(encoder, params or UpdateParams(), index=index)
        self._active: ActiveSequence | None = None
        self._cache = _LongCache()

    @property
    def params(self) -> UpdateParams:
        return self.short.params

    def fit(self, data: TrainData) -> None:
        expected = self.model.card.get("data", {}).get("train_fingerprint")
        if expected is not None and expected != events_fingerprint(data.events):
            raise EvaluationError(
                f"{self.name}: model {self.model.version} was trained on other events than this "
                "split's training events; train it on the same files (interest-stream train)"
            )
        index = self.short.index
        if self.encoder is None:
            self._index_model_items(data.items)
        self.short.fit(data)
        catalog = {item.item_id: item for item in data.items}  # a new item: text + tags + vector
        aligned = AlignedItems.build(
            self.model, index, tags={i: item.tags for i, item in catalog.items()},
            vectors={i: item.vector for i, item in catalog.items() if item.vector is not None},
        )  # fmt: skip
        self._active = ActiveSequence(self.model, aligned)
        if data is not self._cache.fitted_on:  # in place: the blends share this cache
            self._cache.states.clear()
            self._cache.fitted_on = data

    def _index_model_items(self, items: Sequence[ItemRecord]) -> None:
        """Without a text encoder: the model's own item vectors fill the index."""
        index, row_of = self.short.index, self.model.row_of
        known = [i for i in items if i.item_id in row_of and i.item_id not in index]
        if known:
            vectors = self.model.items[[row_of[i.item_id] - 1 for i in known]]
            index.upsert([i.item_id for i in known], [i.title for i in known], vectors)

    @property
    def catalog(self) -> ItemIndex:
        """The text item index ranking reads (the short-term model's)."""
        return self.short.index

    def rank(self, users: Sequence[UserContext], k: int, *, exclude_seen: bool) -> list[list[str]]:
        return ids_of(self.recommend(users, k, exclude_seen=exclude_seen))

    def recommend(
        self, users: Sequence[UserContext], k: int, *, exclude_seen: bool
    ) -> list[list[Recommendation]]:
        """:meth:`rank` with the blended scores and reasons of :func:`rank_blended`."""
        if self._active is None:
            raise EvaluationError(f"{self.name}: rank before fit")
        states = self._long_states(self._active, users)
        hide = (
            [user.seen() - state.seen_items() for user, state in zip(users, states, strict=True)]
            if exclude_seen
            else None
        )  # context items beyond the ring: the stream would not filter them, the protocol does
        return rank_blended(
            states,
            self.short.index,
            self._active.long_items(),
            k,
            weight=self.weight,
            exclude_seen=exclude_seen,
            hide=hide,
        )

    def _long_states(
        self, active: ActiveSequence, users: Sequence[UserContext]
    ) -> list[InterestState]:
        """Replayed states with their long-term vectors: one ``encode_users`` call for the
        users not seen yet (cached per context, shared with the blends)."""
        cache = self._cache.states
        keys = [context_key(user) for user in users]
        todo = [n for n, key in enumerate(keys) if key not in cache]
        if todo:
            try:
                fresh, _ = active.with_long_terms(self.short.states([users[n] for n in todo]))
            except EncoderError as exc:
                raise EvaluationError(f"{self.name}: the sequence model failed: {exc}") from exc
            cache.update(zip((keys[n] for n in todo), fresh, strict=True))
        return [cache[key] for key in keys]


class BlendModel(TransformerModel):
    """``weight`` x Transformer + (1 - ``weight``) x short-term (standardised scores): the
    Transformer's model and ring, the short-term model's text index (encoded once). When the
    Transformer already ranks on that index, the blend shares its replayed states and user
    vectors, so a blend costs only its ranking."""

    def __init__(self, long: TransformerModel, short: ShortTermModel, weight: float) -> None:
        super().__init__(
            long.model,
            short.encoder,
            name=f"blend-{weight:g}",
            weight=weight,
            params=long.params,
            index=short.index,
        )
        if long.short.index is short.index and long.encoder is short.encoder:
            self.short = long.short
            self._cache = long._cache


def default_models(
    model_dir: Path,
    *,
    params: UpdateParams | None = None,
    provider: str = "auto",
    sequence_dir: Path | None = None,
    blend_weights: Sequence[float] = (),
    history_len: int = 50,
    quantized: bool = False,
) -> list[Recommender]:
    """Popularity, the stream's short-term model on the text encoder in ``model_dir`` and,
    with ``sequence_dir``, the Transformer and its blends with the short-term vector (the
    stream's ring of ``history_len`` events). ``quantized``: the int8 text encoder."""
    try:
        encoder = TextEncoder.load(model_dir, provider=provider, quantized=quantized)
        sequence = (
            SequenceModel.load(sequence_dir, provider=provider)
            if sequence_dir is not None
            else None
        )
    except EncoderError as exc:
        raise EvaluationError(f"cannot load a model: {exc}") from exc
    short = ShortTermModel(encoder, params)
    models: list[Recommender] = [PopularityModel(), short]
    if sequence is not None:
        ring = UpdateParams(half_life_s=short.params.half_life_s, history_len=history_len)
        long = TransformerModel(sequence, encoder, params=ring, index=short.index)
        models.append(long)
        models.extend(BlendModel(long, short, weight) for weight in blend_weights)
    elif blend_weights:
        raise EvaluationError("a blend needs a sequence model (--sequence-model)")
    return models
