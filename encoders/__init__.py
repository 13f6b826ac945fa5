"""Text and sequence encoders for the interest stream: ONNX models, their export, item indexes.

Three rooms, and this module is the door to all of them:

- :mod:`encoders.runtime`: what the worker serves with (the text encoder, the sequence model,
  the export folder's layout and cards, execution providers); needs only onnxruntime,
  tokenizers and numpy.
- :mod:`encoders.index`: catalog search (exact :class:`ItemIndex`, faiss :class:`AnnIndex`,
  :class:`DeviceIndex` on the encoder's ONNX Runtime device).
- :mod:`encoders.build`: making the models (export, int8, the fused fp16 graph, sequence
  training); its names here are imported on first use, so ``import encoders`` loads nothing of
  it, and torch and transformers only when an export or a training really runs (the optional
  extra ``pip install 'interest-stream[export]'``).

Errors: :mod:`encoders.errors` (one root, :class:`EncoderError`).
"""

from __future__ import annotations

import importlib
import typing

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
from encoders.index.ann import AnnIndex, limit_ann_threads
from encoders.index.device import DeviceIndex
from encoders.index.exact import ItemIndex
from encoders.runtime.metadata import (
    CONFIG_FILE,
    FP16_CARD,
    FP16_FILE,
    INT8_FILE,
    METADATA_FILE,
    MIN_COSINE,
    MODEL_FILE,
    TOKENIZER_FILE,
    EncoderMetadata,
    Fp16Card,
    is_exported,
    read_fp16_card,
    read_metadata,
)
from encoders.runtime.providers import (
    CPU,
    CUDA,
    available_providers,
    choose_providers,
    session_options,
    usable_cpu_count,
)
from encoders.runtime.sequence import (
    CARD_FILE,
    ITEMS_FILE,
    SEQUENCE_FILE,
    TEXT_PROJ_FILE,
    SequenceEvent,
    SequenceFeatures,
    SequenceModel,
    is_sequence_model,
)
from encoders.runtime.text import TextEncoder, Tokens

if typing.TYPE_CHECKING:
    from encoders.build.export import (
        ExportReport,
        ExportSpec,
        default_model_source,
        export_text_encoder,
        quantize_int8,
    )
    from encoders.build.fp16 import optimize_fp16
    from encoders.build.sequence_data import TrainConfig, TrainingData

__all__ = [
    "AnnIndex",
    "CARD_FILE",
    "CONFIG_FILE",
    "CPU",
    "CUDA",
    "ConfigurationError",
    "DeviceIndex",
    "EncoderError",
    "EncoderMetadata",
    "ExportDependencyError",
    "ExportError",
    "ExportMismatchError",
    "ExportReport",
    "ExportSpec",
    "FP16_CARD",
    "FP16_FILE",
    "Fp16Card",
    "INT8_FILE",
    "ITEMS_FILE",
    "InferenceError",
    "InputError",
    "ItemIndex",
    "METADATA_FILE",
    "MIN_COSINE",
    "MODEL_FILE",
    "ModelLoadError",
    "ModelNotFoundError",
    "ProviderError",
    "SEQUENCE_FILE",
    "SequenceEvent",
    "SequenceFeatures",
    "SequenceModel",
    "TEXT_PROJ_FILE",
    "TOKENIZER_FILE",
    "TextEncoder",
    "Tokens",
    "TrainConfig",
    "TrainingData",
    "available_providers",
    "choose_providers",
    "default_model_source",
    "export_text_encoder",
    "is_exported",
    "is_sequence_model",
    "limit_ann_threads",
    "optimize_fp16",
    "quantize_int8",
    "read_fp16_card",
    "read_metadata",
    "session_options",
    "usable_cpu_count",
]

_BUILD_NAMES = {
    "ExportReport": "encoders.build.export",
    "ExportSpec": "encoders.build.export",
    "default_model_source": "encoders.build.export",
    "export_text_encoder": "encoders.build.export",
    "quantize_int8": "encoders.build.export",
    "optimize_fp16": "encoders.build.fp16",
    "TrainConfig": "encoders.build.sequence_data",
    "TrainingData": "encoders.build.sequence_data",
}
"""The build room's names in :data:`__all__` and the module each lives in (none needs torch to
import: the trainer and the sequence export, which do, are reached through their modules)."""


def __getattr__(name: str) -> object:
    """A build name, imported from its module on first use and kept here (PEP 562)."""
    module = _BUILD_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_BUILD_NAMES))
