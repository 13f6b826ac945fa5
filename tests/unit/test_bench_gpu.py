"""The GPU bench section's own logic, run on the CPU provider (the tiny export)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest

from encoders import ExportReport
from encoders.fp16 import optimize_fp16
from streams.bench import BenchConfig
from streams.bench_gpu import TOKENS, encoder_rows, gpu_section, sixteen_token_texts
from streams.settings import Settings


def test_without_cuda_the_section_says_so_and_measures_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import encoders.providers

    monkeypatch.setattr(encoders.providers, "choose_providers", lambda _="auto": ["CPU"])
    rows = gpu_section(Settings(), BenchConfig.for_mode(True), tmp_path, lambda _: None)
    assert len(rows) == 1 and math.isnan(rows[0].value) and "skipped" in rows[0].note


def test_bench_texts_are_long_enough_to_be_cut_at_sixteen_tokens() -> None:
    texts = sixteen_token_texts(50)
    assert len(set(texts)) == 50 and all(len(t.split()) == 24 for t in texts)
    assert sixteen_token_texts(5) == sixteen_token_texts(5)  # seeded


def test_encoder_rows_compare_ours_with_the_bare_session_and_torch(
        tiny_export: ExportReport, tmp_path: Path) -> None:
    folder = tmp_path / "encoder"
    shutil.copytree(tiny_export.out_dir, folder)
    optimize_fp16(folder)
    cfg = dataclasses.replace(BenchConfig.for_mode(True), min_seconds=0.05, rounds=1)
    rows = encoder_rows(Settings(model_dir=folder), cfg, "CPUExecutionProvider", sizes=(4,))
    names = [row.metric for row in rows]
    assert names == ["encoder sentences/s, batch 4, text in (8 batches/call)",
                     "encoder sentences/s, batch 4, one batch per call",
                     "encoder host work only (tokenise + pad), batch 4",
                     "encoder sentences/s, batch 4, vs torch"]
    assert all(row.value > 0 and row.baseline_value for row in rows)
    assert f"{TOKENS} tokens" in rows[0].note and "torch" in rows[3].baseline
