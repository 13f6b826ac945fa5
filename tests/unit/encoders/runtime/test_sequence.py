"""Tests of the sequence Transformer: features, training, ONNX export and the runtime model."""

from __future__ import annotations

import copy
import subprocess
import sys
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
    validate_sequence_export,
)
from encoders.errors import ExportMismatchError, InputError, ModelNotFoundError
from encoders.runtime.sequence import (
    EVENT_TYPES,
    SEQUENCE_FILE,
    SequenceEvent,
    SequenceModel,
    event_type_index,
    features,
    gap_buckets,
)
from interest_state import EventType

N_ITEMS = 40  # item i39 never occurs in training: the cold item
TYPES = ("click", "browse", "comment")
TINY = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.1, lr=5e-3,
                   batch_size=16, epochs=2, eval_every=1, seed=0)  # fmt: skip


def _walk(start: int, length: int, t0: float) -> tuple[SequenceEvent, ...]:
    """Items start, start+1, ... (mod 39), types cycling, gaps from seconds to days."""
    return tuple(
        SequenceEvent(f"i{(start + n) % 39}", TYPES[n % 3], t0 + 60.0 * n * n)
        for n in range(length)
    )


def _data() -> TrainingData:
    rng = np.random.default_rng(7)
    text = rng.normal(size=(N_ITEMS, 12)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    users = [_walk(u % 39, 6 + u % 9, 1000.0 * u) for u in range(30)]
    return TrainingData(
        item_ids=tuple(f"i{n}" for n in range(N_ITEMS)),
        text_vectors=text,
        train=tuple(seq[:-1] for seq in users),
        validation=tuple((seq[:-1], seq[-1].item_id) for seq in users),
    )


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    return train_sequence_model(_data(), TINY)


@pytest.fixture(scope="module")
def exported(trained: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sequence")
    export_sequence_model(trained, out, card={"data": {"name": "synthetic"}})
    return out


@pytest.fixture(scope="module")
def runtime(exported: Path) -> SequenceModel:
    return SequenceModel.load(exported, provider="cpu", intra_op_threads=1)


def test_gap_buckets_are_log_spaced_and_the_first_event_has_its_own() -> None:
    buckets = gap_buckets([0.0, 1.0, 5.0, 100.0, 100.0 + 86400.0, 1e10])
    assert buckets[0] == 1
    assert list(buckets[1:]) == sorted(buckets[1:])  # longer gap, later bucket
    assert len(set(buckets[1:])) == 5
    assert event_type_index("comment") == 3 and event_type_index("like") == 4


def test_event_types_are_the_streams_names_in_the_models_embedding_order() -> None:
    # the trained models' type embedding rows: 1 click, 2 browse, 3 comment, 4 any other, and
    # 5 dislike in a model trained with dislikes (others are never fed one: test_sequence_dislikes)
    assert EVENT_TYPES == ("click", "browse", "comment")
    assert [event_type_index(kind.name.lower()) for kind in EventType] == [2, 1, 3, 5]
    assert event_type_index("share") == 4


def test_features_left_pad_truncate_and_skip_unknown_items() -> None:
    history = _walk(0, 12, 0.0)
    row_of = {f"i{n}": n + 1 for n in range(5)}  # only i0..i4 are known
    batch = features([history, ()], row_of, max_len=3)
    assert batch.item_rows.tolist() == [[3, 4, 5], [0, 0, 0]]
    assert batch.mask.tolist() == [[1, 1, 1], [0, 0, 0]]
    assert batch.event_types[0].tolist() == [3, 1, 2]  # i2 was the 3rd event: comment


def test_export_writes_a_card_and_the_runtime_loads_it(
    exported: Path, runtime: SequenceModel
) -> None:
    card = runtime.card
    assert card["version"].startswith("seq-") and runtime.version == card["version"]
    assert card["parameters"]["max_len"] == TINY.max_len and card["parameters"]["seed"] == 0
    assert card["training"]["seconds"] > 0 and card["training"]["epochs_run"] == 2
    assert card["export"]["max_abs_diff"] <= card["export"]["atol"]
    assert card["data"] == {"name": "synthetic"}
    assert runtime.items.shape == (N_ITEMS, TINY.dim)
    assert not (exported / (SEQUENCE_FILE + ".tmp")).exists()


def test_onnx_matches_torch(trained: TrainResult, runtime: SequenceModel) -> None:
    histories = [_walk(3, 4, 0.0), _walk(10, 20, 50.0), _walk(1, 1, 9.0)]
    got = runtime.encode_users(histories)
    batch = runtime.features(histories)
    with torch.inference_mode():
        hidden = trained.model(*(torch.from_numpy(a) for a in batch.arrays()))
        expected = hidden[:, -1, :].numpy()
        items = trained.model.item_vectors()[1:].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(runtime.scores(got), expected @ items.T, atol=1e-3)


def test_a_graph_that_disagrees_with_torch_raises(trained: TrainResult, exported: Path) -> None:
    broken = copy.deepcopy(trained.model)
    with torch.no_grad():
        broken.ln.bias.add_(0.5)
    batch = features([_walk(0, 5, 0.0)], trained.row_of, TINY.max_len)
    with pytest.raises(ExportMismatchError, match="differs from torch"):
        validate_sequence_export(broken, exported / SEQUENCE_FILE, [batch])
    assert validate_sequence_export(trained.model, exported / SEQUENCE_FILE, [batch]) < 1e-4


def test_extra_left_padding_does_not_change_a_users_vector(runtime: SequenceModel) -> None:
    short = _walk(5, 3, 0.0)
    alone = runtime.encode_users([short])
    with_long = runtime.encode_users([_walk(0, 30, 0.0), short])[1]  # padded to max_len
    padded = runtime.run(features([short], runtime.row_of, runtime.max_len, width=20))[0]
    np.testing.assert_allclose(with_long, alone[0], atol=1e-5)
    np.testing.assert_allclose(padded, alone[0], atol=1e-5)
    empty = runtime.encode_users([(), (SequenceEvent("nope", "click", 1.0),)])
    assert not empty.any()  # no known event: no interest vector
    one_by_one = runtime.encode_users([_walk(5, 3, 0.0), _walk(9, 11, 0.0)], batch_size=1)
    np.testing.assert_allclose(one_by_one[0], alone[0], atol=1e-5)


def test_cold_items_are_scored_through_their_text(
    trained: TrainResult, runtime: SequenceModel
) -> None:
    text = _data().text_vectors
    assert trained.n_warm == 39  # i39 never occurs in training
    cold = runtime.item_ids.index("i39")
    from_text = runtime.item_vectors_from_text(text[cold : cold + 1])[0]
    np.testing.assert_allclose(runtime.items[cold], from_text, atol=1e-5)
    scores = runtime.scores(runtime.encode_users([_walk(0, 5, 0.0)]))
    assert np.isfinite(scores[0, cold]) and scores[0, cold] != 0.0
    brand_new = runtime.item_vectors_from_text(np.ones((2, 12), np.float32))
    assert brand_new.shape == (2, TINY.dim) and np.all(np.isfinite(brand_new))
    with pytest.raises(InputError):
        runtime.item_vectors_from_text(np.ones((2, 5), np.float32))


def test_training_is_reproducible_with_a_seed() -> None:
    config = TrainConfig(max_len=8, dim=16, layers=1, heads=2, batch_size=16, epochs=1, seed=3)
    first = train_sequence_model(_data(), config).history[0]["loss"]
    again = train_sequence_model(_data(), config).history[0]["loss"]
    other = train_sequence_model(_data(), replace(config, seed=4))
    assert first == again
    assert other.history[0]["loss"] != first


def test_training_learns_and_keeps_the_best_epoch(trained: TrainResult) -> None:
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < losses[0]
    assert trained.best_epoch in (1, 2)
    assert trained.best_ndcg10 == max(h["val_ndcg10"] for h in trained.history)


def test_loading_a_folder_without_a_model_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="interest-stream train"):
        SequenceModel.load(tmp_path)


def test_the_runtime_and_the_commands_import_no_torch() -> None:
    code = (
        "import sys, encoders.runtime.sequence, streams.offline.evaluate, streams.offline.train; "
        "heavy = {'torch', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
