"""The torch/transformers half of the export.

Imported only by :mod:`encoders.build.export` after the optional-dependency check, so that the
runtime (onnxruntime + tokenizers + numpy) never needs torch.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from encoders.errors import ExportError, ModelNotFoundError

__all__ = ["PooledEncoder", "accepted_inputs", "embed", "load_hf", "to_onnx"]


def load_hf(source: Path) -> tuple[Any, Any]:
    """(model, fast tokenizer) from a local Hugging Face folder; never touches the network."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        # Eager attention traces to the classic MatMul-Scale-Add(mask)-Softmax-MatMul pattern,
        # which onnxruntime's transformer optimizer fuses into one Attention node per layer
        # (encoders.build.fp16.optimize_fp16); the SDPA trace (with its IsNaN guard) does not fuse.
        # Same arithmetic either way: validation below compares with this very model.
        model = AutoModel.from_pretrained(
            str(source), local_files_only=True, attn_implementation="eager"
        )
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load a Hugging Face model from {source}: {exc}") from exc
    except (ValueError, KeyError) as exc:
        raise ExportError(f"{source} is not a usable encoder model: {exc}") from exc
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise ExportError(f"{source} has no fast (tokenizers) tokenizer; the runtime needs one")
    model.eval()
    return model, tokenizer


def accepted_inputs(model: torch.nn.Module, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The subset of ``wanted`` that ``model.forward`` takes (DistilBERT has no token_type_ids)."""
    params = inspect.signature(model.forward).parameters
    names = tuple(name for name in wanted if name in params)
    missing = {"input_ids", "attention_mask"} - set(names)
    if missing:
        raise ExportError(f"the model does not take {sorted(missing)}; cannot export an encoder")
    return names


class PooledEncoder(torch.nn.Module):
    """Transformer + attention-mask-weighted mean pooling + L2 normalisation, as one graph."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        # A new Module starts in training mode, and torch.onnx.export restores the mode it found
        # after tracing; left in training mode, dropout would make the torch reference random.
        self.eval()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.input_names, inputs, strict=True))
        hidden: torch.Tensor = self.model(**kwargs).last_hidden_state
        mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(summed / counts, p=2.0, dim=-1)


def _tensors(feeds: Mapping[str, np.ndarray], names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in names)


def to_onnx(
    encoder: PooledEncoder,
    feeds: Mapping[str, np.ndarray],
    path: Path,
    *,
    output_names: tuple[str, ...],
    dynamic_axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    """Trace ``encoder`` on ``feeds`` (a padded batch) with the TorchScript exporter.

    The dynamo exporter needs onnxscript, which the export extra does not pull in; the
    TorchScript one is deprecated but complete for BERT-family graphs. Its tracer warnings are
    expected (data-dependent branches in the attention-mask code are traced on a padded batch,
    which is the general path) and validation afterwards is what proves the graph right.
    """
    names = encoder.input_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*", category=UserWarning)
        try:
            torch.onnx.export(
                encoder,
                _tensors(feeds, names),
                str(path),
                dynamo=False,
                input_names=list(names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
            )
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc


def embed(encoder: PooledEncoder, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """The reference embeddings from torch, float32 (n, dim), in eval mode (no dropout)."""
    encoder.eval()
    with torch.inference_mode():
        out = encoder(*_tensors(feeds, encoder.input_names))
    return np.asarray(out.detach().cpu().numpy(), dtype=np.float32)
