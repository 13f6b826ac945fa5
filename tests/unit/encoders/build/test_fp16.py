"""The GPU graph (fused fp16) built from the tiny export, run on the CPU provider here.

CUDA itself is exercised by ``interest-stream bench --sections gpu`` on a GPU machine
(``scripts/gpu/``); what can be checked without one is checked here: the fusion, the card, the
staleness and digest rules, the warm-up check (also at a shorter ``max_length``) and the
overlapped batch path that CUDA uses.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from encoders import ExportError, ExportReport, InferenceError, ModelLoadError, TextEncoder
from encoders.build.fp16 import optimize_fp16
from encoders.runtime.metadata import (
    FP16_CARD,
    FP16_FILE,
    METADATA_FILE,
    MIN_COSINE,
    read_fp16_card,
    read_metadata,
)

TEXTS = ["a quiet drama", "space opera with a heist and two rival crews", "", "loved it"] * 5


@pytest.fixture(scope="module")
def fp16_dir(tiny_export: ExportReport, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fp16") / "encoder"
    shutil.copytree(tiny_export.out_dir, folder)
    optimize_fp16(folder)
    return folder


def _cpu_encoder(folder: Path, graph: str, max_length: int | None = None) -> TextEncoder:
    session = ort.InferenceSession(str(folder / graph), providers=["CPUExecutionProvider"])
    return TextEncoder.from_session(session, folder, max_length=max_length)


def test_the_graph_is_fused_checked_and_described(fp16_dir: Path) -> None:
    card = read_fp16_card(fp16_dir)
    assert card is not None
    assert card.fused["Attention"] == 2 and card.fused["SkipLayerNormalization"] >= 2
    assert card.nodes < 100  # the float32 export has several hundred
    assert card.min_cosine >= MIN_COSINE
    assert card.source_sha256 == read_metadata(fp16_dir).sha256
    vectors = _cpu_encoder(fp16_dir, FP16_FILE).encode(list(card.texts))
    assert np.min(np.sum(vectors * card.reference_vectors(), axis=1)) >= MIN_COSINE


def test_a_stale_graph_is_ignored_and_a_tampered_one_refused(fp16_dir: Path,
                                                             tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(fp16_dir, stale)
    meta = json.loads((stale / METADATA_FILE).read_text())
    meta["sha256"] = "0" * 64  # as if model.onnx had been exported again
    (stale / METADATA_FILE).write_text(json.dumps(meta))
    assert read_fp16_card(stale) is None
    tampered = tmp_path / "tampered"
    shutil.copytree(fp16_dir, tampered)
    with (tampered / FP16_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelLoadError, match="digest"):
        read_fp16_card(tampered)
    (tampered / FP16_CARD).write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot read"):
        read_fp16_card(tampered)


def test_warm_up_checks_at_the_export_length_even_when_truncating_shorter(fp16_dir: Path
                                                                          ) -> None:
    card = read_fp16_card(fp16_dir)
    assert card is not None
    short = _cpu_encoder(fp16_dir, FP16_FILE, max_length=4)
    assert short.warm_up(card, batch_sizes=(1, 8)) >= MIN_COSINE
    assert len(short.tokenizer.encode("one two three four five six").ids) == 4  # restored


def test_warm_up_refuses_vectors_off_the_reference(fp16_dir: Path, tmp_path: Path) -> None:
    card = read_fp16_card(fp16_dir)
    assert card is not None
    wrong = type(card)(**{**card.__dict__, "reference": tuple(
        tuple(-x for x in row) for row in card.reference)})
    with pytest.raises(ModelLoadError, match="fails its check"):
        _cpu_encoder(fp16_dir, FP16_FILE).warm_up(wrong)


def test_an_export_without_num_heads_must_be_exported_again(fp16_dir: Path,
                                                            tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(fp16_dir, old)
    meta = json.loads((old / METADATA_FILE).read_text())
    del meta["num_heads"]
    (old / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="export it again"):
        optimize_fp16(old)


def test_the_overlapped_path_gives_the_plain_vectors_in_input_order(
        tiny_encoder: TextEncoder, tiny_export: ExportReport) -> None:
    overlapped = _cpu_encoder(tiny_export.out_dir, "model.onnx")
    overlapped._runner = ThreadPoolExecutor(1)  # what CUDA gets: next batch made meanwhile
    try:
        for size in (1, 3, 64):
            np.testing.assert_allclose(overlapped.encode(TEXTS, batch_size=size),
                                       tiny_encoder.encode(TEXTS, batch_size=size), atol=1e-5)
    finally:
        overlapped._runner.shutdown()


def test_an_error_in_the_overlapped_path_waits_for_the_run_in_flight(
        tiny_export: ExportReport, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = _cpu_encoder(tiny_export.out_dir, "model.onnx")
    encoder._runner = ThreadPoolExecutor(1)
    finished: list[int] = []
    real_run, real_tokenise = encoder._run, encoder.tokenize

    def slow_run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        time.sleep(0.3)  # still running when the next batch fails to tokenise
        out = real_run(feeds)
        finished.append(len(feeds["input_ids"]))
        return out

    def tokenise(texts: list[str]) -> list[Any]:
        if tokenised:  # the second batch
            raise InferenceError("the second batch fails")
        tokenised.append(len(texts))
        return real_tokenise(texts)

    tokenised: list[int] = []
    monkeypatch.setattr(encoder, "_run", slow_run)
    monkeypatch.setattr(encoder, "tokenize", tokenise)
    with pytest.raises(InferenceError, match="second batch"):
        encoder.encode(TEXTS, batch_size=4)
    assert finished == [4]  # the first batch's run ended before encode() raised
    encoder.close()
    assert encoder._runner._shutdown  # type: ignore[attr-defined]


def test_ensure_model_builds_the_gpu_graph_when_asked_and_never_re_exports(
        fp16_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from encoders.runtime import providers
    from streams.settings import Settings
    from streams.worker.runtime import ensure_model

    fresh = tmp_path / "fresh"
    shutil.copytree(fp16_dir, fresh)
    for name in (FP16_FILE, FP16_CARD):
        (fresh / name).unlink()
    ensure_model(Settings(model_dir=fresh, provider="cpu"))
    assert read_fp16_card(fresh) is None  # CPU: nothing to build
    ensure_model(Settings(model_dir=fresh, provider="cpu"), fp16=True)
    assert read_fp16_card(fresh) is not None
    old = tmp_path / "old"
    shutil.copytree(fp16_dir, old)
    for name in (FP16_FILE, FP16_CARD):
        (old / name).unlink()
    meta = json.loads((old / METADATA_FILE).read_text())
    del meta["num_heads"]
    (old / METADATA_FILE).write_text(json.dumps(meta))
    before = (old / "model.onnx").stat().st_mtime_ns
    with pytest.raises(ExportError, match="export it again"):
        ensure_model(Settings(model_dir=old, provider="cpu"), fp16=True)
    monkeypatch.setattr(providers, "choose_providers",
                        lambda _="auto": [providers.CUDA, providers.CPU])
    monkeypatch.setattr("streams.worker.runtime.choose_providers", providers.choose_providers)
    ensure_model(Settings(model_dir=old))  # a worker on CUDA: warns, float32 serves
    assert read_fp16_card(old) is None and (old / "model.onnx").stat().st_mtime_ns == before
