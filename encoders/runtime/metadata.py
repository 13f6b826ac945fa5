"""The export folder's layout and its ``encoder.json`` metadata (no torch needed to read it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from encoders.errors import ModelLoadError, ModelNotFoundError

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "FP16_CARD",
    "FP16_FILE",
    "INT8_FILE",
    "METADATA_FILE",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "EncoderMetadata",
    "file_sha256",
    "read_metadata",
    "write_metadata",
]

MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FP16_FILE = "model.fp16.onnx"
FP16_CARD = "model.fp16.json"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
METADATA_FILE = "encoder.json"
FORMAT_VERSION = 1

_EXPORT_HINT = (
    "export it first with encoders.export_text_encoder(default_model_source(), model_dir)"
)


@dataclass(frozen=True)
class EncoderMetadata:
    """What ``encoder.json`` records about one export."""

    dim: int
    max_length: int
    source: str
    sha256: str
    model_version: str
    input_names: tuple[str, ...]
    output_name: str
    pad_token_id: int
    opset: int
    atol: float
    max_abs_diff: float
    pooling: str = "mean"
    #: Attention heads (the GPU graph's fusion needs it); 0 in exports made before it was kept.
    num_heads: int = 0
    normalized: bool = True
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EncoderMetadata:
        """Build from parsed JSON; unknown keys are ignored so newer writers stay readable."""
        names = set(cls.__dataclass_fields__)
        values = {key: value for key, value in raw.items() if key in names}
        values["input_names"] = tuple(values.get("input_names", ()))
        meta = cls(**values)
        if meta.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {meta.format_version} is not {FORMAT_VERSION}")
        if meta.dim < 1 or meta.max_length < 2 or not meta.input_names:
            raise ValueError("dim, max_length or input_names out of range")
        return meta


def read_metadata(model_dir: Path) -> EncoderMetadata:
    """Read ``model_dir/encoder.json``.

    :class:`ModelNotFoundError` when the folder or the file is absent, :class:`ModelLoadError`
    when it is there but unreadable.
    """
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"no exported encoder at {model_dir} (missing {METADATA_FILE}); {_EXPORT_HINT}"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("top level is not an object")
        return EncoderMetadata.from_dict(raw)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc


def write_metadata(model_dir: Path, metadata: EncoderMetadata) -> Path:
    path = Path(model_dir) / METADATA_FILE
    path.write_text(metadata.to_json(), encoding="utf-8")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
