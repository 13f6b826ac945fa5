"""Errors raised by the stream layer.

    StreamError
     ├── SettingsError        a setting or environment variable has a bad value
     ├── BrokerError          the embedded broker could not start, or a broker is unreachable
     ├── TopicError           a topic exists with the wrong partition count, or cannot be created
     ├── EventRejected        one input record is unusable; ``reason`` goes to the DLQ
     ├── DatasetError         a data file or sample data set cannot be read, written or fetched
     ├── ModelRejected        a sequence model failed its checks; the old one keeps serving
     ├── EvaluationError      the data cannot be evaluated, or a model broke the ranking contract
     └── BenchError           a benchmark step could not run

Errors from aiokafka, faust and the OS are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class StreamError(Exception):
    """Root of every error raised by :mod:`streams`."""


class SettingsError(StreamError):
    """A setting (or the environment variable behind it) has a value we cannot use."""


class BrokerError(StreamError):
    """The embedded broker did not start, or no broker answers at the bootstrap address."""


class TopicError(StreamError):
    """A topic cannot be created, or exists with a partition count other than configured."""


class EventRejected(StreamError):
    """An input record cannot be used; ``reason`` is what the dead-letter record says."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DatasetError(StreamError):
    """A data file or the sample data set cannot be read, written or fetched."""


class ModelRejected(StreamError):
    """A sequence model cannot be served; ``reason`` says why (shown on ``/metrics``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EvaluationError(StreamError):
    """The data set cannot be evaluated, or a model broke the ranking contract."""


class BenchError(StreamError):
    """A benchmark step could not run (a process died, nothing arrived in time)."""
