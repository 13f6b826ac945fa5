"""Online quality: was each event's item in its user's last recommendation list, and at which rank.

The operator's measure of quality. For every event a worker applies, :class:`OnlineQuality`
looks up the list this worker last sent that user (its first :data:`K` item ids and the model
version that ranked it): the event is a *hit* at rank ``r`` (1-based) when its item is the
``r``-th of that list, a *miss* when it is not in it, and *unscored* when the worker knows no
list of the user. Hits and misses count for the model version that ranked the list, so HR@10
(hits / scored events) and MRR@10 (sum of ``1/rank`` over the hits / scored events) compare
the versions that served. An empty list is a list: its user's next events are misses.

- **When.** :meth:`OnlineQuality.record_batch` runs as a batch is written back: the batch's
  applied events are scored in arrival order, all against the list that was current before
  the batch (two events of one user in one batch are both scored against the same list), then
  each user's new list is remembered. Duplicates, redeliveries and dead-lettered events are not
  scored; nor is a user forgotten while the batch ran, whose new list is not remembered either.
- **Memory.** The lists live in this worker's memory only (the state codec does not carry
  them): a least-recently-used map of at most :data:`MAX_USERS` users, about 0.3 KB a user
  (measured with ten item ids: 220 bytes of map entry and tuple, the item id strings being the
  item index's own, plus the user id string), so about 300 MB at the full million. A user's
  events always reach the worker that owns their partition, so per-worker memory sees every
  event of its users. After a restart the map starts empty (and a partition that moved here
  brings no lists): a user's first event then is *unscored*, not a miss, and the list sent
  for it is remembered from then on.
- **Windows.** Cumulative tallies per model version (what Prometheus counters need: any window
  with ``rate()``), and per-second tallies of the last :data:`WINDOWS_S` (1 and 10 minutes,
  to the second) for the dashboard and ``/metrics.json``.

- **Variants.** With A/B (:mod:`streams.worker.ab`) each list also remembers the variant that
  served it, and the same tallies are kept per variant (``variants``), beside the messages each
  variant sent and their latency (:class:`streams.worker.ab.VariantFlow`, fed by
  :meth:`OnlineQuality.sent`). Without A/B every list is variant ``A``'s.

The figures are on ``/metrics`` (``interest_stream_online_*``, ``interest_stream_ab_*``),
``/metrics.json`` (``online``) and the dashboard; ``docs/monitoring.md`` lists them.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from interest_state import Event
from streams.worker.ab import VariantFlow
from streams.worker.outcomes import BatchResult

__all__ = ["K", "MAX_USERS", "WINDOWS_S", "OnlineQuality", "Score", "Tally", "window_name"]

#: The cut-off of HR@K and MRR@K: only the first K items of a list count.
K = 10
#: The most users whose last list a worker keeps (least recently used first out).
MAX_USERS = 1_000_000
#: The sliding windows (seconds) of the dashboard and ``/metrics.json``.
WINDOWS_S: tuple[int, ...] = (60, 600)


class Score(NamedTuple):
    """One scored event: whether its item was in the user's last list, and its rank there
    (1-based; ``None`` for a miss)."""

    hit: bool
    rank: int | None


@dataclass(slots=True)
class Tally:
    """Scored events, hits and the sum of the hits' reciprocal ranks."""

    scored: int = 0
    hits: int = 0
    reciprocal_ranks: float = 0.0

    def add(self, score: Score) -> None:
        self.scored += 1
        if score.rank is not None:
            self.hits += 1
            self.reciprocal_ranks += 1.0 / score.rank

    def merge(self, other: Tally) -> None:
        self.scored += other.scored
        self.hits += other.hits
        self.reciprocal_ranks += other.reciprocal_ranks

    @property
    def hit_rate(self) -> float | None:
        """HR@K: hits / scored events (``None`` before any was scored)."""
        return self.hits / self.scored if self.scored else None

    @property
    def mrr(self) -> float | None:
        """MRR@K: the mean reciprocal rank over scored events, a miss counting 0."""
        return self.reciprocal_ranks / self.scored if self.scored else None

    def figures(self) -> dict[str, Any]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {"scored": self.scored, "hits": self.hits,
                "hr": rounded(self.hit_rate), "mrr": rounded(self.mrr)}  # fmt: skip


def window_name(seconds: int) -> str:
    """``60`` -> ``'1m'``, ``600`` -> ``'10m'``, ``90`` -> ``'90s'`` (labels and JSON keys)."""
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


