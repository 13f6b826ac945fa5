"""Scores and outputs of the offline evaluation: metrics with standard errors, JSON, Markdown, PNG.

Used by :mod:`streams.offline.evaluate`; see there for the protocol.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "CHART_MISSING",
    "STAGES",
    "EvaluationReport",
    "MetricValue",
    "ModelScores",
    "Section",
    "mean_se",
    "metric_names",
    "score_ranks",
    "target_ranks",
    "write_outputs",
]

log = logging.getLogger(__name__)

STAGES = ("validation", "test")
CHART_MISSING = "matplotlib is not installed: PNG chart skipped (pip install matplotlib)"


@dataclass(frozen=True, slots=True)
class MetricValue:
    """Mean over users and its standard error, ``std(ddof=1) / sqrt(n)``; ``se`` is ``None``
    for a value of the whole row, not a mean over users (catalog coverage)."""

    mean: float
    se: float | None


@dataclass(frozen=True, slots=True)
class ModelScores:
    model: str
    stage: str
    masked: bool
    n_users: int
    metrics: dict[str, MetricValue]


class Section(Protocol):
    """A table run beside the main one (e.g. the cold-start table): a key of the JSON report,
    and Markdown printed after the main table."""

    def as_json(self) -> dict[str, Any]: ...

    def markdown(self) -> str: ...


def metric_names(k_values: Sequence[int]) -> list[str]:
    ks = sorted(set(k_values))
    return [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks] + [f"MRR@{ks[0]}"]


def target_ranks(ranked: Sequence[Sequence[str]], targets: Sequence[str]) -> list[int | None]:
    """1-based position of each target in its list, ``None`` when it is not there."""
    return [
        items.index(target) + 1 if target in items else None
        for items, target in zip(ranked, targets, strict=True)
    ]


def score_ranks(ranks: Sequence[int | None], k_values: Sequence[int]) -> dict[str, MetricValue]:
    """HR@k, NDCG@k (one relevant item: ``1 / log2(rank + 1)``) and MRR at the smallest k."""
    r = np.array([math.inf if x is None else float(x) for x in ranks], dtype=np.float64)
    ks = sorted(set(k_values))
    per_user: dict[str, np.ndarray] = {}
    for k in ks:
        hit = r <= k
        per_user[f"HR@{k}"] = hit.astype(np.float64)
        per_user[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    per_user[f"MRR@{ks[0]}"] = np.where(r <= ks[0], 1.0 / r, 0.0)
    return {name: mean_se(per_user[name]) for name in metric_names(ks)}


def mean_se(values: np.ndarray) -> MetricValue:
    """Mean of per-user values with its standard error (0 for fewer than two users)."""
    n = len(values)
    se = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return MetricValue(mean=float(np.mean(values)) if n else 0.0, se=se)


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    dataset: dict[str, Any]
    k_values: tuple[int, ...]
    scores: tuple[ModelScores, ...]
    seconds: dict[str, Any]
    json_path: Path
    markdown_path: Path
    chart_path: Path | None
    chart_note: str
    selections: dict[str, Any] = field(default_factory=dict)
    """Choices made on the validation split (e.g. ``mmr``: the MMR lambda), with a ``summary``."""
    sections: Mapping[str, Section] = field(default_factory=dict)
    """Tables run beside the main one, by JSON key (e.g. ``cold_start``)."""

    def score(self, model: str, stage: str, *, masked: bool) -> ModelScores:
        for s in self.scores:
            if (s.model, s.stage, s.masked) == (model, stage, masked):
                return s
        raise KeyError((model, stage, masked))

    def markdown(self) -> str:
        return _markdown(self)


def write_outputs(
    stats: dict[str, Any],
    k_values: tuple[int, ...],
    scores: list[ModelScores],
    seconds: dict[str, Any],
    out_dir: Path,
    selections: dict[str, Any] | None = None,
    sections: Mapping[str, Section] | None = None,
) -> EvaluationReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_path = out_dir / "evaluation.png"
    chart_note = _write_chart(scores, k_values[0], chart_path)
    report = EvaluationReport(
        dataset=stats,
        k_values=k_values,
        scores=tuple(scores),
        seconds=seconds,
        json_path=out_dir / "evaluation.json",
        markdown_path=out_dir / "evaluation.md",
        chart_path=None if chart_note else chart_path,
        chart_note=chart_note,
        selections=dict(selections or {}),
        sections=dict(sections or {}),
    )
    report.json_path.write_text(json.dumps(_as_json(report), indent=2) + "\n", encoding="utf-8")
    report.markdown_path.write_text(report.markdown(), encoding="utf-8")
    return report


def _as_json(report: EvaluationReport) -> dict[str, Any]:
    return {
        "protocol": {
            "split": "leave-one-out by time: last event test, previous validation, rest history "
                     "(dislikes never targets)",
            "ranking": "full ranking over all catalog items",
            "masked": "items in the user's context (events before the target) excluded",
            "k_values": list(report.k_values),
            "standard_error": "std(ddof=1) / sqrt(n_users)",
        },
        "dataset": report.dataset,
        "seconds": report.seconds,
        "results": [
            {
                "model": s.model,
                "stage": s.stage,
                "masked": s.masked,
                "n_users": s.n_users,
                "metrics": {k: {"mean": v.mean, "se": v.se} for k, v in s.metrics.items()},
            }
            for s in report.scores
        ],
        "selections": report.selections,
        **{name: section.as_json() for name, section in report.sections.items()},
        "chart": str(report.chart_path) if report.chart_path else report.chart_note,
    }


def _markdown(report: EvaluationReport) -> str:
    names = metric_names(report.k_values)
    names += list(dict.fromkeys(n for s in report.scores for n in s.metrics if n not in names))
    stats = report.dataset
    lines = [
        f"Leave-one-out by time, full ranking over {stats['items']} items; "
        f"{stats['users_evaluated']} users evaluated ({stats['users_skipped_short']} with "
        f"< 3 events skipped); mean ± standard error; {report.seconds['total']:.1f} s.",
        "",
        "| split | seen items | model | " + " | ".join(names) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in names) + " |",
    ]
    for stage in STAGES:
        for masked in (True, False):
            for s in (s for s in report.scores if (s.stage, s.masked) == (stage, masked)):
                cells = [_cell(s.metrics.get(n)) for n in names]
                mask = "masked" if masked else "unmasked"
                lines.append(f"| {stage} | {mask} | {s.model} | " + " | ".join(cells) + " |")
    lines.extend(["", *(f"{v['summary']}" for v in report.selections.values())])
    lines.extend(f"\n{section.markdown()}" for section in report.sections.values())
    return "\n".join(lines).rstrip("\n") + "\n"


def _cell(value: MetricValue | None) -> str:
    if value is None:
        return "–"
    return f"{value.mean:.4f}" if value.se is None else f"{value.mean:.4f} ± {value.se:.4f}"


def _write_chart(scores: Sequence[ModelScores], k: int, path: Path) -> str:
    """Bar chart of test HR@k and NDCG@k; returns '' when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning(CHART_MISSING)
        return CHART_MISSING
    rows = [s for s in scores if s.stage == "test"]
    labels = [f"{s.model}\n{'masked' if s.masked else 'unmasked'}" for s in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(rows)), 4.0))
    for offset, name in ((-0.2, f"HR@{k}"), (0.2, f"NDCG@{k}")):
        means = [s.metrics[name].mean for s in rows]
        errors = [s.metrics[name].se or 0.0 for s in rows]
        ax.bar(x + offset, means, width=0.4, yerr=errors, capsize=3, label=name)
    ax.set_xticks(x, labels)
    ax.set_title("test split, leave-one-out by time (error bars: standard error)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return ""
