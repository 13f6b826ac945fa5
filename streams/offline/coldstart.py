"""Cold start offline: users ranked from only their first few events, against popularity.

Each evaluated user of the main split with at least ``max(ns) + 1`` events (the same users in
every column), for each ``n`` in ``ns``: the first ``n`` events (time order) are the context,
replayed through the very same :func:`interest_state.update` as the main rows; the list is the
one the stream would show at the (n+1)-th event's time, seen items masked. Two targets:
``next``, the (n+1)-th event's item (or the first after it that is not a dislike; issue 18's
question; training data of the main split, so training popularity counts it and the sequence
model learned it from these very events), and ``test``, the held-out test item (leak-free).

Rows: ``popularity`` (training events); ``recent-popularity-<w>``, the stream's trending as it
stood then (:class:`TrendingWindow`), filled up by training popularity; the personal rankings
alone (``short-term-decay``; ``blend-<w>``, the served blend, with a sequence model); and the
served list as :class:`streams.worker.lists.ListMaker` makes it: the served ranker's candidates
re-ranked by MMR (``<served>+mmr-<λ>``, when ``mmr_lambda`` < 1), mixed slot by slot with the
trending items by :func:`interest_state.mix_trending` at :func:`interest_state.trending_share`
``(n, personal_after)`` (``served-mix-pa<p>``). Metrics as in the main table at ``k``, the
smallest cut-off, mean ± standard error over users; each row's NDCG@k is also compared with
popularity's user by user (the paired difference and its standard error).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from encoders.runtime.sequence import DISLIKE
from interest_state import Recommendation
from streams.contract import EventRecord
from streams.data.formats import read_events
from streams.errors import EvaluationError
from streams.offline.batches import RANK_BATCH, check_lists, rank_all
from streams.offline.diverse import ScoredRecommender
from streams.offline.rankers import (
    PopularityModel,
    Recommender,
    ShortTermModel,
    TrainData,
    UserContext,
    ids_of,
)
from streams.offline.report import MetricValue, mean_se, score_ranks, target_ranks
from streams.offline.transformer import BlendModel, TransformerModel
from streams.settings import Settings
from streams.worker.lists import ListMaker

__all__ = [
    "COLD_START_NS",
    "PERSONAL_AFTER_GRID",
    "TARGETS",
    "ColdStart",
    "ColdStartScores",
    "ColdStartTable",
    "TrendingWindow",
]

COLD_START_NS = (1, 2, 3, 5)
"""Numbers of first events a user is ranked from."""
PERSONAL_AFTER_GRID = (3, 5)
"""``personal_after`` values of the served mix rows."""

TARGETS = ("next", "test")


@dataclass(frozen=True, slots=True, eq=False)
class TrendingWindow:
    """The stream's trending source replayed (``streams.worker.trending.TrendingCounts``): the
    events of the last ``window_s / hop_s`` panes (``hop_s`` long, aligned on the epoch), the
    current one included, counted per item; ties by item id."""

    ts: npt.NDArray[np.float64]
    rows: npt.NDArray[np.int64]
    item_ids: tuple[str, ...]
    window_s: float
    hop_s: float

    @classmethod
    def build(
        cls, events: Iterable[EventRecord], item_ids: Sequence[str], window_s: float, hop_s: float
    ) -> TrendingWindow:
        if hop_s <= 0.0 or window_s < hop_s:
            raise EvaluationError(f"need window_s >= hop_s > 0, got {window_s}, {hop_s}")
        ids = tuple(sorted(set(item_ids)))  # rows in id order: a stable sort breaks ties by id
        row_of = {item_id: n for n, item_id in enumerate(ids)}
        pairs = [(e.ts, row_of[e.item_id]) for e in events if e.item_id in row_of]
        ts = np.array([p[0] for p in pairs], dtype=np.float64)
        order = np.argsort(ts, kind="stable")
        rows = np.array([p[1] for p in pairs], dtype=np.int64)[order]
        return cls(ts[order], rows, ids, window_s, hop_s)

    @property
    def name(self) -> str:
        return f"recent-popularity-{_duration(self.window_s)}"

    def at(self, t: float) -> list[tuple[str, float]]:
        """The items of the events in ``[start, t)``, ``start`` the oldest live pane's (``t``
        rounded down to the hop, ``- window_s + hop_s``), most counted first, with their counts."""
        start = math.floor(t / self.hop_s) * self.hop_s - self.window_s + self.hop_s
        lo, hi = np.searchsorted(self.ts, [start, t], side="left")
        counts = np.bincount(self.rows[lo:hi], minlength=len(self.item_ids))
        hot = np.flatnonzero(counts)
        hot = hot[np.argsort(-counts[hot], kind="stable")]
        return [(self.item_ids[r], float(counts[r])) for r in hot]


@dataclass(frozen=True, slots=True)
class ColdStartScores:
    """One row of the table: a model's lists for users with ``n`` events, against ``target``."""

    model: str
    target: str
    n: int
    metrics: dict[str, MetricValue]
    vs_popularity: MetricValue
    """NDCG@k minus popularity's NDCG@k, user by user (same users, same target): mean ± se."""

    def as_json(self) -> dict[str, Any]:
        metrics = {**self.metrics, "NDCG - popularity": self.vs_popularity}
        values = {name: {"mean": v.mean, "se": v.se} for name, v in metrics.items()}
        return {"model": self.model, "target": self.target, "n": self.n, "metrics": values}


