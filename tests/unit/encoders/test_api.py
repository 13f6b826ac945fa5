"""The package surface: __all__, the error tree, and no heavy imports at runtime."""

from __future__ import annotations

import subprocess
import sys
import types

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


def test_runtime_import_pulls_no_torch_or_kafka() -> None:
    code = (
        "import sys, encoders; "
        "heavy = {'torch', 'transformers', 'onnx', 'faust', 'aiokafka'} & set(sys.modules); "
        "print(sorted(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
