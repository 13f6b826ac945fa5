"""The export folder's layout and its cards, read without torch or onnx.

An export folder (written by :mod:`encoders.build.export`) holds ``model.onnx``,
``tokenizer.json``, ``config.json`` and ``encoder.json`` (:class:`EncoderMetadata`, read by
:func:`read_metadata`; :func:`is_exported` checks the set is complete and the graph is the one
described). It may also hold ``model.int8.onnx`` (:func:`encoders.build.export.quantize_int8`)
and the fused GPU graph ``model.fp16.onnx`` with its card ``model.fp16.json``
(:class:`Fp16Card`, built by :func:`encoders.build.fp16.optimize_fp16`): the runtime reads the
card with :func:`read_fp16_card` and repeats its check with :func:`check_vectors` at warm-up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.errors import EncoderError, ExportMismatchError, ModelLoadError, ModelNotFoundError

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "FP16_CARD",
    "FP16_FILE",
    "INT8_FILE",
    "METADATA_FILE",
    "MIN_COSINE",
    "MODEL_FILE",
    "TOKENIZER_FILE",
    "EncoderMetadata",
    "Fp16Card",
    "check_vectors",
    "file_sha256",
    "is_exported",
    "read_fp16_card",
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

MIN_COSINE = 0.999
"""Each validation text's fp16 vector has at least this cosine with the float32 one."""

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


def is_exported(out_dir: Path) -> bool:
    """True when ``out_dir`` holds a complete export whose model.onnx matches its sha256."""
    out_dir = Path(out_dir)
    try:
        metadata = read_metadata(out_dir)
    except EncoderError:
        return False
    model_path = out_dir / MODEL_FILE
    if not (model_path.is_file() and (out_dir / TOKENIZER_FILE).is_file()):
        return False
    return file_sha256(model_path) == metadata.sha256


@dataclass(frozen=True)
class Fp16Card:
    """What ``model.fp16.json`` records about the fused fp16 graph."""

    source_sha256: str
    sha256: str
    fused: dict[str, int]
    nodes: int
    min_cosine: float
    texts: tuple[str, ...]
    reference: tuple[tuple[float, ...], ...]
    options: dict[str, bool] = field(default_factory=dict)

    def reference_vectors(self) -> np.ndarray:
        return np.asarray(self.reference, dtype=np.float32)


def read_fp16_card(model_dir: Path) -> Fp16Card | None:
    """The card of a *current* fp16 graph in ``model_dir``, or ``None``.

    ``None`` when there is no graph, no card, or the graph was built from another ``model.onnx``
    (a re-export makes the old fp16 graph stale). :class:`ModelLoadError` for an unreadable card
    or a graph whose digest does not match it.
    """
    model_dir = Path(model_dir)
    graph, card_path = model_dir / FP16_FILE, model_dir / FP16_CARD
    if not (graph.is_file() and card_path.is_file()):
        return None
    try:
        raw = json.loads(card_path.read_text(encoding="utf-8"))
        card = Fp16Card(**{**raw, "texts": tuple(raw["texts"]),
                           "reference": tuple(tuple(row) for row in raw["reference"])})
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ModelLoadError(f"cannot read {card_path}: {exc}") from exc
    if card.source_sha256 != read_metadata(model_dir).sha256:
        return None
    if file_sha256(graph) != card.sha256:
        raise ModelLoadError(f"{graph} does not match the digest in {card_path}; build it again")
    return card


def check_vectors(actual: np.ndarray, card: Fp16Card, where: str) -> float:
    """The smallest cosine between ``actual`` and the card's reference vectors.

    :class:`ExportMismatchError` when it is below :data:`MIN_COSINE` (or not finite).
    """
    expected = card.reference_vectors()
    if actual.shape != expected.shape:
        raise ExportMismatchError(float("inf"), MIN_COSINE,
                                  f"{where}: shape {actual.shape} != {expected.shape}")
    norms = np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    cosine = float(np.min(np.sum(actual * expected, axis=1) / np.maximum(norms, 1e-12)))
    if not cosine >= MIN_COSINE:
        raise ExportMismatchError(1.0 - cosine, 1.0 - MIN_COSINE,
                                  f"{where}: fp16 vector cosine {cosine:.5f} < {MIN_COSINE}")
    return cosine
