"""Text encoding for the interest stream: ONNX export, execution providers, encoder, item index.

Runtime needs only onnxruntime, tokenizers and numpy; exporting needs the optional extra
``pip install 'interest-stream[export]'`` (torch, transformers, onnx), imported lazily.
"""

from __future__ import annotations

from encoders.build.export import (
    ExportReport,
    ExportSpec,
    default_model_source,
    export_text_encoder,
    is_exported,
    quantize_int8,
)
from encoders.errors import (
    ConfigurationError,
    EncoderError,
    ExportDependencyError,
    ExportError,
    ExportMismatchError,
    InferenceError,
    InputError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderError,
)
from encoders.index.exact import ItemIndex
from encoders.runtime.metadata import EncoderMetadata, read_metadata
from encoders.runtime.providers import available_providers, choose_providers, session_options
from encoders.runtime.text import TextEncoder

__all__ = [
    "ConfigurationError",
    "EncoderError",
    "EncoderMetadata",
    "ExportDependencyError",
    "ExportError",
    "ExportMismatchError",
    "ExportReport",
    "ExportSpec",
    "InferenceError",
    "InputError",
    "ItemIndex",
    "ModelLoadError",
    "ModelNotFoundError",
    "ProviderError",
    "TextEncoder",
    "available_providers",
    "choose_providers",
    "default_model_source",
    "export_text_encoder",
    "is_exported",
    "quantize_int8",
    "read_metadata",
    "session_options",
]
