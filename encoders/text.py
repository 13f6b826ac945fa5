"""The runtime text encoder: tokenizers + one ONNX Runtime session, reused for every batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from encoders.errors import (
    ConfigurationError,
    InferenceError,
    InputError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderError,
)
from encoders.metadata import INT8_FILE, MODEL_FILE, TOKENIZER_FILE, EncoderMetadata, read_metadata
from encoders.providers import CUDA, choose_providers, session_options

__all__ = ["TextEncoder"]

log = logging.getLogger(__name__)

_KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})


def _load_tokenizer(path: Path, max_length: int) -> Tokenizer:
    """The fast tokenizer with truncation at ``max_length`` and no built-in padding."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ModelLoadError(f"cannot load the tokenizer {path}: {exc}") from exc
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def _open_session(model_path: Path, provider: str, intra_op_threads: int | None) -> Any:
    providers = choose_providers(provider)
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=session_options(intra_op_threads), providers=providers
        )
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
    if provider.strip().lower() == "cuda" and session.get_providers()[0] != CUDA:
        raise ProviderError(f"the session for {model_path} did not attach CUDAExecutionProvider")
    return session


class TextEncoder:
    """Sentence vectors from an exported encoder folder (see :mod:`encoders.export`).

    Build it once per worker with :meth:`load`; :meth:`encode` is safe to call from one
    executor thread at a time per instance (ONNX Runtime's ``run`` itself is thread-safe).
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Tokenizer,
        metadata: EncoderMetadata,
        *,
        max_length: int,
        model_version: str,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._pad_id = metadata.pad_token_id
        self._inputs = tuple(graph_input.name for graph_input in session.get_inputs())
        unknown = set(self._inputs) - _KNOWN_INPUTS
        if unknown:
            raise ModelLoadError(
                f"the graph wants inputs the encoder cannot feed: {sorted(unknown)}"
            )
        self._output = session.get_outputs()[0].name
        self.dim: int = metadata.dim
        self.max_length: int = max_length
        self.model_version: str = model_version
        self.provider: str = str(session.get_providers()[0])

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        provider: str = "auto",
        max_length: int | None = None,
        intra_op_threads: int | None = None,
        quantized: bool = False,
    ) -> TextEncoder:
        """Open the export in ``model_dir`` with one ``InferenceSession``.

        ``max_length`` may shorten (never lengthen) the export's; ``quantized`` picks
        ``model.int8.onnx`` from :func:`encoders.export.quantize_int8`.
        """
        model_dir = Path(model_dir)
        metadata = read_metadata(model_dir)
        model_path = model_dir / (INT8_FILE if quantized else MODEL_FILE)
        for needed in (model_path, model_dir / TOKENIZER_FILE):
            if not needed.is_file():
                raise ModelNotFoundError(f"{needed} is missing; export (or quantise) again")
        length = metadata.max_length if max_length is None else max_length
        if not 2 <= length <= metadata.max_length:
            raise ConfigurationError(
                f"max_length must be within 2..{metadata.max_length} (the export's), got {length}"
            )
        tokenizer = _load_tokenizer(model_dir / TOKENIZER_FILE, length)
        session = _open_session(model_path, provider, intra_op_threads)
        version = f"{metadata.model_version}-int8" if quantized else metadata.model_version
        encoder = cls(session, tokenizer, metadata, max_length=length, model_version=version)
        log.info(
            "text encoder %s (dim %d, max_length %d) on %s",
            version,
            encoder.dim,
            length,
            encoder.provider,
        )
        return encoder

    def __repr__(self) -> str:
        return (
            f"TextEncoder(model_version={self.model_version!r}, dim={self.dim}, "
            f"max_length={self.max_length}, provider={self.provider!r})"
        )

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32, rows L2-normalised, in the order of ``texts``.

        Texts are tokenised once, sorted by token count and run in batches padded only to the
        longest in each batch. Over-long texts are truncated at ``max_length``.
        """
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        encodings = self._tokenizer.encode_batch(items)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(items))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._run(self._feeds([encodings[row] for row in rows]))
        return out

    def _feeds(self, encodings: list[Encoding]) -> dict[str, np.ndarray]:
        width = max(len(encoding.ids) for encoding in encodings)
        shape = (len(encodings), width)
        ids = np.full(shape, self._pad_id, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            ids[row, :size] = encoding.ids
            mask[row, :size] = 1
            types[row, :size] = encoding.type_ids
        made = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: made[name] for name in self._inputs}

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            result = self._session.run([self._output], feeds)[0]
        except Exception as exc:  # onnxruntime raises untyped pybind errors
            rows = len(feeds["input_ids"])
            raise InferenceError(f"ONNX Runtime failed on a batch of {rows}: {exc}") from exc
        return np.asarray(result, dtype=np.float32)


def _as_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("encode() takes a sequence of strings, not one string")
    items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"texts[{position}] is {type(text).__name__}, not str")
    return items
