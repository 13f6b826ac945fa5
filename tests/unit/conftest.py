"""Encoder fixtures: one tiny random BERT, exported once per session and reused by every test.

Building it needs torch and transformers (the ``export`` extra, always in the dev install). If
they are missing the fixture fails loudly instead of skipping the encoder tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from encoders import (
    ExportReport,
    ExportSpec,
    TextEncoder,
    default_model_source,
    export_text_encoder,
)

TINY_SPEC = ExportSpec(max_length=64)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


@pytest.fixture(scope="session")
def tiny_spec() -> ExportSpec:
    """The spec the tiny model is exported with (short max_length keeps tests fast)."""
    return TINY_SPEC


@pytest.fixture(scope="session")
def tiny_model_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder: random 2-layer BERT (hidden 32) with MiniLM's real tokenizer."""
    try:
        import torch
        from transformers import BertConfig, BertModel
    except ImportError as exc:
        pytest.fail(
            f"encoder tests need torch + transformers (pip install -e '.[export,dev]'): {exc}"
        )
    minilm = default_model_source()
    folder = tmp_path_factory.mktemp("tiny-bert")
    for name in _TOKENIZER_FILES:
        if (minilm / name).is_file():
            shutil.copyfile(minilm / name, folder / name)
    vocab_size = sum(1 for _ in (minilm / "vocab.txt").open(encoding="utf-8"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_export(tiny_model_source: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    """The tiny model exported (and validated) with :data:`TINY_SPEC`."""
    out_dir = tmp_path_factory.mktemp("tiny-export") / "encoder"
    return export_text_encoder(tiny_model_source, out_dir, TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_export: ExportReport) -> TextEncoder:
    """A CPU TextEncoder on the tiny export, one thread (the test machine is shared)."""
    return TextEncoder.load(tiny_export.out_dir, provider="cpu", intra_op_threads=1)


# --------------------------------------------------------------------------- sequence model

SEQ_ITEMS = [f"s{n}" for n in range(20)]
"""Catalog of the tiny sequence model's tests; the model is trained on s0..s17 only."""
SEQ_TITLES = {item: f"movie {n} genre {n % 4}" for n, item in enumerate(SEQ_ITEMS)}


@pytest.fixture(scope="session")
def tiny_sequence_dir(tiny_encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sequence Transformer (2 epochs) on walks over s0..s17, with the tiny text
    encoder's vectors as item text (so the stream can align it), exported once per session."""
    from encoders.build.sequence_data import TrainConfig, TrainingData
    from encoders.build.sequence_export import export_sequence_model, train_sequence_model
    from encoders.runtime.sequence import SequenceEvent

    known = SEQ_ITEMS[:18]
    vectors = tiny_encoder.encode([SEQ_TITLES[i] for i in known])
    kinds = ("click", "browse", "comment")
    walks = [
        tuple(
            SequenceEvent(known[(u + 2 * n) % 18], kinds[n % 3], 1000.0 * u + 90.0 * n)
            for n in range(5 + u % 6)
        )
        for u in range(24)
    ]
    data = TrainingData(
        item_ids=tuple(known),
        text_vectors=vectors,
        train=tuple(w[:-1] for w in walks),
        validation=tuple((w[:-1], w[-1].item_id) for w in walks),
    )
    config = TrainConfig(max_len=8, dim=16, layers=1, heads=2, dropout=0.1, lr=5e-3,
                         batch_size=16, epochs=2, eval_every=1, seed=0)  # fmt: skip
    out = tmp_path_factory.mktemp("tiny-sequence") / "sequence"
    card = {"data": {"text_encoder": tiny_encoder.model_version}}
    export_sequence_model(train_sequence_model(data, config), out, card=card)
    return out