@dataclass(frozen=True, slots=True)
class ColdStartTable:
    """The cold-start rows of one run, with what they were made from."""

    spec: ColdStart
    k: int
    n_users: int
    users_left_out: int
    served: str
    rows: tuple[ColdStartScores, ...]
    seconds: float
    lists: dict[tuple[str, int], list[list[str]]] = field(default_factory=dict, repr=False)
    """Each row's lists by (model, n), users in the order given (not in the JSON)."""

    def score(self, model: str, target: str, n: int) -> ColdStartScores:
        for row in self.rows:
            if (row.model, row.target, row.n) == (model, target, n):
                return row
        raise KeyError((model, target, n))

    def models(self) -> list[str]:
        return list(dict.fromkeys(row.model for row in self.rows))

    def ahead_from(self, model: str, target: str) -> int | None:
        """The smallest ``n`` from which ``model``'s NDCG@k is above popularity's at every
        ``n`` of the table (paired mean difference > 0); ``None`` when not even at the last."""
        first = None
        for n in sorted(self.spec.ns, reverse=True):
            if self.score(model, target, n).vs_popularity.mean <= 0.0:
                break
            first = n
        return first

    def as_json(self) -> dict[str, Any]:
        return {
            "protocol": _PROTOCOL,
            "spec": asdict(self.spec),
            "k": self.k,
            "users": self.n_users,
            "users_left_out": self.users_left_out,
            "served": self.served,
            "seconds": self.seconds,
            "rows": [row.as_json() for row in self.rows],
            "ahead_of_popularity_from": {
                target: {m: self.ahead_from(m, target) for m in self.models()} for target in TARGETS
            },
        }

    def markdown(self) -> str:
        return "\n".join(_markdown(self)) + "\n"


