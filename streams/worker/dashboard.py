"""``/dashboard``: one page an operator can leave open.

The server renders the figures of the moment (so the page reads without scripts); a small
script in the page then polls ``/metrics.json?history=<t>`` every 2 s, redraws the tables and
draws the last minutes (the worker's :class:`~streams.worker.history.History`) as inline SVG
charts: events/s, recommendations/s, dead letters/s by reason, latency p50/p99, consumer lag,
batch size, online HR@10 by model version; and the A/B test's variants side by side (their
HR, messages and latency). No build step, nothing fetched from elsewhere. Data
reaches the page as text only (``textContent``, SVG attributes), never as markup.

The "model decisions" table is the tail of the trainer's decisions log
(:func:`decisions_log`, beside the sequence model folder every worker watches): read again for
each refresh, and a log that is missing, unreadable or malformed gives a row that says so,
never an error.
"""

from __future__ import annotations

import json
import time
from html import escape
from pathlib import Path
from typing import Any

from streams.worker.inspector import STYLE, search_form

__all__ = [
    "CHARTS",
    "DECISION_ROWS",
    "ab_rows",
    "decision_rows",
    "decisions_log",
    "online_rows",
    "render_dashboard",
    "state_rows",
]

DECISION_ROWS = 5
"""How many of the trainer's latest decisions the dashboard shows."""
_TAIL_BYTES = 65_536  # the end of the log that is read: many times 5 decisions
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError,
              RecursionError)  # fmt: skip
"""What a malformed line can raise (JSON, a wrong type, a missing field, a time out of range)."""

