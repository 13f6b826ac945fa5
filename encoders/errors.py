"""Errors raised by the encoder layer.

    EncoderError
     ├── ModelNotFoundError     no model, or no finished export, at the path (with a hint)
     ├── ModelLoadError         an export is there but unusable: bad encoder.json, ORT refuses it
     ├── ExportDependencyError  torch/transformers/onnx missing (hint: the [export] extra)
     ├── ExportError            torch.onnx.export, or writing the export folder, failed
     │    └── ExportMismatchError   torch and ONNX Runtime disagree beyond the tolerance
     ├── ProviderError          the requested execution provider is missing or does not load
     ├── ConfigurationError     an argument value the encoder cannot use (provider name, threads, k)
     ├── InputError             an input of the wrong type or shape (non-str text, wrong vector dim)
     └── InferenceError         ONNX Runtime failed while running the model

Errors from torch, transformers, onnxruntime, tokenizers and the OS are translated at the boundary
with ``raise ... from exc``. Where a builtin class reads naturally, it is a second base
(``ImportError``, ``ValueError``, ``FileNotFoundError``) so generic handlers still work.
"""

from __future__ import annotations

EXPORT_INSTALL_HINT = "pip install 'interest-stream[export]'"


class EncoderError(Exception):
    """Root of every error raised by :mod:`encoders`."""


class ModelNotFoundError(EncoderError, FileNotFoundError):
    """No model source, or no finished export, where one was expected."""


class ModelLoadError(EncoderError):
    """An export exists but cannot be used (unreadable metadata, ONNX Runtime rejects the graph)."""


class ExportDependencyError(EncoderError, ImportError):
    """An optional export dependency (torch, transformers, onnx) is not installed."""


class ExportError(EncoderError):
    """Exporting a model to ONNX failed."""


class ExportMismatchError(ExportError):
    """The exported graph and the torch model disagree by more than the tolerance."""

    def __init__(self, max_abs_diff: float, atol: float, detail: str = "") -> None:
        message = f"ONNX output differs from torch by {max_abs_diff:.3g} (tolerance {atol:.3g})"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.max_abs_diff = max_abs_diff
        self.atol = atol


class ProviderError(EncoderError):
    """The requested ONNX Runtime execution provider is unavailable or fails to load."""


class ConfigurationError(EncoderError, ValueError):
    """An argument or setting has a value the encoder cannot use."""


class InputError(EncoderError, ValueError):
    """An input has the wrong type or shape."""


class InferenceError(EncoderError):
    """ONNX Runtime raised while running the model."""
