"""The package surface: __all__, the error tree, build names loaded on first use, the rooms."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

import encoders
from encoders import errors


def test_exported_members() -> None:
    assert encoders.__all__ == sorted(encoders.__all__)
    for name in encoders.__all__:
        assert hasattr(encoders, name), name
    public = {
        name
        for name, value in vars(encoders).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert public == set(encoders.__all__)


def test_every_error_is_an_encoder_error() -> None:
    classes = [value for value in vars(errors).values() if isinstance(value, type)]
    raised = [cls for cls in classes if issubclass(cls, Exception)]
    assert len(raised) >= 9
    assert all(issubclass(cls, errors.EncoderError) for cls in raised)
    mismatch = errors.ExportMismatchError(0.5, 1e-4)
    assert (mismatch.max_abs_diff, mismatch.atol) == (0.5, 1e-4)
    assert isinstance(mismatch, errors.ExportError)


def test_build_names_come_from_their_modules_on_first_use() -> None:
    homes = {
        "ExportReport": "encoders.build.export",
        "ExportSpec": "encoders.build.export",
        "default_model_source": "encoders.build.export",
        "export_text_encoder": "encoders.build.export",
        "quantize_int8": "encoders.build.export",
        "optimize_fp16": "encoders.build.fp16",
        "TrainConfig": "encoders.build.sequence_data",
        "TrainingData": "encoders.build.sequence_data",
    }
    for name, module in homes.items():
        assert getattr(encoders, name) is getattr(importlib.import_module(module), name), name
    assert set(homes) <= set(dir(encoders))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        encoders.nothing_here  # noqa: B018


def test_runtime_import_pulls_no_torch_or_kafka() -> None:
    code = (
        "import sys, encoders, encoders.runtime.sequence; "
        "heavy = {'torch', 'transformers', 'onnx', 'faust', 'aiokafka'} & set(sys.modules); "
        "heavy |= {m for m in sys.modules if m.startswith('encoders.build')}; "
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_runtime_and_the_indexes_never_import_the_build() -> None:
    """Not even inside a function: the build may use the runtime, never the other way round."""
    package = Path(encoders.__file__).parent
    crossings = []
    for path in sorted([*package.glob("runtime/*.py"), *package.glob("index/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            crossings += [f"{path.name}:{node.lineno} {name}" for name in names
                          if name == "encoders.build" or name.startswith("encoders.build.")]
    assert crossings == []
