"""The runtime text encoder: tokenizers + one ONNX Runtime session, reused for every batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, cast

import numpy as np
from tokenizers import Encoding, Tokenizer

from encoders.errors import (
    ConfigurationError,
    EncoderError,
    InferenceError,
    InputError,
    ModelLoadError,
    ModelNotFoundError,
)
from encoders.runtime.metadata import (
    FP16_FILE,
    INT8_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    EncoderMetadata,
    Fp16Card,
    check_vectors,
    read_fp16_card,
    read_metadata,
)
from encoders.runtime.providers import CUDA, choose_providers, open_session
from encoders.runtime.wordpiece import PROBE_TEXTS, FastWordPiece, first_difference

__all__ = ["TextEncoder", "Tokens"]

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


def _graph_for(model_dir: Path, providers: list[str], quantized: bool
               ) -> tuple[Path, Fp16Card | None]:
    """Which graph to open: int8 when asked, the fused fp16 one on CUDA when it is current."""
    if quantized:
        return model_dir / INT8_FILE, None
    if providers[0] != CUDA:
        return model_dir / MODEL_FILE, None
    card = read_fp16_card(model_dir)
    if card is None:
        log.warning("no current %s in %s: the float32 graph runs on CUDA (slower); build it with "
                    "`interest-stream export --fp16`", FP16_FILE, model_dir)
        return model_dir / MODEL_FILE, None
    return model_dir / FP16_FILE, card


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token ids per text, and token types per text (``None`` when they are all 0)."""

    ids: list[list[int]]
    types: list[list[int]] | None = None

    def pick(self, rows: Sequence[int] | np.ndarray) -> Tokens:
        types = None if self.types is None else [self.types[row] for row in rows]
        return Tokens([self.ids[row] for row in rows], types)


