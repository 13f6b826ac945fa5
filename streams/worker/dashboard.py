"""``/dashboard``: one HTML page an operator can leave open (refreshes itself every 2 s)."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["render_dashboard"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:60rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse}td,th{padding:.25rem .8rem;border-bottom:1px solid #ddd;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#176f2c}.warn{color:#a15c00}form{margin-top:1rem}
"""


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th>{escape(str(k))}</th><td class=n>{escape(str(v))}</td></tr>" for k, v in pairs
    )


def render_dashboard(metrics: dict[str, Any]) -> str:
    """The page for one worker's ``/metrics`` snapshot."""
    ready = metrics.get("catalog_ready")
    status = "<span class=ok>serving</span>" if ready else "<span class=warn>loading catalog</span>"
    reasons = metrics.get("dead_letters_by_reason") or {}
    runtime = [
        ("model version", metrics.get("model_version")),
        ("ranking", metrics.get("ranking")),
        (
            "sequence model reloads / rejects",
            f"{metrics.get('model_reloads', 0)} / {metrics.get('model_rejects', 0)}",
        ),
        ("last rejected model", metrics.get("model_last_reject") or "none"),
        ("execution provider", metrics.get("provider")),
        ("items in the index", metrics.get("items")),
        ("large-catalog candidates", metrics.get("candidates")),
        ("uptime (s)", metrics.get("uptime_s")),
    ]
    flow = [
        ("events in", metrics.get("events_in")),
        ("events applied", metrics.get("events_applied")),
        ("duplicates dropped", metrics.get("duplicates")),
        ("redeliveries skipped", metrics.get("redelivered")),
        ("dead letters", metrics.get("dead_letters")),
        ("recommendation messages", metrics.get("recommendations_out")),
        ("batches", metrics.get("batches")),
        ("mean batch size", metrics.get("mean_batch_size")),
    ]
    # in the order an event goes through them; "n" (a count) is for /metrics readers
    lat = [(f"{label} {q} (ms)", v) for key, label in (
        ("wait_ms", "waiting for its batch,"),
        ("batch_ms", "one batch's work,"),
        ("latency_ms", "until its recommendation was sent (oldest event of each message),"),
        ("acked_ms", "until the broker acked its recommendation,"))
        for q, v in (metrics.get(key) or {}).items() if q != "n"] or [("no events yet", "")]
    dlq = sorted(reasons.items(), key=lambda kv: -kv[1]) or [("none", 0)]
    return f"""<!doctype html><html><head><meta charset=utf-8>
<meta http-equiv=refresh content=2><title>Interest Stream worker</title>
<style>{_STYLE}</style></head><body>
<h1>Interest Stream worker: {status}</h1>
<table>{_rows(runtime)}</table>
<h2>Flow</h2><table>{_rows(flow)}</table>
<h2>Event → recommendation latency (last 10,000)</h2><table>{_rows(lat)}</table>
<h2>Dead letters by reason</h2><table>{_rows(dlq)}</table>
<form onsubmit="location.href='/users/'+encodeURIComponent(this.u.value);return false">
<label>User <input name=u placeholder="user id"></label> <button>show state</button></form>
<p><a href=/metrics>/metrics</a> · <a href=/healthz>/healthz</a></p>
</body></html>"""