#: (chart id, title, [(sample field, series label)]; ``*`` field: one series per key).
CHARTS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("events", "events/s", (("events_per_s", "in"), ("applied_per_s", "applied"))),
    ("recommendations", "recommendations/s", (("recommendations_per_s", "sent"),)),
    ("dead_letters", "dead letters/s by reason", (("*dead_letters_per_s", ""),)),
    ("latency", "event → recommendation sent (ms)",
     (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99"))),
    ("lag", "consumer lag (records)", (("lag", "all partitions"),)),
    ("batch_size", "batch size (events)", (("batch_size", "mean"),)),
    ("online_hr", "online HR@10 by model version (last 1 / 10 min)", (("*online_hr10", ""),)),
)  # fmt: skip

_CSS = """
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(22rem,1fr));gap:1rem}
figure{margin:0;border:1px solid #ddd;border-radius:4px;padding:.4rem}
figcaption{font-weight:600;font-size:.9rem}svg{width:100%;height:9rem;display:block}
svg text{font-size:10px;fill:#666}.legend{font-size:.8rem;color:#444}
.legend span{margin-right:.8rem}.legend i{display:inline-block;width:.7rem;height:.7rem;
margin-right:.25rem}.cols{display:flex;gap:3rem;flex-wrap:wrap}
"""

_SCRIPT = r"""
const CHARTS = JSON.parse(document.getElementById('charts-spec').textContent);
const COLORS = ['#1f6fb2', '#d9822b', '#2f9e44', '#c92a2a', '#7048e8', '#0c8599', '#868e96'];
const KEEP_S = 300, SVG = 'http://www.w3.org/2000/svg';
let samples = [], last = 0;
function el(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  return e;
}
function seriesOf(spec) {
  const out = [];
  for (const [field, label] of spec[2]) {
    if (field[0] !== '*') { out.push([label, s => s[field]]); continue; }
    const keys = new Set();
    for (const s of samples) for (const k in (s[field.slice(1)] || {})) keys.add(k);
    // a key missing from a sample is 0 there; a key given as null is no point (no figure)
    for (const k of [...keys].sort()) out.push([k, s => {
      const v = (s[field.slice(1)] || {})[k];
      return v === undefined ? 0 : v;
    }]);
  }
  return out;
}
function draw(spec) {
  const svg = document.getElementById('chart-' + spec[0]), W = 440, H = 130, L = 40, B = 16;
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  const now = samples.length ? samples[samples.length - 1].t : Date.now() / 1000;
  const series = seriesOf(spec);
  let max = 0;
  for (const [, get] of series) for (const s of samples) max = Math.max(max, get(s) || 0);
  const top = max > 0 ? max * 1.1 : 1;
  const x = t => L + (W - L - 4) * (1 - (now - t) / KEEP_S), y = v => (H - B) * (1 - v / top) + 2;
  svg.append(el('line', {x1: L, y1: H - B + 2, x2: W - 4, y2: H - B + 2, stroke: '#bbb'}));
  const label = (tx, ty, text, anchor) => {
    const t = el('text', {x: tx, y: ty, 'text-anchor': anchor});
    t.textContent = text;
    svg.append(t);
  };
  label(L - 4, 12, top >= 10 ? Math.round(top) : top.toPrecision(2), 'end');
  label(L - 4, H - B + 2, '0', 'end');
  label(L, H - 2, '−5 min', 'start');
  label(W - 4, H - 2, 'now', 'end');
  const legend = document.getElementById('legend-' + spec[0]);
  legend.replaceChildren();
  series.forEach(([name, get], i) => {
    const color = COLORS[i % COLORS.length];
    const pts = samples.filter(s => get(s) != null && now - s.t <= KEEP_S)
      .map(s => `${x(s.t).toFixed(1)},${y(get(s)).toFixed(1)}`);
    const values = samples.map(get).filter(v => v != null);
    const peak = values.length ? Math.max(...values) : 0;
    svg.append(el('polyline', {points: pts.join(' '), fill: 'none', stroke: color,
      'stroke-width': 1.6, 'data-series': name, 'data-points': pts.length, 'data-max': peak}));
    for (const p of pts) {  // a dot for each sample: one sample is seen too
      const [cx, cy] = p.split(',');
      svg.append(el('circle', {cx, cy, r: 1.8, fill: color}));
    }
    const item = document.createElement('span'), swatch = document.createElement('i');
    swatch.style.background = color;
    item.append(swatch, `${name || spec[1]}: ${values.length ? values[values.length - 1] : '–'}`);
    legend.append(item);
  });
  svg.setAttribute('data-max', max);
}
function fill(id, rows) {
  const body = document.getElementById(id);
  if (!body) return;
  body.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr'), th = document.createElement('th');
    const td = document.createElement('td');
    th.textContent = k; td.textContent = v == null ? '' : v; td.className = 'n';
    tr.append(th, td); return tr;
  }));
}
async function poll() {
  try {
    const r = await fetch('/metrics.json?history=' + last, {cache: 'no-store'});
    const m = await r.json();
    samples = samples.concat(m.history || []).filter(s => s.t > m.history_now - KEEP_S);
    if (samples.length) last = samples[samples.length - 1].t;
    for (const spec of CHARTS) draw(spec);
    for (const [id, rows] of Object.entries(m.dashboard_rows || {})) fill(id, rows);
    const ready = document.getElementById('status');
    ready.textContent = m.catalog_ready ? 'serving' : 'loading catalog';
    ready.className = m.catalog_ready ? 'ok' : 'warn';
    document.getElementById('updated').textContent = new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById('updated').textContent = 'no answer: ' + e;
  }
  setTimeout(poll, 2000);
}
poll();
"""


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th>{escape(str(k))}</th><td class=n>{escape(str(v))}</td></tr>" for k, v in pairs
    )


