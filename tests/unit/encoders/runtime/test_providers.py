"""Execution-provider choice and session options."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from encoders import ConfigurationError, ProviderError, choose_providers, session_options
from encoders.runtime import providers as providers_module

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture()
def fresh_probe() -> Iterator[None]:
    providers_module._cuda_loads.cache_clear()
    yield
    providers_module._cuda_loads.cache_clear()


def test_cpu_is_forced() -> None:
    assert choose_providers("cpu") == [CPU]


def test_auto_picks_cuda_only_when_it_loads(caplog: pytest.LogCaptureFixture) -> None:
    expected = [CUDA, CPU] if providers_module._cuda_loads() else [CPU]
    with caplog.at_level(logging.INFO, logger="encoders.runtime.providers"):
        assert choose_providers("auto") == expected
    assert str(expected) in caplog.text, "the choice must be logged"


def test_listed_but_unloadable_cuda(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setattr(providers_module, "available_providers", lambda: [CUDA, CPU])

    def broken_session(*args: object, **kwargs: object) -> object:
        raise RuntimeError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(providers_module.ort, "InferenceSession", broken_session)
    assert choose_providers("auto") == [CPU]
    with pytest.raises(ProviderError, match="onnxruntime-gpu"):
        choose_providers("cuda")


def test_cuda_missing_and_unknown_names(monkeypatch: pytest.MonkeyPatch, fresh_probe: None) -> None:
    monkeypatch.setattr(providers_module, "available_providers", lambda: [CPU])
    with pytest.raises(ProviderError):
        choose_providers("cuda")
    with pytest.raises(ConfigurationError):
        choose_providers("tpu")


def test_session_options_threads() -> None:
    assert session_options(2).intra_op_num_threads == 2
    assert session_options().intra_op_num_threads == providers_module.usable_cpu_count()
    assert session_options().inter_op_num_threads == 1
    with pytest.raises(ConfigurationError):
        session_options(0)


def test_session_threads_do_not_spin_unless_asked() -> None:
    import onnxruntime as ort

    def spinning(options: ort.SessionOptions) -> str | None:
        try:
            return str(options.get_session_config_entry("session.intra_op.allow_spinning"))
        except Exception:  # onnxruntime raises when the entry was never set
            return None

    assert spinning(session_options()) == "0"
    assert spinning(session_options(spin=True)) == spinning(ort.SessionOptions())  # its default
