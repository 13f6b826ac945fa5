"""The ``encoder`` section of ``interest-stream bench``: the text encoder's sentences/s.

- :func:`encoder_section`: :class:`encoders.TextEncoder` (ONNX Runtime) per batch size against
  torch eager (``AutoModel`` + mean pooling + L2 norm), each in a process of its own, measured
  in alternating rounds; then the two parts below.
- :func:`int8_rows`: the int8-quantised encoder (``INTEREST_STREAM_ENCODER_INT8``) against fp32.
- :func:`host_rows`: the encoder's host work (tokenise + pad, no model run) with its fast
  WordPiece path against ``tokenizers`` alone.

The texts are the ml-100k item texts (:func:`encoder_texts`).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench.common import BenchConfig, Row, paired_rates, timed_rate
from streams.settings import Settings

__all__ = [
    "cycling",
    "encoder_section",
    "encoder_texts",
    "host_rows",
    "int8_rows",
    "torch_encoder",
]


def encoder_texts(settings: Settings) -> list[str]:
    """The ml-100k item texts of the home folder, or 512 stand-in sentences without them."""
    from streams.data.formats import read_items

    home = settings.home.resolve()
    items = read_items(home / "data" / "ml-100k" / "items.jsonl") if (
        home / "data" / "ml-100k" / "items.jsonl").is_file() else []
    return [i.text for i in items] or [f"sentence number {n}" for n in range(512)]


def cycling(encode: Callable[[list[str]], Any], texts: Sequence[str], size: int
            ) -> Callable[[], int]:
    """A step for :func:`timed_rate`: encode the next ``size`` texts (wrapping around)."""
    position = [0]

    def step() -> int:
        start = position[0]
        position[0] += size
        encode([texts[(start + i) % len(texts)] for i in range(size)])
        return size

    return step


def torch_encoder(source: Path) -> Callable[[list[str]], Any] | None:
    """Torch eager MiniLM (AutoModel + mean pooling + L2 norm); None without torch."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        return None
    tokenizer: Any = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    model: Any = AutoModel.from_pretrained(str(source), local_files_only=True).eval()

    def encode(texts: list[str]) -> Any:
        with torch.inference_mode():
            batch = tokenizer(texts, padding=True, truncation=True, max_length=256,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1).numpy()

    return encode


_LOADED: dict[str, Callable[[list[str], int], Any]] = {}


def _child_load(kind: str, model_dir: str, provider: str) -> str:
    """In a child process: load ``kind`` (``onnx``, ``int8`` or ``torch``), return its label
    or ''."""
    if kind in ("onnx", "int8"):
        from encoders import TextEncoder

        encoder = TextEncoder.load(Path(model_dir), provider=provider, quantized=kind == "int8")
        _LOADED[kind] = lambda texts, size: encoder.encode(texts, batch_size=size)
        return encoder.provider
    from encoders import default_model_source

    reference = torch_encoder(default_model_source())
    if reference is None:
        return ""
    _LOADED[kind] = lambda texts, _size: reference(texts)
    return "torch eager"


def _child_rate(kind: str, texts: list[str], size: int, min_seconds: float) -> float:
    encode = _LOADED[kind]
    return timed_rate(cycling(lambda batch: encode(batch, size), texts, size), min_seconds)


def _remote_rate(pool: ProcessPoolExecutor, kind: str, texts: list[str], size: int,
                 min_seconds: float) -> float:
    return float(pool.submit(_child_rate, kind, texts, size, min_seconds).result())


def _child_vectors(kind: str, texts: list[str]) -> Any:
    return np.asarray(_LOADED[kind](texts, 64))