class TextEncoder:
    """Sentence vectors from an exported encoder folder (see :mod:`encoders.build.export`).

    Build it once per worker with :meth:`load`. :meth:`encode` may run in several threads at
    once (the worker's catalog feed and its stream both call it): ONNX Runtime's ``run`` is
    thread-safe, the tokenizer's ``encode`` takes no lock, and the fast path's cache is a dict
    whose single operations the GIL keeps whole (a race costs at most a cache refill).

    On the CUDA provider a batch runs through IO binding (the vector is copied back once,
    no per-run output allocation on the host), and :meth:`encode` prepares the next batch
    (padding, on the CPU) while the GPU runs the current one, on a thread of its own.
    """

    def __init__(
        self,
        session: Any,
        tokenizer: Tokenizer,
        metadata: EncoderMetadata,
        *,
        max_length: int,
        model_version: str,
        fast: FastWordPiece | None = None,
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
        # A single text's token types come from the tokenizer's template: all 0 for BERT-family
        # templates, in which case they need not be read back per text.
        self._zero_types = not any(tokenizer.encode("probe").type_ids)
        self.dim: int = metadata.dim
        self.max_length: int = max_length
        self._cut = max_length  # where texts are truncated now (warm_up checks at the export's)
        self._export_max_length = metadata.max_length
        self._fast = self._checked(fast)
        self.model_version: str = model_version
        self.provider: str = str(session.get_providers()[0])
        self._cuda = self.provider == CUDA
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="encoder-gpu") if self._cuda \
            else None

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    @property
    def fast_tokenizer(self) -> bool:
        """Whether plain-ASCII texts are tokenised by :mod:`encoders.runtime.wordpiece`."""
        return self._fast is not None

    def _checked(self, fast: FastWordPiece | None) -> FastWordPiece | None:
        """``fast`` when it gives the tokenizer's ids on the probe texts, cut at the export's
        length and at this encoder's (and the graph needs no token types read back), else
        ``None``, logged."""
        if fast is None or not self._zero_types:
            return None
        for length in dict.fromkeys((self._export_max_length, self.max_length)):
            self._tokenizer.enable_truncation(max_length=length)
            try:
                differs = first_difference(fast, self._tokenizer, PROBE_TEXTS, length)
            finally:
                self._tokenizer.enable_truncation(max_length=self.max_length)
            if differs is not None:
                log.error("fast WordPiece path disagrees with the tokenizer on %r at max_length "
                          "%d; not used", differs, length)  # fmt: skip
                return None
        return fast

    @classmethod
    def from_session(cls, session: Any, model_dir: Path, max_length: int | None = None
                     ) -> TextEncoder:
        """An encoder over a session already opened on one of ``model_dir``'s graphs."""
        metadata = read_metadata(Path(model_dir))
        length = max_length or metadata.max_length
        tokenizer = _load_tokenizer(Path(model_dir) / TOKENIZER_FILE, length)
        return cls(session, tokenizer, metadata, max_length=length,
                   model_version=metadata.model_version,
                   fast=FastWordPiece.build(Path(model_dir) / TOKENIZER_FILE))

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        provider: str = "auto",
        max_length: int | None = None,
        intra_op_threads: int | None = None,
        quantized: bool = False,
        fast_tokenizer: bool = True,
    ) -> TextEncoder:
        """Open the export in ``model_dir`` with one ``InferenceSession``.

        ``max_length`` may shorten (never lengthen) the export's; ``quantized`` picks
        ``model.int8.onnx`` from :func:`encoders.build.export.quantize_int8`; ``fast_tokenizer``
        lets :mod:`encoders.runtime.wordpiece` tokenise plain-ASCII texts (checked against the
        tokenizer first; other texts, and other tokenizers, always go through ``tokenizers``).
        On CUDA the fused fp16 graph (:func:`encoders.build.fp16.optimize_fp16`) is used when it is
        current; it is checked against its float32 reference vectors and warmed up before the
        encoder is returned.
        """
        model_dir = Path(model_dir)
        metadata = read_metadata(model_dir)
        providers = choose_providers(provider)
        model_path, card = _graph_for(model_dir, providers, quantized)
        for needed in (model_path, model_dir / TOKENIZER_FILE):
            if not needed.is_file():
                raise ModelNotFoundError(f"{needed} is missing; export (or quantise) again")
        length = metadata.max_length if max_length is None else max_length
        if not 2 <= length <= metadata.max_length:
            raise ConfigurationError(
                f"max_length must be within 2..{metadata.max_length} (the export's), got {length}"
            )
        tokenizer = _load_tokenizer(model_dir / TOKENIZER_FILE, length)
        fast = FastWordPiece.build(model_dir / TOKENIZER_FILE) if fast_tokenizer else None
        session = open_session(model_path, providers, intra_op_threads)
        version = metadata.model_version + ("-int8" if quantized else "-fp16" if card else "")
        encoder = cls(session, tokenizer, metadata, max_length=length, model_version=version,
                      fast=fast)
        if card is not None:
            try:
                encoder.warm_up(card)
            except ModelLoadError as exc:  # wrong vectors are never served: float32 serves
                log.error("%s; the float32 graph runs on %s instead", exc, encoder.provider)
                encoder.close()
                session = open_session(model_dir / MODEL_FILE, providers, intra_op_threads)
                encoder = cls(session, tokenizer, metadata, max_length=length,
                              model_version=metadata.model_version, fast=fast)
        log.info(
            "text encoder %s (dim %d, max_length %d) on %s; fast WordPiece path %s",
            encoder.model_version,
            encoder.dim,
            length,
            encoder.provider,
            "on" if encoder.fast_tokenizer else "off",
        )
        return encoder

    def __repr__(self) -> str:
        return (
            f"TextEncoder(model_version={self.model_version!r}, dim={self.dim}, "
            f"max_length={self.max_length}, provider={self.provider!r})"
        )

    def warm_up(self, card: Fp16Card, batch_sizes: Sequence[int] = (1, 64, 512)) -> float:
        """Check the graph against ``card``'s float32 vectors on this provider, then run a batch
        of each size once (first runs allocate and pick kernels). Returns the smallest cosine;
        :class:`ModelLoadError` when the vectors are off. The check tokenises at the export's
        full length, as the reference was made, whatever this encoder truncates at."""
        self._tokenizer.enable_truncation(max_length=self._export_max_length)
        self._cut = self._export_max_length
        try:
            cosine = check_vectors(self.encode(list(card.texts)), card, self.provider)
            for size in batch_sizes:
                self.encode([card.texts[1]] * size, batch_size=size)
        except EncoderError as exc:
            raise ModelLoadError(f"the fp16 graph fails its check on {self.provider}: {exc}"
                                 ) from exc
        finally:
            self._tokenizer.enable_truncation(max_length=self.max_length)
            self._cut = self.max_length
        log.info("fp16 graph checked on %s (min cosine %.5f) and warmed up", self.provider, cosine)
        return cosine

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32, rows L2-normalised, in the order of ``texts``.

        Texts run in batches of similar length, each padded only to its longest. On the CPU
        they are tokenised at once and sorted by token count; on CUDA they are sorted by
        character count and each batch is tokenised and padded while the GPU runs the one
        before. Over-long texts are truncated at ``max_length``.
        """
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        if self._runner is None:
            for rows, feeds in self._batches_tokenised_first(items, batch_size):
                out[rows] = self._run(feeds)
            return out
        pending: tuple[np.ndarray, Future[np.ndarray]] | None = None
        try:
            for rows, feeds in self._batches_tokenised_per_batch(items, batch_size):
                running = self._runner.submit(self._run, feeds)  # the GPU works, we make the next
                if pending is not None:
                    out[pending[0]] = pending[1].result()
                pending = (rows, running)
            if pending is not None:
                out[pending[0]] = pending[1].result()
                pending = None
        finally:
            if pending is not None:  # an error above: no run may outlive this call
                wait([pending[1]])
        return out

    def close(self) -> None:
        """Stop the GPU batch thread (CUDA only); the encoder must not be used afterwards."""
        if self._runner is not None:
            self._runner.shutdown(wait=True)

    @property
    def tokenizer(self) -> Tokenizer:
        """The ``tokenizers`` tokenizer (truncating at :attr:`max_length`), no fast path."""
        return self._tokenizer

    def clear_cache(self) -> None:
        """Empty the fast WordPiece path's cache of pieces (benchmarks time a cold cache)."""
        if self._fast is not None:
            self._fast.clear()

    def tokenize(self, texts: list[str]) -> Tokens:
        """Each text's token ids (the fast path's where it takes the text, else the
        tokenizer's, in one ``encode_batch_fast`` call) and token types (``None``: all 0)."""
        if self._fast is None or not self._zero_types:
            encodings = self._encode(texts)
            types = None if self._zero_types else [e.type_ids for e in encodings]
            return Tokens([e.ids for e in encodings], types)
        ids: list[list[int] | None] = self._fast.ids(texts, self._cut)
        rest = [i for i, row in enumerate(ids) if row is None]
        for i, encoding in zip(rest, self._encode([texts[i] for i in rest]), strict=True):
            ids[i] = encoding.ids
        return Tokens(cast(list[list[int]], ids), None)

    def _encode(self, texts: list[str]) -> list[Encoding]:
        if not texts:
            return []
        fast = getattr(self._tokenizer, "encode_batch_fast", None)  # no offsets: we need none
        encodings: list[Encoding] = (fast or self._tokenizer.encode_batch)(texts)
        return encodings

    def _batches_tokenised_first(self, items: list[str], batch_size: int
                                 ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        tokens = self.tokenize(items)
        lengths = np.fromiter(map(len, tokens.ids), dtype=np.int64, count=len(items))
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield rows, self.prepare(tokens.pick(rows))

    def _batches_tokenised_per_batch(self, items: list[str], batch_size: int
                                     ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        chars = np.fromiter(map(len, items), dtype=np.int64, count=len(items))
        order = np.argsort(chars, kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield rows, self.prepare(self.tokenize([items[row] for row in rows]))

    def prepare(self, tokens: Tokens) -> dict[str, np.ndarray]:
        """The graph's padded int64 inputs for ``tokens`` (what one run is fed), built with
        vectorised copies (each text's ids read once)."""
        lengths = np.fromiter(map(len, tokens.ids), dtype=np.int64, count=len(tokens.ids))
        filled = np.arange(int(lengths.max())) < lengths[:, None]
        total = int(lengths.sum())
        ids = np.full(filled.shape, self._pad_id, dtype=np.int64)
        ids[filled] = np.fromiter(chain.from_iterable(tokens.ids), np.int64, total)
        made = {"input_ids": ids, "attention_mask": filled.astype(np.int64)}
        if "token_type_ids" in self._inputs:
            types = np.zeros(filled.shape, dtype=np.int64)
            if tokens.types is not None:
                types[filled] = np.fromiter(chain.from_iterable(tokens.types), np.int64, total)
            made["token_type_ids"] = types
        return {name: made[name] for name in self._inputs}

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            if self._cuda:
                result = self._run_bound(feeds)
            else:
                result = self._session.run([self._output], feeds)[0]
        except Exception as exc:  # onnxruntime raises untyped pybind errors
            rows = len(feeds["input_ids"])
            raise InferenceError(f"ONNX Runtime failed on a batch of {rows}: {exc}") from exc
        return np.asarray(result, dtype=np.float32)

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One run through IO binding: inputs copied to the device, the output left there by
        the run and copied back once."""
        binding = self._session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output(self._output, "cuda")
        self._session.run_with_iobinding(binding)
        result: np.ndarray = binding.copy_outputs_to_cpu()[0]
        return result


def _as_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputError("encode() takes a sequence of strings, not one string")
    items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"texts[{position}] is {type(text).__name__}, not str")
    return items
