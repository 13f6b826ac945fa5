"""A model trained with tags and context, served through the worker's path (long_term.py).

The user vector a worker stores for a user equals the torch model's on the same events, and a
catalog item the model never saw gets its text + tags vector, as in training."""

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
from streams.worker.long_term import AlignedItems, load_checked, ring_history
from streams.worker.pipeline import Pipeline
from tests.unit.conftest import SEQ_ITEMS, SEQ_TITLES

KNOWN = SEQ_ITEMS[:18]


def _tags(item_id: str) -> tuple[str, ...]:
    return (f"genre{int(item_id[1:]) % 4}",)


@pytest.fixture(scope="module")
def tagged(
    tiny_encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, Path]:
    kinds = ("click", "browse", "comment")
    walks = [
        tuple(
            SequenceEvent(KNOWN[(u + 2 * n) % 18], kinds[n % 3], 1000.0 * u + 4000.0 * n)
            for n in range(5 + u % 6)
        )
        for u in range(24)
    ]
    data = TrainingData(
        item_ids=tuple(KNOWN),
        text_vectors=tiny_encoder.encode([SEQ_TITLES[i] for i in KNOWN]),
        train=tuple(w[:-1] for w in walks),
        validation=tuple((w[:-1], w[-1].item_id) for w in walks),
        item_tags=tuple(_tags(i) for i in KNOWN),
    )
    config = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.1, lr=5e-3,
                         batch_size=16, epochs=2, eval_every=1, seed=0, tags=True,
                         context=True)  # fmt: skip
    result = train_sequence_model(data, config)
    out = tmp_path_factory.mktemp("tagged") / "sequence"
    card = {"data": {"text_encoder": tiny_encoder.model_version}}
    export_sequence_model(result, out, card=card, item_tags=data.item_tags)
    return result, out


def test_the_worker_gives_the_user_vector_of_training(
    tagged: tuple[TrainResult, Path], tiny_encoder: TextEncoder
) -> None:
    result, folder = tagged
    p = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=5)
    p.add_items([ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], _tags(i)) for i in SEQ_ITEMS])
    model = load_checked(folder, text_dim=tiny_encoder.dim, provider="cpu")
    assert model.inputs.context and model.inputs.tags == ("genre0", "genre1", "genre2", "genre3")
    p.install_sequence(model)
    events = [
        Event(f"e{n}", "u", f"s{n}", EventType.CLICK, 1_704_067_200.0 + 5000.0 * n)
        for n in range(6)
    ]
    state = p.process(events, {}).users["u"].state
    assert state.long_term is not None
    batch = features([ring_history(state)], result.row_of, result.config.max_len, context=True)
    with torch.inference_mode():
        tensors = [torch.from_numpy(a) for a in batch.arrays()]
        expected = result.model(*tensors, last_only=True)[0, -1].numpy()
    np.testing.assert_allclose(state.long_term, expected, atol=1e-4)


def test_a_new_item_gets_its_tags_and_an_item_without_them_its_text_alone(
    tagged: tuple[TrainResult, Path], tiny_encoder: TextEncoder
) -> None:
    result, folder = tagged
    model = load_checked(folder, text_dim=tiny_encoder.dim, provider="cpu")
    aligned = AlignedItems(model)
    text = tiny_encoder.encode([SEQ_TITLES["s18"], SEQ_TITLES["s19"], SEQ_TITLES["s3"]])
    aligned.write([0, 1, 2], ["s18", "s19", "s3"], text, tags=[("genre2",), (), ()])
    vectors = aligned.snapshot().vectors
    torch_model = result.model
    with torch.inference_mode():
        projected = torch_model.text_proj(torch.from_numpy(text)).numpy()
        genre2 = torch_model.tag_emb.weight[3].numpy()  # rows 1.. in vocabulary order
    np.testing.assert_allclose(vectors[0], projected[0] + genre2, atol=1e-5)
    np.testing.assert_allclose(vectors[1], projected[1], atol=1e-5)  # no tags: text alone
    np.testing.assert_array_equal(vectors[2], model.items[model.row_of["s3"] - 1])  # known
    with torch.inference_mode():
        trained_row = torch_model.item_vectors()[result.row_of["s3"]].numpy()
    np.testing.assert_allclose(vectors[2], trained_row, atol=1e-5)


def test_the_pipeline_hands_new_items_tags_to_the_model_before_and_after_it_is_installed(
    tagged: tuple[TrainResult, Path], tiny_encoder: TextEncoder
) -> None:
    """An item the model never saw gets text + tags whether it reached the catalog before the
    model was installed (``install_sequence``) or after (``add_items``)."""
    _, folder = tagged
    model = load_checked(folder, text_dim=tiny_encoder.dim, provider="cpu")
    p = Pipeline(tiny_encoder, UpdateParams(history_len=8), top_k=5)
    p.add_items([ItemRecord(i, SEQ_TITLES[i], SEQ_TITLES[i], _tags(i)) for i in SEQ_ITEMS])
    p.install_sequence(model)
    late = ItemRecord("late", "a late arrival", "a late arrival", ("genre1",))
    p.add_items([late])
    active = p.slots["A"].sequence
    assert active is not None
    rows = active.items.snapshot().vectors
    for item_id, text in (("s19", SEQ_TITLES["s19"]), ("late", late.text)):
        expected = model.item_vectors_from_text(tiny_encoder.encode([text]),
                                                tags=[_tags(item_id) if item_id != "late"
                                                      else late.tags])[0]  # fmt: skip
        row = p.index.row_of(item_id)
        assert row is not None
        np.testing.assert_allclose(rows[row], expected, atol=1e-5)
        untagged = model.item_vectors_from_text(tiny_encoder.encode([text]))[0]
        assert not np.allclose(rows[row], untagged, atol=1e-5)  # the tags count
