"""TextEncoder: normalised rows, padding invariance, order, truncation, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders import (
    ConfigurationError,
    ExportReport,
    InputError,
    ModelNotFoundError,
    TextEncoder,
    read_metadata,
)

TEXTS = [
    "A much longer comment about the film, its score, the cast and the final scene on the bridge.",
    "ok",
    "",
    "space opera with a heist",
    "I would watch the director's cut again",
]


def test_rows_are_unit_norm_float32(tiny_encoder: TextEncoder) -> None:
    vectors = tiny_encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3), "different texts, same vector"


def test_padding_invariance_and_order(tiny_encoder: TextEncoder) -> None:
    alone = np.stack([tiny_encoder.encode([text])[0] for text in TEXTS])
    for batch_size in (1, 2, 64):
        together = tiny_encoder.encode(TEXTS, batch_size=batch_size)
        np.testing.assert_allclose(together, alone, atol=1e-5)
    reversed_ = tiny_encoder.encode(TEXTS[::-1])
    np.testing.assert_allclose(reversed_, alone[::-1], atol=1e-5)


def test_matches_the_torch_model(tiny_encoder: TextEncoder, tiny_model_source: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_source, local_files_only=True)
    model = AutoModel.from_pretrained(tiny_model_source, local_files_only=True).eval()
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS), expected.numpy(), atol=1e-5)


def test_long_text_is_truncated_not_rejected(tiny_encoder: TextEncoder) -> None:
    long_text = " ".join(["movie"] * 5000)
    vectors = tiny_encoder.encode([long_text, "short"])
    assert vectors.shape == (2, 32) and np.all(np.isfinite(vectors))
    # both are cut at max_length tokens, so they are the same input
    np.testing.assert_allclose(
        vectors[0], tiny_encoder.encode([" ".join(["movie"] * 500)])[0], atol=1e-5
    )


def test_empty_inputs(tiny_encoder: TextEncoder) -> None:
    assert tiny_encoder.encode([]).shape == (0, 32)
    empty = tiny_encoder.encode([""])
    assert np.linalg.norm(empty[0]) == pytest.approx(1.0, abs=1e-5)


def test_bad_arguments(tiny_encoder: TextEncoder) -> None:
    with pytest.raises(InputError):
        tiny_encoder.encode("one string, not a list")
    with pytest.raises(InputError):
        tiny_encoder.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError):
        tiny_encoder.encode(["ok"], batch_size=0)


def test_load_attributes_and_errors(tiny_export: ExportReport, tmp_path: Path) -> None:
    encoder = TextEncoder.load(
        tiny_export.out_dir, provider="cpu", max_length=16, intra_op_threads=1
    )
    assert encoder.provider == "CPUExecutionProvider"
    assert encoder.model_version == read_metadata(tiny_export.out_dir).model_version
    assert (encoder.dim, encoder.max_length) == (32, 16)
    with pytest.raises(ModelNotFoundError):
        TextEncoder.load(tmp_path / "not-exported")
    with pytest.raises(ConfigurationError):
        TextEncoder.load(tiny_export.out_dir, max_length=10_000)


class _RecordingSession:
    """A stand-in ONNX session whose graph declares no token_type_ids."""

    def __init__(self) -> None:
        self.fed: list[set[str]] = []

    def get_inputs(self) -> list[Any]:
        return [_Named("input_ids"), _Named("attention_mask")]

    def get_outputs(self) -> list[Any]:
        return [_Named("embedding")]

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.fed.append(set(feeds))
        rows = len(feeds["input_ids"])
        return [np.tile(np.eye(1, 32, dtype=np.float32), (rows, 1))]


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_feeds_only_the_inputs_the_graph_declares(
    tiny_encoder: TextEncoder, tiny_export: ExportReport
) -> None:
    session = _RecordingSession()
    encoder = TextEncoder(
        session,
        tiny_encoder.tokenizer,
        read_metadata(tiny_export.out_dir),
        max_length=64,
        model_version="fake",
    )
    assert encoder.encode(["a", "b c d"]).shape == (2, 32)
    assert session.fed == [{"input_ids", "attention_mask"}]