def encoder_section(settings: Settings, cfg: BenchConfig, texts: list[str]) -> list[Row]:
    """ONNX and torch each in a process of its own (thread pools of one never spin against the
    other's runs), measured in alternating rounds."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as onnx, \
            ProcessPoolExecutor(1, mp_context=spawn) as torch:
        model_dir = str(settings.resolved_model_dir.resolve())
        loads = [pool.submit(_child_load, kind, model_dir, settings.provider)
                 for pool, kind in ((onnx, "onnx"), (torch, "torch"))]
        provider, reference = (f.result() for f in loads)
        note = ""
        if reference:
            ours_v, ref_v = (pool.submit(_child_vectors, kind, texts[:64]).result()
                             for pool, kind in ((onnx, "onnx"), (torch, "torch")))
            note = f"max |onnx - torch| = {np.abs(ours_v - ref_v).max():.1e}"
        rows = []
        for size in cfg.batch_sizes:
            ours, theirs = paired_rates(
                partial(_remote_rate, onnx, "onnx", texts, size, cfg.min_seconds),
                partial(_remote_rate, torch, "torch", texts, size, cfg.min_seconds)
                if reference else None, cfg.rounds)
            rows.append(Row("encoder", f"sentences/s, batch {size} ({provider})", ours,
                            "sent/s", reference, theirs, note))
            note = ""
    return rows + int8_rows(settings, cfg, texts) + host_rows(settings, cfg, texts)


def host_rows(settings: Settings, cfg: BenchConfig, texts: list[str], size: int = 512
              ) -> list[Row]:  # fmt: skip
    """The encoder's host work (tokenise + pad, no model run: what bounds it on a GPU) with its
    fast WordPiece path against ``tokenizers`` alone, batches of ``size``, alternating rounds;
    on the bench's texts and on the gpu section's 24-word texts (cut at the export's length
    here, not at 16 tokens), with the word cache warm (every word seen before) and cold
    (emptied before each batch)."""
    from encoders import TextEncoder
    from encoders.runtime.providers import usable_cpu_count
    from streams.bench.gpu import sixteen_token_texts

    folder = settings.resolved_model_dir
    fast = TextEncoder.load(folder, provider="cpu", intra_op_threads=1)
    plain = TextEncoder.load(folder, provider="cpu", intra_op_threads=1, fast_tokenizer=False)
    if not fast.fast_tokenizer:
        return [Row("encoder", "host work: fast WordPiece path", float("nan"), "",
                    note="not used for this tokenizer")]

    def step(encoder: TextEncoder, batches: list[list[str]], cold: bool) -> Callable[[], int]:
        def run() -> int:
            for batch in batches:
                if cold:
                    encoder.clear_cache()
                encoder.prepare(encoder.tokenize(batch))
            return sum(map(len, batches))

        return run

    rows = []
    for label, pool in (("the bench's texts", texts),
                        ("24-word texts", sixteen_token_texts(size * 8))):
        batches = [pool[i : i + size] for i in range(0, min(len(pool), size * 8), size)]
        for cold in (False, True):
            ours, theirs = paired_rates(
                partial(timed_rate, step(fast, batches, cold), cfg.min_seconds),
                partial(timed_rate, step(plain, batches, False), cfg.min_seconds), cfg.rounds)
            rows.append(Row("encoder", f"host work texts/s, batch {size}, {label}, word cache "
                            f"{'cold' if cold else 'warm'}", ours, "texts/s",
                            "tokenizers encode_batch_fast alone", theirs,
                            "tokenise + pad, no model run; ours on one thread, tokenizers on "
                            f"its own pool ({usable_cpu_count()} threads)"))
    return rows


def int8_rows(settings: Settings, cfg: BenchConfig, texts: list[str]) -> list[Row]:
    """The int8-quantised encoder (``INTEREST_STREAM_ENCODER_INT8``) against fp32 ONNX."""
    from encoders import EncoderError, quantize_int8
    from encoders.runtime.metadata import INT8_FILE

    model_dir = settings.resolved_model_dir.resolve()
    try:
        if not (model_dir / INT8_FILE).is_file():
            quantize_int8(model_dir)
    except EncoderError as exc:
        return [Row("encoder", "int8 sentences/s", math.nan, "sent/s", note=f"skipped: {exc}")]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as fp32, \
            ProcessPoolExecutor(1, mp_context=spawn) as int8:
        for pool, kind in ((fp32, "onnx"), (int8, "int8")):
            pool.submit(_child_load, kind, str(model_dir), settings.provider).result()
        a, b = (pool.submit(_child_vectors, kind, texts[:256]).result()
                for pool, kind in ((fp32, "onnx"), (int8, "int8")))
        cosine = float(np.mean(np.sum(a * b, axis=1)))  # both L2-normalised in the graph
        rows = []
        for size in cfg.batch_sizes[1:]:
            ours, theirs = paired_rates(
                partial(_remote_rate, int8, "int8", texts, size, cfg.min_seconds),
                partial(_remote_rate, fp32, "onnx", texts, size, cfg.min_seconds), cfg.rounds)
            rows.append(Row("encoder", f"int8 sentences/s, batch {size}", ours, "sent/s",
                            "fp32 onnx", theirs, f"mean cosine(int8, fp32) {cosine:.4f}"))
    return rows
