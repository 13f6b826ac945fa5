"""The package surface of :mod:`streams`: ``__all__``, the error tree, and a light import."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import streams
from streams import errors


def test_exported_members() -> None:
    assert streams.__all__ == sorted(streams.__all__, key=lambda n: (not n.isupper(), n))
    for name in streams.__all__:
        assert getattr(streams, name) is not None, name
    eager = {
        name
        for name, value in vars(streams).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "TYPE_CHECKING", "Any"}
    }
    assert eager <= set(streams.__all__)


def test_the_worker_names_are_the_worker_s() -> None:
    from streams.worker.app import create_app
    from streams.worker.pipeline import Pipeline
    from streams.worker.runtime import run_worker

    assert (streams.create_app, streams.Pipeline, streams.run_worker) == (
        create_app,
        Pipeline,
        run_worker,
    )
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = streams.nothing  # type: ignore[attr-defined]


def test_every_error_is_a_stream_error() -> None:
    raised = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(raised) >= 9
    assert all(issubclass(cls, streams.StreamError) for cls in raised)
    assert streams.EventRejected("bad ts").reason == "bad ts"


def test_importing_streams_loads_no_worker() -> None:
    code = (
        "import sys, streams; "
        "heavy = {'faust', 'aiokafka', 'onnxruntime', 'torch'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
