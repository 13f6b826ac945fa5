"""Dislikes on the worker's path (long_term.py): a model trained with them reads the dislikes of
the state's ring, as torch does; the default model ranks as if they were not there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import TextEncoder
from encoders.build.sequence_data import TrainConfig, TrainingData
from encoders.build.sequence_export import TrainResult, export_sequence_model, train_sequence_model
from encoders.runtime.sequence import SequenceEvent, features
from interest_state import Event, EventType, UpdateParams
from streams.contract import ItemRecord
from streams.worker.long_term import load_checked, ring_history
from streams.worker.pipeline import Pipeline
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES

KNOWN = SEQ_ITEMS[:18]
T0 = 1_704_067_200.0


@pytest.fixture(scope="module")
def with_dislikes(
    tiny_encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Path]:
    kinds = ("click", "browse", "dislike")
    walks = [
        tuple(SequenceEvent(KNOWN[(u + 2 * n) % 18], kinds[n % 3], 1000.0 * u + 90.0 * n)
              for n in range(6 + u % 6))  # fmt: skip
        for u in range(24)
    ]
    data = TrainingData(
        item_ids=tuple(KNOWN),
        text_vectors=tiny_encoder.encode([SEQ_TITLES[i] for i in KNOWN]),
        train=tuple(w[:-1] for w in walks),
        validation=tuple((w[:-1], w[-2].item_id) for w in walks),
    )
    config = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.1, lr=5e-3,
                         batch_size=16, epochs=2, eval_every=1, seed=0, dislikes=True)  # fmt: skip
    result = train_sequence_model(data, config)
    out = tmp_path_factory.mktemp("dislikes") / "sequence"
    export_sequence_model(result, out, card={"data": {"text_encoder": tiny_encoder.model_version}})
    return result, out


def _pipeline(tiny_encoder: TextEncoder, folder: Path) -> Pipeline:
    p = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=5)
    p.add_items([ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i]) for i in SEQ_ITEMS])
    p.install_sequence(load_checked(folder, text_dim=tiny_encoder.dim, provider="cpu"))
    return p


def _events(dislike: bool) -> list[Event]:
    kinds = [EventType.CLICK, EventType.DISLIKE if dislike else None, EventType.CLICK]
    return [Event(f"e{n}", "u", f"s{n}", kind, T0 + 60.0 * n)
            for n, kind in enumerate(kinds) if kind is not None]  # fmt: skip


def test_a_model_with_dislikes_reads_them_from_the_ring_as_torch_does(
    with_dislikes: tuple[TrainResult, Path], tiny_encoder: TextEncoder
) -> None:
    result, folder = with_dislikes
    state = _pipeline(tiny_encoder, folder).process(_events(True), {}).users["u"].state
    history = ring_history(state)
    assert [e.event_type for e in history] == ["click", "dislike", "click"]
    batch = features([history], result.row_of, result.config.max_len, dislikes=True)
    with torch.inference_mode():
        expected = result.model(*(torch.from_numpy(a) for a in batch.arrays()),
                                last_only=True)[0, -1].numpy()  # fmt: skip
    assert state.long_term is not None
    np.testing.assert_allclose(state.long_term, expected, atol=1e-4)
    plain = _pipeline(tiny_encoder, folder).process(_events(False), {}).users["u"].state
    assert plain.long_term is not None and not np.allclose(plain.long_term, state.long_term)


def test_the_default_model_ranks_as_if_the_dislike_were_not_there(
    tiny_sequence_dir: Path, tiny_encoder: TextEncoder
) -> None:
    disliked = _pipeline(tiny_encoder, tiny_sequence_dir).process(_events(True), {})
    plain = _pipeline(tiny_encoder, tiny_sequence_dir).process(_events(False), {})
    vectors = [r.users["u"].state.long_term for r in (disliked, plain)]
    assert vectors[0] is not None and vectors[1] is not None
    np.testing.assert_array_equal(vectors[0], vectors[1])