@dataclass(frozen=True, slots=True)
class ColdStart:
    """How the cold-start table is made; :meth:`from_settings` takes the stream's values."""

    ns: tuple[int, ...] = COLD_START_NS
    personal_after: tuple[int, ...] = PERSONAL_AFTER_GRID
    blend_weight: float | None = None
    """The served blend's weight (``None``: the stream serves the short-term vector alone)."""
    mmr_lambda: float = 1.0
    window_s: float = 3600.0
    hop_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.ns or min(self.ns) < 1 or min(self.personal_after, default=0) < 0:
            raise EvaluationError(f"cold start: ns must be >= 1, personal_after >= 0: {self}")

    @classmethod
    def from_settings(cls, settings: Settings, *, sequence: bool) -> ColdStart:
        """The stream's blend weight (with a sequence model), MMR lambda and trending window."""
        return cls(blend_weight=settings.blend_weight if sequence else None,
                   mmr_lambda=settings.mmr_lambda, window_s=settings.trending_window_s,
                   hop_s=settings.trending_hop_s)  # fmt: skip

    def run(
        self,
        timelines: Sequence[Sequence[EventRecord]],
        train: TrainData,
        events_path: Path,
        models: Sequence[Recommender],
        k: int,
    ) -> ColdStartTable:
        """The table for the users of ``timelines`` (each user's events in time order, the
        last one the held-out test event), with the short-term (and sequence) models among
        ``models`` fitted on ``train``; ``events_path``: every event, for the trending counts."""
        start = time.perf_counter()
        users = [tuple(t) for t in timelines if len(t) >= max(self.ns) + 1]
        run = _Run.make(self, train, events_path, models, k)
        rows: list[ColdStartScores] = []
        kept: dict[tuple[str, int], list[list[str]]] = {}
        for n in self.ns:
            lists = run.lists(users, n)
            kept.update(((name, n), ranked) for name, ranked in lists.items())
            targets = {
                "next": [next(e.item_id for e in t[n:] if e.event_type != DISLIKE) for t in users],
                "test": [t[-1].item_id for t in users],
            }
            rows.extend(_scores(lists, targets, n, k))
        return ColdStartTable(self, k, len(users), len(timelines) - len(users), run.served.name,
                              tuple(rows), time.perf_counter() - start, kept)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Run:
    """The rankers of one table, fitted."""

    spec: ColdStart
    k: int
    popularity: PopularityModel
    short: ShortTermModel
    served: ScoredRecommender
    window: TrendingWindow
    popular: tuple[str, ...]
    """The catalog by training popularity (the recent-popularity row's fill)."""

    @classmethod
    def make(
        cls,
        spec: ColdStart,
        train: TrainData,
        events_path: Path,
        models: Sequence[Recommender],
        k: int,
    ) -> _Run:
        short = next((m for m in models if isinstance(m, ShortTermModel)), None)
        if short is None:
            raise EvaluationError("the cold-start table needs the short-term model among models")
        served: ScoredRecommender = short
        if spec.blend_weight is not None:
            served = _blend(models, short, spec.blend_weight)
        popularity = PopularityModel()
        for model in (popularity, short, served):
            model.fit(train)  # the evaluator's models keep their fitted state (same data)
        order = popularity.rank([UserContext("", ())], len(train.items), exclude_seen=False)[0]
        known = set(order)
        events = (e for e in read_events(events_path) if e.item_id in known)
        window = TrendingWindow.build(events, order, spec.window_s, spec.hop_s)
        return cls(spec, k, popularity, short, served, window, tuple(order))

    def lists(self, users: Sequence[tuple[EventRecord, ...]], n: int) -> dict[str, list[list[str]]]:
        """Every row's lists for the users' first ``n`` events, contract checked."""
        k = self.k
        contexts = [UserContext(t[0].user_id, t[:n]) for t in users]
        hot = [self.window.at(t[n].ts) for t in users]
        lists = {"popularity": rank_all(self.popularity, contexts, k, True)}
        lists[self.window.name] = [_filled(h, self.popular, c.seen(), k)
                                   for h, c in zip(hot, contexts, strict=True)]  # fmt: skip
        lists[self.short.name] = rank_all(self.short, contexts, k, True)
        if self.served is not self.short:
            lists[self.served.name] = rank_all(self.served, contexts, k, True)
        personal = self.served_personal(contexts)
        if self.spec.mmr_lambda < 1.0:
            lists[f"{self.served.name}+mmr-{self.spec.mmr_lambda:g}"] = ids_of(personal)
        states = self.short.states(contexts)
        for after in self.spec.personal_after:
            maker = ListMaker(self.served.catalog, personal_after=after)  # MMR already applied
            mixed = []
            for state, recs, trending in zip(states, personal, hot, strict=True):
                maker.trending = _source(trending)
                mixed.extend(maker.finish([state], [recs], k))
            lists[f"served-mix-pa{after}"] = ids_of(mixed)
        return {name: check_lists(name, contexts, r, k, True) for name, r in lists.items()}

    def served_personal(self, contexts: Sequence[UserContext]) -> list[list[Recommendation]]:
        """The served ranker's candidates made into lists by the stream's :class:`ListMaker`
        with no trending (MMR when ``mmr_lambda`` < 1), in batches."""
        maker = ListMaker(self.served.catalog, mmr_lambda=self.spec.mmr_lambda, personal_after=0)
        out: list[list[Recommendation]] = []
        for start in range(0, len(contexts), RANK_BATCH):
            batch = contexts[start : start + RANK_BATCH]
            ranked = self.served.recommend(batch, maker.candidates(self.k), exclude_seen=True)
            out.extend(maker.finish(self.short.states(batch), ranked, self.k))
        return out


