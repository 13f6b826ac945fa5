"""The stream layer: Kafka topics in, a Faust worker updating interest state, recommendations out.

Where things live:

- :mod:`streams.settings`, :mod:`streams.errors`, :mod:`streams.cli`: configuration (every
  environment variable), the error tree, the ``interest-stream`` command;
- :mod:`streams.worker`: the worker (app factory, agents, pipeline, topics, web views, start-up);
- :mod:`streams.data`: sample data sets and the JSON Lines file formats;
- :mod:`streams.local`: the embedded broker, the demo, files onto topics and back;
- :mod:`streams.offline`: evaluation, peers, reports and training;
- :mod:`streams.bench`: ``interest-stream bench``, one module per section.

Importing :mod:`streams` is light (no Faust, no ONNX Runtime): :func:`create_app`,
:func:`run_worker` and :class:`Pipeline` load the worker on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streams.errors import (
    BenchError,
    BrokerError,
    DatasetError,
    EvaluationError,
    EventRejected,
    ModelRejected,
    SettingsError,
    StreamError,
    TopicError,
)
from streams.settings import ENV_VARS, Settings, TopicNames

if TYPE_CHECKING:
    from streams.worker.app import create_app
    from streams.worker.pipeline import Pipeline
    from streams.worker.runtime import run_worker

__all__ = [
    "ENV_VARS",
    "BenchError",
    "BrokerError",
    "DatasetError",
    "EvaluationError",
    "EventRejected",
    "ModelRejected",
    "Pipeline",
    "Settings",
    "SettingsError",
    "StreamError",
    "TopicError",
    "TopicNames",
    "create_app",
    "run_worker",
]

_WORKER = {
    "Pipeline": "streams.worker.pipeline",
    "create_app": "streams.worker.app",
    "run_worker": "streams.worker.runtime",
}


def __getattr__(name: str) -> Any:
    """The worker's names, imported when first asked for (``import streams`` stays light)."""
    if name not in _WORKER:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WORKER[name]), name)
