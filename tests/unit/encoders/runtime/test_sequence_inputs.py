"""The sequence model's optional inputs: item tags, item vectors, hour of day and day of week.

Their features, the model card that says which a model uses (and an old card without them),
the export check of the graph and of new items' vectors, and the runtime fallback."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.build.sequence_export import (
    TrainConfig,
    TrainingData,
    TrainResult,
    export_sequence_model,
    train_sequence_model,
    validate_item_vectors,
    validate_sequence_export,
)
from encoders.build.sequence_train import tag_index
from encoders.errors import ExportMismatchError, InputError, ModelLoadError
from encoders.runtime.sequence import (
    CARD_FILE,
    CONTEXT_INPUTS,
    INPUT_NAMES,
    ItemProjection,
    ModelInputs,
    SequenceEvent,
    SequenceModel,
    features,
    hours_and_weekdays,
)

N_ITEMS, TEXT_DIM, VECTOR_DIM = 24, 12, 5
TINY = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.1, lr=5e-3,
                   batch_size=16, epochs=2, eval_every=1, seed=0)  # fmt: skip
MONDAY = 1_704_067_200.0  # 2024-01-01 00:00 UTC, a Monday


def _tags(n: int) -> tuple[str, ...]:
    return () if n % 7 == 6 else (f"genre{n % 4}",) + (("noir",) if n % 3 == 0 else ())


def _data() -> TrainingData:
    rng = np.random.default_rng(3)
    text = rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32)
    vectors = rng.normal(size=(N_ITEMS, VECTOR_DIM)).astype(np.float32)
    vectors[5] = 0.0  # an item without a vector
    users = [
        tuple(
            SequenceEvent(f"i{(u + 3 * n) % (N_ITEMS - 1)}", "click", MONDAY + 3600.0 * (u + 5 * n))
            for n in range(5 + u % 5)
        )
        for u in range(20)
    ]
    return TrainingData(
        item_ids=tuple(f"i{n}" for n in range(N_ITEMS)),
        text_vectors=text,
        train=tuple(seq[:-1] for seq in users),
        validation=tuple((seq[:-1], seq[-1].item_id) for seq in users),
        item_tags=tuple(_tags(n) for n in range(N_ITEMS)),
        item_vectors=vectors,
    )


ALL = replace(TINY, tags=True, context=True, item_vectors=True)


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train_sequence_model(_data(), ALL)


@pytest.fixture(scope="module")
def exported(trained: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sequence-inputs")
    data = _data()
    export_sequence_model(trained, out, item_tags=data.item_tags, item_vectors=data.item_vectors)
    return out


def test_hour_and_weekday_are_utc_and_padding_stays_zero() -> None:
    hours, weekdays = hours_and_weekdays([0.0, MONDAY + 13.5 * 3600, MONDAY + 7 * 86400 - 1])
    assert hours.tolist() == [1, 14, 24]  # 1970-01-01 00:00 was a Thursday
    assert weekdays.tolist() == [4, 1, 7]
    history = (SequenceEvent("a", "click", MONDAY + 3600.0), SequenceEvent("b", "click", MONDAY))
    batch = features([history], {"a": 1, "b": 2}, max_len=5, width=4, context=True)
    assert batch.hours.tolist() == [[0, 0, 2, 1]] and batch.weekdays.tolist() == [[0, 0, 1, 1]]
    bare = features([history], {"a": 1, "b": 2}, max_len=5, width=4)  # no context: not computed
    assert not bare.hours.any() and (bare.item_rows == batch.item_rows).all()
    assert list(batch.feeds()) == list(INPUT_NAMES)  # a model without context gets four
    assert list(batch.feeds(INPUT_NAMES + CONTEXT_INPUTS)) == [*INPUT_NAMES, *CONTEXT_INPUTS]


def test_tag_index_keeps_each_items_known_tags_once() -> None:
    index = tag_index([("b", "a", "a"), (), ("zzz",)], ("a", "b"))
    assert index.tolist() == [[0, 0], [1, 2], [0, 0], [0, 0]]  # row 0: the padding item


def test_the_card_records_the_inputs_and_round_trips(trained: TrainResult, exported: Path) -> None:
    card = json.loads((exported / CARD_FILE).read_text(encoding="utf-8"))
    assert card["inputs"]["tags"] == ["genre0", "genre1", "genre2", "genre3", "noir"]
    assert card["inputs"]["vector_dim"] == VECTOR_DIM
    assert card["inputs"]["graph"] == [*INPUT_NAMES, *CONTEXT_INPUTS]
    assert card["parameters"]["tags"] and card["parameters"]["context"]
    assert ModelInputs.from_card(card) == trained.inputs
    assert ModelInputs.from_card({"inputs": trained.inputs.to_card()}) == trained.inputs
    assert card["export"]["item_vectors_max_abs_diff"] <= card["export"]["atol"]


def test_an_old_card_is_a_model_without_the_new_inputs() -> None:
    inputs = ModelInputs.from_card({"item_ids": ["a"], "parameters": {"max_len": 5}})
    assert inputs == ModelInputs() and inputs.graph_inputs == INPUT_NAMES
    with pytest.raises(ModelLoadError, match="inputs"):
        ModelInputs.from_card({"inputs": {"vector_dim": "many"}})


def test_onnx_matches_torch_with_context_and_tags(trained: TrainResult, exported: Path) -> None:
    runtime = SequenceModel.load(exported, provider="cpu", intra_op_threads=1)
    assert runtime.inputs.context and runtime.inputs.vector_dim == VECTOR_DIM
    histories = [_data().train[n] for n in (0, 3, 7)]
    got = runtime.encode_users(histories)
    batch = runtime.features(histories)
    with torch.inference_mode():
        expected = trained.model(*(torch.from_numpy(a) for a in batch.arrays()))[:, -1, :]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    # the hour matters: the same events an hour later give another user vector
    later = [tuple(e._replace(ts=e.ts + 3600.0) for e in h) for h in histories]
    assert not np.allclose(runtime.encode_users(later), got, atol=1e-4)


def test_the_export_check_covers_the_context_inputs(trained: TrainResult, exported: Path) -> None:
    batch = trained.validation_batch
    assert batch is not None
    tampered = train_sequence_model(_data(), replace(ALL, seed=1)).model
    with pytest.raises(ExportMismatchError):
        validate_sequence_export(tampered, exported / "sequence.onnx", [batch])


def test_new_items_get_text_tags_and_vector_as_in_training(
    trained: TrainResult, exported: Path
) -> None:
    runtime = SequenceModel.load(exported, provider="cpu", intra_op_threads=1)
    data = _data()
    model = trained.model
    with torch.inference_mode():
        expected = (model.text_proj(model.text) + model.feature_vectors())[1:].numpy()
        text_only = model.text_proj(model.text)[1:].numpy()
    got = runtime.item_vectors_from_text(
        data.text_vectors, tags=list(data.item_tags), vectors=list(data.item_vectors)
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the fallback: no tags and no vector given, or ones the model cannot use: text alone
    bare = runtime.item_vectors_from_text(data.text_vectors[:2])
    np.testing.assert_allclose(bare, text_only[:2], atol=1e-5)
    odd = runtime.item_vectors_from_text(
        data.text_vectors[:2], tags=[("unheard-of",), ()], vectors=[[1.0, 2.0], None]
    )
    np.testing.assert_allclose(odd, text_only[:2], atol=1e-5)


def test_the_export_check_catches_a_wrong_new_item_formula(trained: TrainResult) -> None:
    data = _data()
    with torch.inference_mode():
        model = trained.model
        arrays = {
            "weight": model.text_proj.weight.numpy().T.copy(),
            "bias": model.text_proj.bias.numpy().copy(),
            "tag_weight": model.tag_emb.weight[1:].numpy().copy(),
            "vector_weight": model.vector_proj.weight.numpy().T.copy(),
        }
    ok = validate_item_vectors(model, arrays, trained, data.item_tags, data.item_vectors)
    assert ok < 1e-5
    arrays["tag_weight"] = arrays["tag_weight"][::-1].copy()  # tags in another order
    with pytest.raises(ExportMismatchError, match="new items"):
        validate_item_vectors(model, arrays, trained, data.item_tags, data.item_vectors)
    with pytest.raises(ModelLoadError, match="vector_weight"):
        ItemProjection({**arrays, "vector_weight": np.zeros((2, 16), np.float32)}, trained.inputs)


def test_a_card_that_does_not_match_the_graph_is_refused(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for f in exported.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    card["inputs"]["context"] = []  # the graph still takes hours and weekdays
    (folder / CARD_FILE).write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="the graph takes"):
        SequenceModel.load(folder, provider="cpu")


def test_training_with_inputs_the_data_lacks_says_so() -> None:
    bare = replace(_data(), item_tags=(), item_vectors=None)
    with pytest.raises(InputError, match="no catalog item has tags"):
        train_sequence_model(bare, replace(TINY, tags=True))
    with pytest.raises(InputError, match="item vectors"):
        train_sequence_model(bare, replace(TINY, item_vectors=True))