def _blend(models: Sequence[Recommender], short: ShortTermModel, weight: float) -> BlendModel:
    """The served blend among ``models``, or made from their Transformer (sharing its states)."""
    name = f"blend-{weight:g}"
    found = next((m for m in models if isinstance(m, BlendModel) and m.name == name), None)
    if found is not None:
        return found
    long = next((m for m in models if isinstance(m, TransformerModel)), None)
    if long is None:
        raise EvaluationError(f"the served {name} needs a sequence model among the models")
    return BlendModel(long, short, weight)


def _source(trending: list[tuple[str, float]]) -> Callable[[int], list[tuple[str, float]]]:
    """A trending source (:attr:`ListMaker.trending`) that serves ``trending``."""
    return lambda n: trending[:n]


def _filled(
    hot: Sequence[tuple[str, float]], popular: Sequence[str], seen: frozenset[str], k: int
) -> list[str]:
    """The trending items, then the training-popular ones, unseen, ``k`` at most."""
    ordered = dict.fromkeys([*(item for item, _ in hot), *popular])
    return list(islice((item for item in ordered if item not in seen), k))


def _scores(
    lists: dict[str, list[list[str]]], targets: dict[str, list[str]], n: int, k: int
) -> list[ColdStartScores]:
    rows = []
    for target, wanted in targets.items():
        base = _ndcg(target_ranks(lists["popularity"], wanted), k)
        for name, ranked in lists.items():
            ranks = target_ranks(ranked, wanted)
            diff = mean_se(_ndcg(ranks, k) - base)
            rows.append(ColdStartScores(name, target, n, score_ranks(ranks, (k,)), diff))
    return rows


def _ndcg(ranks: Sequence[int | None], k: int) -> npt.NDArray[np.float64]:
    """Per-user NDCG@k of one relevant item (as :func:`score_ranks` averages it)."""
    return np.array([1.0 / math.log2(r + 1) if r is not None and r <= k else 0.0 for r in ranks])


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


_PROTOCOL = {
    "users": "the main split's evaluated users with >= max(ns) + 1 events; context: their "
    "first n events; the list as served at the (n+1)-th event's time; seen items masked",
    "targets": "next: the (n+1)-th event's item (training data of the main split); "
    "test: the user's held-out test item",
    "standard_error": "std(ddof=1) / sqrt(n_users); vs popularity: of the per-user difference",
}


def _markdown(table: ColdStartTable) -> list[str]:
    k, spec = table.k, table.spec
    head = " | ".join(f"n={n} NDCG@{k} | n={n} HR@{k}" for n in spec.ns)
    lines = [
        f"Cold start: {table.n_users} users ranked from only their first n events "
        f"({table.users_left_out} with fewer than {max(spec.ns) + 1} events left out), seen "
        f"items masked, the list as served at the (n+1)-th event; served = {table.served}"
        + (f" + MMR {spec.mmr_lambda:g}" if spec.mmr_lambda < 1.0 else "")
        + f", trending window {_duration(spec.window_s)} (hop {_duration(spec.hop_s)}); "
        f"mean ± standard error; {table.seconds:.1f} s.",
    ]
    for target in TARGETS:
        what = "the (n+1)-th event's item" if target == "next" else "the held-out test item"
        lines += ["", f"Target: {what} ({target}).", "", f"| model | {head} |",
                  "| --- | " + " | ".join("---: | ---:" for _ in spec.ns) + " |"]  # fmt: skip
        for model in table.models():
            cells = [
                f"{_cell(row.metrics[f'NDCG@{k}'])} | {_cell(row.metrics[f'HR@{k}'])}"
                for row in (table.score(model, target, n) for n in spec.ns)
            ]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
        for model in (m for m in table.models() if m.startswith("served-mix")):
            diffs = ", ".join(
                f"n={n} {d.mean:+.4f} ± {d.se or 0.0:.4f}"
                for n, d in ((n, table.score(model, target, n).vs_popularity) for n in spec.ns)
            )
            first = table.ahead_from(model, target)
            verdict = "not ahead from any n" if first is None else f"ahead from n = {first}"
            lines.append(f"- {model} − popularity, NDCG@{k} per user: {diffs}: {verdict}.")
    return lines


def _cell(value: MetricValue) -> str:
    return f"{value.mean:.4f} ± {value.se or 0.0:.4f}"