class OnlineQuality:
    """The last list of each user this worker served, and the tallies of the events scored
    against them (see the module docstring). Not thread-safe: the agent and the web views
    use it from the event loop."""

    def __init__(
        self, k: int = K, max_users: int = MAX_USERS, windows_s: tuple[int, ...] = WINDOWS_S
    ) -> None:
        if k < 1 or max_users < 1 or not windows_s or min(windows_s) < 1:
            raise ValueError(f"k, max_users and windows must be >= 1: {k}, {max_users}, "
                             f"{windows_s}")  # fmt: skip
        self.k = k
        self.max_users = max_users
        self.windows_s = tuple(sorted(windows_s))
        #: user -> (model version, variant, item id at rank 1, rank 2, ...): one flat tuple
        self._lists: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        #: model version -> every event scored against its lists since the worker started
        self.totals: dict[str, Tally] = {}
        #: A/B variant -> the same, by the variant that served the list
        self.variant_totals: dict[str, Tally] = {}
        #: the recommendation messages each variant sent, and their latency
        self.flow = VariantFlow()
        #: events of users whose last list this worker does not know
        self.unscored = 0
        #: (epoch second, model version -> tally, variant -> tally), oldest first, the last
        #: max(windows) seconds
        self._seconds: deque[tuple[int, dict[str, Tally], dict[str, Tally]]] = deque()

    def __len__(self) -> int:
        """Users whose last list is remembered."""
        return len(self._lists)

    def observe(self, user_id: str, item_id: str, now: float | None = None) -> Score | None:
        """Score one event against its user's last list; ``None`` (counted as unscored) when
        no list of the user is known. ``now``: epoch seconds, for the windows."""
        remembered = self._lists.get(user_id)
        if remembered is None:
            self.unscored += 1
            return None
        self._lists.move_to_end(user_id)
        version, variant, items = remembered[0], remembered[1], remembered[2:]
        try:
            score = Score(True, items.index(item_id) + 1)
        except ValueError:
            score = Score(False, None)
        self.totals.setdefault(version, Tally()).add(score)
        self.variant_totals.setdefault(variant, Tally()).add(score)
        _, by_version, by_variant = self._second(time.time() if now is None else now)
        by_version.setdefault(version, Tally()).add(score)
        by_variant.setdefault(variant, Tally()).add(score)
        return score

    def remember(
        self, user_id: str, items: Sequence[str], model_version: str, variant: str = "A"
    ) -> None:
        """``items`` (best first) were just sent to ``user_id``, ranked by ``model_version``
        (A/B ``variant``)."""
        self._lists[user_id] = (model_version, variant, *items[: self.k])
        self._lists.move_to_end(user_id)
        while len(self._lists) > self.max_users:
            self._lists.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop the user's last list (their next event is unscored)."""
        self._lists.pop(user_id, None)

    def record_batch(
        self, events: Sequence[Event], result: BatchResult, skip: Callable[[str], bool]
    ) -> None:
        """Score the applied events of a batch (arrival order, each against its user's list from
        before the batch), then remember each user's new list; users for whom ``skip(user_id)``
        is true (forgotten while the batch ran) are neither scored nor remembered."""
        applied = {user_id: Counter(outcome.applied) for user_id, outcome in result.users.items()
                   if not skip(user_id)}  # fmt: skip
        now = time.time()
        for event in events:
            ids = applied.get(event.user_id)
            if ids is not None and ids[event.event_id] > 0:  # a duplicate's id was applied once
                ids[event.event_id] -= 1
                self.observe(event.user_id, event.item_id, now)
        for user_id in applied:
            outcome = result.users[user_id]
            version = outcome.model_version or result.model_version
            items = [r.item_id for r in outcome.recommendations]
            self.remember(user_id, items, version, outcome.variant)

    def sent(self, variant: str, latency_ms: float) -> None:
        """A recommendation message ranked by ``variant`` was sent, ``latency_ms`` after the
        arrival of its oldest event."""
        self.flow.sent(variant, latency_ms)

    def window(
        self, seconds: int, now: float | None = None, *, by_variant: bool = False
    ) -> dict[str, Tally]:
        """Model version (or A/B variant) -> the events scored in the last ``seconds`` (to the
        second, the one under way included); those with none are left out."""
        newest = int(time.time() if now is None else now)
        out: dict[str, Tally] = {}
        for second, *tallies in self._seconds:
            if second > newest - seconds:
                for name, tally in tallies[1 if by_variant else 0].items():
                    out.setdefault(name, Tally()).merge(tally)
        return out

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The ``online`` field of ``/metrics.json``."""
        now = time.time() if now is None else now
        windows = {window_name(s): self.window(s, now) for s in self.windows_s}
        models = {
            version: {**tally.figures(), **{
                f"last_{name}": (tallies.get(version) or Tally()).figures()
                for name, tallies in windows.items()}}
            for version, tally in sorted(self.totals.items())
        }  # fmt: skip
        return {"k": self.k, "unscored": self.unscored, "users_remembered": len(self),
                "models": models, "variants": self.variant_figures(now)}  # fmt: skip

    def variant_figures(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """variant -> HR/MRR since the start and over each window, messages sent, latency."""
        windows = {window_name(s): self.window(s, now, by_variant=True) for s in self.windows_s}
        flow = self.flow.snapshot()
        names = sorted({*self.variant_totals, *flow})
        return {
            variant: {**(self.variant_totals.get(variant) or Tally()).figures(), **{
                f"last_{name}": (tallies.get(variant) or Tally()).figures()
                for name, tallies in windows.items()},
                **(flow.get(variant) or {"recommendations": 0, "latency_ms": {}})}
            for variant in names
        }  # fmt: skip

    def chart_point(self, now: float | None = None) -> dict[str, float | None]:
        """HR@K of each model version with events scored in the longest window, over each
        window (``'<version> (1m)'`` keys; ``None`` where a window has no scored event)."""
        windows = {window_name(s): self.window(s, now) for s in self.windows_s}
        versions = sorted(windows[window_name(self.windows_s[-1])])
        out: dict[str, float | None] = {}
        for version in versions:
            for name, tallies in windows.items():
                rate = (tallies.get(version) or Tally()).hit_rate
                out[f"{version} ({name})"] = None if rate is None else round(rate, 4)
        return out

    def _second(self, now: float) -> tuple[int, dict[str, Tally], dict[str, Tally]]:
        """The tallies of the second ``now`` falls in (a clock stepping back adds to the newest
        second); seconds older than the longest window are dropped."""
        second = int(now)
        if not self._seconds or self._seconds[-1][0] < second:
            self._seconds.append((second, {}, {}))
            while self._seconds[0][0] <= second - self.windows_s[-1]:
                self._seconds.popleft()
        return self._seconds[-1]
