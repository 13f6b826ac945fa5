"""Execution-provider choice, session options and opening a session for ONNX Runtime.

The provider is chosen, not assumed: CUDA when onnxruntime lists it *and* a probe session really
loads with it (a listed CUDA EP whose libraries are missing silently falls back to CPU), CPU
otherwise. The choice is logged once per process. :func:`open_session` opens a graph with the
chosen providers and refuses a session that asked for CUDA and did not get it.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
from pathlib import Path
from typing import Any

import onnxruntime as ort

from encoders.errors import ConfigurationError, ModelLoadError, ProviderError

__all__ = [
    "CPU",
    "CUDA",
    "available_providers",
    "choose_providers",
    "open_session",
    "session_options",
    "usable_cpu_count",
]

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_PREFERENCES = ("auto", "cpu", "cuda")

# A 71-byte ONNX model (opset 13): y = Identity(x), x float[1]. Used to probe whether an EP loads.
_PROBE_MODEL = base64.b64decode(
    "CAgSADo7ChAKAXgSAXkiCElkZW50aXR5EgVwcm9iZVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="
)


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build lists (not all of them may load)."""
    return list(ort.get_available_providers())


@functools.cache
def _cuda_loads() -> bool:
    """True when a session with the CUDA EP really comes up with CUDA attached."""
    if CUDA not in available_providers():
        return False
    _preload_cuda_libraries()
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the probe's failure is expected on CPU-only hosts
    try:
        session = ort.InferenceSession(_PROBE_MODEL, sess_options=options, providers=[CUDA, CPU])
    except Exception as exc:  # onnxruntime raises its own untyped pybind errors
        log.info("CUDA execution provider is listed but does not load: %s", exc)
        return False
    return CUDA in session.get_providers()


def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the ``nvidia-*`` pip packages when they are installed (as torch
    installs them), so onnxruntime-gpu finds them without LD_LIBRARY_PATH; a no-op where they
    are not (system CUDA on the loader path then serves)."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # onnxruntime reports a missing library as an untyped error
        log.info("onnxruntime.preload_dlls: %s", exc)


def choose_providers(preferred: str = "auto") -> list[str]:
    """Providers to hand to ``InferenceSession``, best first.

    ``"auto"``: CUDA (then CPU as fallback) when CUDA loads, else CPU only.
    ``"cpu"``: CPU only. ``"cuda"``: CUDA then CPU; :class:`ProviderError` if CUDA does not load.
    """
    choice = preferred.strip().lower()
    if choice not in _PREFERENCES:
        raise ConfigurationError(
            f"unknown provider preference {preferred!r}; expected one of {', '.join(_PREFERENCES)}"
        )
    if choice == "cpu":
        providers = [CPU]
    elif _cuda_loads():
        providers = [CUDA, CPU]
    elif choice == "cuda":
        raise ProviderError(
            "CUDAExecutionProvider was requested but does not load "
            f"(onnxruntime lists {available_providers()}); install onnxruntime-gpu "
            "(pip install 'interest-stream[gpu]') with a matching CUDA/cuDNN, or use provider='cpu'"
        )
    else:
        providers = [CPU]
    log.info("execution providers for preference %r: %s", preferred, providers)
    return providers


def usable_cpu_count() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells us)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def session_options(intra_op_threads: int | None = None, *, spin: bool = False
                    ) -> ort.SessionOptions:
    """``onnxruntime.SessionOptions`` sized to the machine.

    ``intra_op_threads`` defaults to the usable CPU count; inter-op parallelism is 1 (a BERT graph
    is a chain, and the stream runs one session per worker). The intra-op threads do not spin
    after a run unless ``spin``: onnxruntime's default keeps them busy-waiting, which on a small
    box takes the cores the event loop, the Kafka consumer thread and the broker need between
    two microbatches (a worker at 1,000 events/s burned 130-180 % CPU spinning, 80 % without;
    median event->recommendation latency 32.5 ms in a run with spinning, 24.9 in the next
    without).
    """
    threads = usable_cpu_count() if intra_op_threads is None else intra_op_threads
    if threads < 1:
        raise ConfigurationError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(model_path: Path, providers: list[str], intra_op_threads: int | None) -> Any:
    """An ``InferenceSession`` on ``model_path`` with :func:`session_options`.

    :class:`ModelLoadError` when ONNX Runtime cannot load the graph, :class:`ProviderError` when
    CUDA was asked for first and the session did not attach it.
    """
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=session_options(intra_op_threads), providers=providers
        )
    except Exception as exc:  # onnxruntime raises untyped pybind errors
        raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc
    if providers[0] == CUDA and session.get_providers()[0] != CUDA:
        raise ProviderError(f"the session for {model_path} did not attach CUDAExecutionProvider")
    return session
