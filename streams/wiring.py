"""What the agents, the catalog feed and the views share: the app, its topics and its table."""

from __future__ import annotations

from dataclasses import dataclass

import faust

from streams.settings import Settings
from streams.stats import Stats

__all__ = ["Wiring"]


@dataclass(slots=True)
class Wiring:
    """What the agents and views share: the app, its topics and its table."""

    app: faust.App
    settings: Settings
    events: faust.TopicT
    items: faust.TopicT
    recommendations: faust.TopicT
    dlq: faust.TopicT
    table: faust.Table
    stats: Stats
