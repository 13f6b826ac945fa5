"""``/inspect?user=<id>``: one user's state as a page an operator reads.

Rendered from the body of ``/users/{id}`` (:func:`streams.worker.views.user_summary`, from
whichever worker holds the user): the interests (nearest item titles), the recent events with
their types and times, the current recommendations with scores and reasons, the counters. A
user no worker holds gets what a new user gets: the trending items. Everything that comes from
users or items is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote

__all__ = ["STYLE", "render_inspector", "search_form"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:64rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse}td,th{padding:.25rem .8rem;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#176f2c}.warn{color:#a15c00}.muted{color:#777}form{margin:1rem 0}
"""


def search_form(user_id: str = "") -> str:
    return (
        '<form action=/inspect method=get><label>User '
        f'<input name=user value="{escape(user_id)}" placeholder="user id" maxlength=128>'
        "</label> <button>inspect</button></form>"
    )


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    return f"{stamp} UTC"


def _table(head: Iterable[str], rows: Iterable[Iterable[Any]], numeric: set[int]) -> str:
    header = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(
            f"<td class=n>{escape(str(c))}</td>" if i in numeric else f"<td>{escape(str(c))}</td>"
            for i, c in enumerate(row)
        ) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><tr>{header}</tr>{body}</table>"


def _title(entry: Mapping[str, Any]) -> str:
    return str(entry.get("title") or f"(item {entry.get('item_id')})")


def _recommendations(recs: Iterable[Mapping[str, Any]]) -> str:
    return _table(
        ("#", "item", "score", "reason"),
        ((i, _title(r), f"{r.get('score', 0):.4f}", r.get("reason", ""))
         for i, r in enumerate(recs, 1)),
        {0, 2},
    )  # fmt: skip


def _unknown(user_id: str, summary: Mapping[str, Any]) -> str:
    recs = summary.get("recommendations") or []
    trending = (
        "<h2>Trending now (what a new user gets)</h2>" + _recommendations(recs)
        if recs else "<p class=muted>Nothing trends yet.</p>"
    )  # fmt: skip
    return (
        f"<p class=warn id=unknown>Unknown user: no worker holds a state for {escape(user_id)} "
        "(no events from them yet).</p>" + trending
    )


def _found(summary: Mapping[str, Any]) -> str:
    interests = summary.get("interest_summary") or []
    recent = summary.get("recent_events") or []
    recs = summary.get("recommendations") or []
    counters = [
        ("events", summary.get("events")),
        *((f"{kind} events", n) for kind, n in (summary.get("events_by_type") or {}).items()),
        ("duplicates dropped", summary.get("duplicates_dropped")),
        ("updated", _when(summary.get("updated_ts"))),
        ("sequence model of the long-term vector", summary.get("long_term_version") or "none"),
        ("ranked by", summary.get("model_version")),
        ("served by", summary.get("served_by") or "this worker"),
    ]
    parts = [
        "<h2>Interests (nearest items)</h2>",
        "<ol class=interests>"
        + "".join(f"<li>{escape(str(t))}</li>" for t in interests)
        + "</ol>" if interests else "<p class=muted>none yet</p>",
        "<h2>Recent events (newest first)</h2>",
        _table(
            ("time", "type", "item"),
            ((_when(e.get("ts")), e.get("type"), _title(e)) for e in recent),
            set(),
        ),
        "<h2>Recommendations now</h2>",
        _recommendations(recs),
        "<h2>Counters</h2>",
        _table(("counter", "value"), counters, {1}),
    ]
    return "".join(parts)


def render_inspector(
    user_id: str, summary: Mapping[str, Any] | None, problem: str | None = None
) -> str:
    """The page for ``user_id`` (``summary``: its ``/users/{id}`` body; ``None``: no search;
    ``problem``: why the search could not be made)."""
    if problem is not None:
        body = f"<p class=warn id=problem>{escape(problem)}</p>"
    elif summary is None:
        body = "<p>Type a user id to see their interests, events and recommendations.</p>"
    elif not summary.get("found"):
        body = _unknown(user_id, summary)
    elif summary.get("error"):
        body = f"<p class=warn>{escape(str(summary['error']))}</p>"
    else:
        body = _found(summary)
    title = f"User {escape(user_id)}" if user_id else "User inspector"
    raw = (
        f' · <a href="/users/{escape(quote(user_id, safe=""))}">as JSON</a>'
        if summary is not None and summary.get("found") else ""
    )  # fmt: skip
    return f"""<!doctype html><html><head><meta charset=utf-8>
<title>{title} · Interest Stream</title><style>{STYLE}</style></head><body>
<p><a href=/dashboard>← dashboard</a>{raw}</p>
<h1>{title}</h1>{search_form(user_id)}{body}
</body></html>"""