def state_rows(metrics: dict[str, Any]) -> dict[str, list[tuple[str, Any]]]:
    """The dashboard's tables (id -> rows) for one ``/metrics.json`` body: rendered here for
    the first view, sent in ``/metrics.json?history=`` for the page's script to redraw."""
    reasons = metrics.get("dead_letters_by_reason") or {}
    users = metrics.get("table_users")
    state = [
        ("model version", metrics.get("model_version")),
        ("sequence model", metrics.get("sequence_model_version") or "none"),
        ("ranking", metrics.get("ranking")),
        ("sequence model reloads / rejects",
         f"{metrics.get('model_reloads', 0)} / {metrics.get('model_rejects', 0)}"),
        ("last rejected model", metrics.get("model_last_reject") or "none"),
        ("execution provider", metrics.get("provider")),
        ("items in the index", metrics.get("items")),
        ("users in the table (this worker)", "counting" if users is None else users),
        ("partitions owned", metrics.get("partitions_owned")),
        ("consumer lag (records)", sum((metrics.get("consumer_lag") or {}).values())),
        ("large-catalog candidates", metrics.get("candidates")),
        ("broker", metrics.get("broker")),
        ("uptime (s)", metrics.get("uptime_s")),
    ]  # fmt: skip
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
    # in the order an event goes through them; "n" (a count) is for /metrics.json readers
    lat = [(f"{label} {q} (ms)", v) for key, label in (
        ("wait_ms", "waiting for its batch,"),
        ("batch_ms", "one batch's work,"),
        ("latency_ms", "until its recommendation was sent (oldest event of each message),"),
        ("acked_ms", "until the broker acked its recommendation,"))
        for q, v in (metrics.get(key) or {}).items() if q != "n"] or [("no events yet", "")]
    dlq = sorted(reasons.items(), key=lambda kv: -kv[1]) or [("none", 0)]
    return {"state": state, "flow": flow, "latency": lat, "dlq": dlq,
            "online": online_rows(metrics.get("online") or {}),
            "ab": ab_rows(metrics.get("ab") or {}, metrics.get("online") or {}),
            "decisions": decision_rows(metrics.get("sequence_model_dir"))}  # fmt: skip


def online_rows(online: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows of the online-quality table: HR / MRR of each model version since the start and
    over the sliding windows, and the events that could not be scored."""
    rows: list[tuple[str, Any]] = []
    for version, figures in (online.get("models") or {}).items():
        for key, label in (("last_1m", "last 1 min"), ("last_10m", "last 10 min"), ("", "all")):
            f = figures.get(key) if key else figures
            if f and f.get("scored"):
                rows.append((f"{version}, {label}",
                             f"HR {f['hr']} · MRR {f['mrr']} · {f['scored']} events"))  # fmt: skip
    rows.append(("events unscored (user's last list unknown)", online.get("unscored", 0)))
    return rows


def ab_rows(ab: dict[str, Any], online: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows of the A/B table (:mod:`streams.worker.ab`): the split, then per variant what it
    serves, its HR / MRR (last 10 min and all), its messages and their latency."""
    if not ab.get("enabled"):
        return [("A/B", "off (set INTEREST_STREAM_AB_MODEL_DIR to serve a second model)")]
    rows: list[tuple[str, Any]] = [("A/B split", f"{ab.get('share_b')} of users in B, "
                                                 f"salt {ab.get('salt')!r}")]  # fmt: skip
    figures = online.get("variants") or {}
    for variant, served in (ab.get("variants") or {}).items():
        rows.append((f"{variant}: ranking", served.get("ranking")))
        f = figures.get(variant) or {}
        for key, label in (("last_10m", "last 10 min"), ("", "all")):
            g = f.get(key) if key else f
            if g and g.get("scored"):
                rows.append((f"{variant}: online, {label}",
                             f"HR {g['hr']} · MRR {g['mrr']} · {g['scored']} events"))  # fmt: skip
        latency = " · ".join(f"{q} {ms} ms" for q, ms in (f.get("latency_ms") or {}).items())
        rows.append((f"{variant}: messages sent", f"{f.get('recommendations', 0)}"
                     + (f" · latency {latency}" if latency else "")))  # fmt: skip
    return rows


def decisions_log(sequence_dir: Path) -> Path:
    """The trainer's decisions log for the model folder ``<models>/<name>`` the workers watch:
    ``<models>/<name>.decisions.jsonl``, in the folder every worker of that model shares."""
    folder = Path(sequence_dir)
    return folder.parent / f"{folder.name}.decisions.jsonl"


def decision_rows(sequence_dir: Any, n: int = DECISION_ROWS) -> list[tuple[str, str]]:
    """The last ``n`` decisions logged for ``sequence_dir``, newest first, as (when, what) rows.

    Never raises: no folder, no log, an unreadable log or malformed lines give rows saying so."""
    if not isinstance(sequence_dir, str | Path) or not str(sequence_dir):
        return [("no sequence model folder", "")]
    path = decisions_log(Path(sequence_dir))
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - _TAIL_BYTES))
            tail = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return [("none yet", f"no {path.name} (interest-stream trainer writes it)")]
    if size > _TAIL_BYTES and tail:
        tail = tail[1:]  # the first line read is cut
    rows: list[tuple[str, str]] = []
    bad = 0
    for line in reversed(tail):
        if len(rows) == n:
            break
        if not line.strip():
            continue
        try:
            rows.append(_decision_row(json.loads(line)))
        except _MALFORMED:
            bad += 1
    if bad:
        rows.append(("malformed lines skipped", str(bad)))
    return rows or [("none yet", f"{path.name} is empty")]


