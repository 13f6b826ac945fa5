"""The GPU bench section's own logic, run on the CPU provider (the tiny export)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest

from encoders import ExportReport
from encoders.build.fp16 import optimize_fp16
from streams.bench.common import BenchConfig
from streams.bench.gpu import TOKENS, encoder_rows, gpu_section, sixteen_token_texts
from streams.settings import Settings


def test_without_cuda_the_section_says_so_and_measures_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import encoders.runtime.providers

    monkeypatch.setattr(encoders.runtime.providers, "choose_providers", lambda _="auto": ["CPU"])
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


def test_gpu_latency_rows_put_e2e_and_the_brokers_ack_beside_the_cpu_run() -> None:
    from streams.bench.gpu import latency_pair_rows
    from streams.bench.latency import Latency

    gpu = Latency(1000.0, e2e_ms={"a": 10.0, "b": 30.0}, acked_ms={"p50": 8.0, "p99": 20.0})
    cpu = Latency(1000.0, e2e_ms={"a": 100.0}, acked_ms={"p50": 90.0, "p99": 99.0})
    rows = {r.metric: r for r in latency_pair_rows(gpu, cpu, 1.0, ("cpu", "cuda"))}
    ack = rows["worker to broker ack p50 at 1,000/s, 100% comments, cuda"]
    assert (ack.value, ack.baseline, ack.baseline_value) == (8.0, "cpu", 90.0)
    e2e = rows["worker e2e p50 at 1,000/s, 100% comments, cuda"]
    assert e2e.value == 20.0 and e2e.baseline_value == 100.0
    assert len(rows) == 4


def test_device_index_rows_put_the_device_index_beside_faiss(tmp_path: Path) -> None:
    from streams.bench.ann import device_index_rows

    cfg = dataclasses.replace(BenchConfig.for_mode(True), min_seconds=0.02, rounds=1,
                              rank_users=8)
    rows = {r.metric: r for r in device_index_rows(cfg, "cpu", sizes=(3000,),
                                                   settings=Settings(home=tmp_path))}
    label = "3,000 items, batch 8"
    assert rows[f"blend recall@10 over device candidates, {label}"].value == 1.0  # exact
    assert 0.0 <= rows[f"blend recall@10 over faiss candidates, {label}"].value <= 1.0
    users = rows[f"blend users/s over device candidates, {label}"]
    assert users.value > 0 and users.baseline_value and "faiss" in users.baseline
    assert "CPUExecutionProvider float32" in rows[
        f"blend recall@10 over device candidates, {label}"].note
    assert rows["device index searches/s, 8 queries x top 256, 3,000 x 384"].value > 0
    assert rows["device index: add 1,000 items to 3,000"].value > 0
    assert rows["device index build, 3,000 items (text + long)"].baseline_value
