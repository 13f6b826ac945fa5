"""Dislikes as an input of the sequence model (``TrainConfig.dislikes``).

A model trained with them reads a dislike as a type of its own; any other model (every model
trained before) is never fed one; a dislike is never a training target."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.build.sequence_data import next_targets
from encoders.build.sequence_export import (
    TrainConfig,
    TrainingData,
    TrainResult,
    export_sequence_model,
    train_sequence_model,
)
from encoders.errors import InputError
from encoders.runtime.sequence import (
    CARD_FILE,
    DISLIKE_INDEX,
    OTHER_INDEX,
    ModelInputs,
    SequenceEvent,
    SequenceModel,
    event_type_index,
    features,
)

N_ITEMS, TEXT_DIM = 20, 12
TINY = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.1, lr=5e-3,
                   batch_size=16, epochs=2, eval_every=1, seed=0)  # fmt: skip
ROWS = {f"i{n}": n + 1 for n in range(N_ITEMS)}


def _history(u: int, n_events: int) -> tuple[SequenceEvent, ...]:
    """Clicks with a dislike every third event."""
    return tuple(
        SequenceEvent(f"i{(u + 3 * n) % N_ITEMS}", "dislike" if n % 3 == 2 else "click",
                      1000.0 + 60.0 * n)  # fmt: skip
        for n in range(n_events)
    )


def _data(with_dislikes: bool = True) -> TrainingData:
    users = [_history(u, 6 + u % 4) for u in range(16)]
    if not with_dislikes:
        users = [tuple(e._replace(event_type="click") for e in seq) for seq in users]
    text = np.random.default_rng(5).normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
    return TrainingData(
        item_ids=tuple(ROWS),
        text_vectors=text,
        train=tuple(seq[:-1] for seq in users),
        validation=tuple((seq[:-1], f"i{u % N_ITEMS}") for u, seq in enumerate(users)),
    )


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train_sequence_model(_data(), replace(TINY, dislikes=True))


@pytest.fixture(scope="module")
def exported(trained: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sequence-dislikes")
    export_sequence_model(trained, out)
    return out


def test_a_dislike_is_left_out_unless_the_model_reads_dislikes() -> None:
    history = _history(0, 6)  # click, click, dislike, click, click, dislike
    bare = features([history], ROWS, max_len=10, width=8)
    assert bare.event_types.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]
    assert bare.item_rows[0, -4:].tolist() == [ROWS[e.item_id] for e in history
                                               if e.event_type == "click"]  # fmt: skip
    full = features([history], ROWS, max_len=10, width=8, dislikes=True)
    assert full.event_types.tolist() == [[0, 0, 1, 1, DISLIKE_INDEX, 1, 1, DISLIKE_INDEX]]
    assert (event_type_index("dislike"), event_type_index("share")) == (DISLIKE_INDEX, OTHER_INDEX)
    assert DISLIKE_INDEX == OTHER_INDEX + 1  # the older models' indices stay where they were


def test_the_target_of_a_position_is_the_next_event_that_is_not_a_dislike() -> None:
    rows = np.array([5, 6, 7, 8, 9])
    types = np.array([1, DISLIKE_INDEX, DISLIKE_INDEX, 2, DISLIKE_INDEX])
    assert next_targets(rows, types).tolist() == [8, 8, 8, 0, 0]
    assert next_targets(rows, np.ones(5, np.int64)).tolist() == [6, 7, 8, 9, 0]


def test_the_card_lists_the_event_types_and_an_old_card_has_no_dislikes(
    trained: TrainResult, exported: Path
) -> None:
    card = json.loads((exported / CARD_FILE).read_text(encoding="utf-8"))
    assert card["inputs"]["event_types"] == ["click", "browse", "comment", "dislike"]
    assert card["parameters"]["dislikes"] is True
    assert ModelInputs.from_card(card) == trained.inputs == ModelInputs(dislikes=True)
    assert trained.model.type_emb.num_embeddings == ModelInputs(dislikes=True).n_type_rows == 6
    assert ModelInputs.from_card({"item_ids": []}).dislikes is False
    assert ModelInputs().n_type_rows == 5  # every model trained before


def test_onnx_reads_dislikes_as_torch_does_and_they_move_the_user(
    trained: TrainResult, exported: Path
) -> None:
    runtime = SequenceModel.load(exported, provider="cpu", intra_op_threads=1)
    histories = [_history(u, 7) for u in (1, 4, 9)]
    got = runtime.encode_users(histories)
    batch = runtime.features(histories)
    assert (batch.event_types == DISLIKE_INDEX).any()
    with torch.inference_mode():
        expected = trained.model(*(torch.from_numpy(a) for a in batch.arrays()))[:, -1, :]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    as_clicks = [tuple(e._replace(event_type="click") for e in h) for h in histories]
    assert not np.allclose(runtime.encode_users(as_clicks), got, atol=1e-3)


def test_a_model_without_dislikes_is_never_fed_one(tmp_path: Path) -> None:
    plain = train_sequence_model(_data(with_dislikes=False), TINY)
    assert plain.inputs.dislikes is False and plain.model.type_emb.num_embeddings == 5
    export_sequence_model(plain, tmp_path)
    runtime = SequenceModel.load(tmp_path, provider="cpu", intra_op_threads=1)
    history = _history(2, 8)
    without = tuple(e for e in history if e.event_type != "dislike")
    np.testing.assert_array_equal(runtime.encode_users([history]), runtime.encode_users([without]))


def test_training_with_dislikes_needs_some() -> None:
    with pytest.raises(InputError, match="no training event is a dislike"):
        train_sequence_model(_data(with_dislikes=False), replace(TINY, dislikes=True))


def test_a_window_followed_by_dislikes_only_is_no_training_batch() -> None:
    """A user whose only events after the first are dislikes gives a window without any target;
    alone in a batch it would make the loss NaN."""
    data = _data()
    lonely = (SequenceEvent("i1", "click", 1.0), SequenceEvent("i2", "dislike", 2.0))
    result = train_sequence_model(replace(data, train=(*data.train, lonely)),
                                  replace(TINY, dislikes=True, batch_size=1))  # fmt: skip
    assert all(np.isfinite(h["loss"]) for h in result.history)