def _decision_row(record: dict[str, Any]) -> tuple[str, str]:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(record["time"])))
    action = str(record["action"])
    if action == "rollback":
        what = f"rollback: {record.get('from')} -> {record.get('to')}"
    else:
        metric = str(record.get("metric", "NDCG@10"))
        serving = record.get("serving") or "short-term only"
        what = (f"{action} {record.get('candidate')}: {metric} "
                f"{_figure(record.get('candidate_score'))} vs {serving} "
                f"{_figure(record.get('serving_score'))}")  # fmt: skip
    reason = record.get("reason")
    return stamp, f"{what} ({reason})" if reason else what


def _figure(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _chart(chart_id: str, title: str) -> str:
    return (
        f"<figure><figcaption>{escape(title)}</figcaption>"
        f'<svg id="chart-{chart_id}" class=chart role=img aria-label="{escape(title)}"></svg>'
        f'<div class=legend id="legend-{chart_id}"></div></figure>'
    )


def render_dashboard(metrics: dict[str, Any]) -> str:
    """The page for one worker's ``/metrics.json`` body."""
    ready = metrics.get("catalog_ready")
    status = (
        "<span id=status class=ok>serving</span>" if ready
        else "<span id=status class=warn>loading catalog</span>"
    )  # fmt: skip
    tables = {k: f"<table><tbody id={k}>{_rows(v)}</tbody></table>"
              for k, v in state_rows(metrics).items()}  # fmt: skip
    spec = _charts_json()
    charts = "".join(_chart(cid, title) for cid, title, _ in CHARTS)
    return f"""<!doctype html><html><head><meta charset=utf-8>
<title>Interest Stream worker</title><style>{STYLE}{_CSS}</style></head><body>
<h1>Interest Stream worker: {status}</h1>
<p class=muted>the last 5 minutes, sampled every 2 s · updated <span id=updated>-</span></p>
<div class=charts>{charts}</div>
<div class=cols><div><h2>Now</h2>{tables["state"]}</div>
<div><h2>Flow</h2>{tables["flow"]}</div></div>
<h2>Event → recommendation latency (last 10,000)</h2>{tables["latency"]}
<h2>Dead letters by reason</h2>{tables["dlq"]}
<h2>Online quality: each event's item in its user's last list (HR@10 · MRR@10)</h2>
{tables["online"]}
<h2>A/B test: two models served at once, users split by a hash of their id</h2>{tables["ab"]}
<h2>Model decisions (the trainer's last {DECISION_ROWS}, newest first)</h2>{tables["decisions"]}
<h2>User inspector</h2>{search_form()}
<p><a href=/metrics>/metrics</a> (Prometheus) · <a href=/metrics.json>/metrics.json</a> ·
<a href=/healthz>/healthz</a></p>
<script type=application/json id=charts-spec>{spec}</script>
<script>{_SCRIPT}</script>
</body></html>"""


def _charts_json() -> str:
    """The charts' spec as JSON that cannot end its ``<script>`` element."""
    spec = [[cid, title, [list(s) for s in series]] for cid, title, series in CHARTS]
    return json.dumps(spec).replace("<", "\\u003c").replace(">", "\\u003e")
