"""`churn-worker policy simulate`: what a policy would do, before it goes live.

    churn-worker policy simulate --events HISTORY --model DIR --policy NEW [--against CURRENT]
        [--from DATE --to DATE] [--horizon 90d] [--json OUT] [--report OUT.html]

The history is replayed in event time through the worker's own pipeline
(`worker.core.pipeline.process`, as the worker runs it on the event clock): the same
deadlines, episodes, cooldowns, cap and holdout; each customer's silence is checked up to
the end of the history. Triggers dated within --from..--to are counted (history before
--from warms the states up). Per policy:

- `triggers`: sent, by type; `held_out`: decided for the control group, by type;
  `triggers_by_week` (type -> ISO week Monday -> count); `triggers_by_segment`;
  `suppressed` (type -> reason -> count, cooldown and cap among them);
- `customers_reached`: customers with at least one sent trigger;
- `precision`: of the reached customers whose horizon after their first trigger lies
  within the history, the share that churned then (no login or purchase within it);
- `recall`: of the churners (customers whose last activity L is followed by the horizon H
  with none, and L within --from..--to), the share reached while still active: by a
  trigger in the H before L, up to L (a follow-up or a service recovery, typically; a
  lapse's win-back comes after L, and every policy sends one, so it would tell policies
  apart by nothing); `median_warning_days`: from the first such trigger to L;
  `recall_with_win_back`: the share reached by any trigger from L - H to L + H;
- `churners`, `precision_customers` (how many each rate is over), `trigger_ids` (count).
"""
from __future__ import annotations

import html
import json
import multiprocessing as mp
import os
import statistics
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from worker.core.events import Event
from worker.core.pipeline import Context, Item, Model, process
from worker.core.policy import Policy
from worker.core.state import CustomerState

CHUNK = 50_000  # events per pipeline batch: bounded memory, the same decisions (batching changes none)
QUALIFYING = ("login", "purchase")
DAY = 86400.0


def replay(events: Sequence[Event], model: Model, policy: Policy, end: float) -> dict[str, Any]:
    """Every decision the pipeline makes over the history (time-ordered events), silence
    checked up to `end`: {"triggers": [...], "suppressed": Counter, "held_out": Counter}."""
    ctx = Context(model, policy, lateness_s=float("inf"), emitted_at=end, event_clock=True)
    states: dict[str, CustomerState] = {}
    out: dict[str, Any] = {"triggers": [], "suppressed": Counter(), "held_out": Counter()}

    def run(items: list[Item]) -> None:
        result = process(items, states, ctx)
        for cid, _ in result.erased:
            states.pop(cid, None)
        states.update(result.states)
        out["triggers"] += result.triggers
        out["suppressed"].update(result.suppressed)
        out["held_out"].update(result.holdouts)

    for start in range(0, len(events), CHUNK):
        run([Item(e.customer_id, e) for e in events[start:start + CHUNK]])
    customers = list(states)
    for start in range(0, len(customers), CHUNK):  # silence up to the end, as the worker's timer would
        run([Item(cid, None, end) for cid in customers[start:start + CHUNK]])
    return out


_JOB: tuple[Sequence[Event], Model, Policy, float, int] | None = None  # for forked shards


def _shard(index: int) -> dict[str, Any]:
    assert _JOB is not None
    events, model, policy, end, shards = _JOB
    mine = [e for e in events if zlib.crc32(e.customer_id.encode()) % shards == index]
    return replay(mine, model, policy, end)


def replay_sharded(events: Sequence[Event], model: Model, policy: Policy, end: float,
                   shards: int | None = None, min_events: int = CHUNK) -> dict[str, Any]:
    """`replay` with the customers split over processes (customers never affect each other:
    the same decisions), one per core."""
    global _JOB
    shards = shards or os.cpu_count() or 1
    if shards == 1 or len(events) < min_events or "fork" not in mp.get_all_start_methods():
        return replay(events, model, policy, end)
    _JOB = (events, model, policy, end, shards)
    try:
        with mp.get_context("fork").Pool(shards) as pool:
            parts = pool.map(_shard, range(shards))
    finally:
        _JOB = None
    out: dict[str, Any] = {"triggers": [], "suppressed": Counter(), "held_out": Counter()}
    for part in parts:
        out["triggers"] += part["triggers"]
        out["suppressed"].update(part["suppressed"])
        out["held_out"].update(part["held_out"])
    return out


def _week(t: float) -> str:
    day = datetime.fromtimestamp(t, UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def outcomes(decided: dict[str, Any], activity: dict[str, list[float]], window: tuple[float, float],
             history_end: float, horizon_s: float) -> dict[str, Any]:
    """The figures of one policy (see the module's docstring)."""
    lo, hi = window
    sent = [t for t in decided["triggers"] if not t.get("held_out") and lo <= _time(t["event_time"]) <= hi]
    by_type: Counter[str] = Counter()
    by_week: dict[str, Counter[str]] = defaultdict(Counter)
    by_segment: dict[str, Counter[str]] = defaultdict(Counter)
    first: dict[str, float] = {}
    times: dict[str, list[float]] = defaultdict(list)
    for t in sent:
        at = _time(t["event_time"])
        by_type[t["type"]] += 1
        by_week[t["type"]][_week(at)] += 1
        by_segment[t["type"]][t["segment"]] += 1
        first[t["customer_id"]] = min(at, first.get(t["customer_id"], at))
        times[t["customer_id"]].append(at)
    judged = [cid for cid, at in first.items() if at + horizon_s <= history_end]
    churned = [cid for cid in judged
               if not any(first[cid] < a <= first[cid] + horizon_s for a in activity.get(cid, ()))]
    churners, warnings, reached_late = 0, [], 0
    for cid, acts in activity.items():
        last = max(acts)
        if last + horizon_s > history_end or not lo <= last <= hi:
            continue
        churners += 1
        early = [at for at in times.get(cid, ()) if last - horizon_s <= at <= last]
        if early:
            warnings.append((last - min(early)) / DAY)
        reached_late += any(last - horizon_s <= at <= last + horizon_s for at in times.get(cid, ()))
    suppressed: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, reason), n in decided["suppressed"].items():
        suppressed[kind][reason] = n
    return {
        "triggers": dict(by_type), "held_out": dict(decided["held_out"]), "customers_reached": len(first),
        "precision": len(churned) / len(judged) if judged else None, "precision_customers": len(judged),
        "recall": len(warnings) / churners if churners else None, "churners": churners,
        "recall_with_win_back": reached_late / churners if churners else None,
        "median_warning_days": statistics.median(warnings) if warnings else None,
        "triggers_by_week": {k: dict(sorted(v.items())) for k, v in by_week.items()},
        "triggers_by_segment": {k: dict(v) for k, v in by_segment.items()},
        "suppressed": dict(suppressed), "trigger_ids": len({t["trigger_id"] for t in sent}),
    }


def simulate(events: Sequence[Event], model: Model, policies: Sequence[Policy], horizon_s: float,
             window: tuple[float | None, float | None] = (None, None)) -> dict[str, Any]:
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    if not ordered:
        raise ValueError("no events to replay")
    history_end = ordered[-1].occurred_at
    lo = window[0] if window[0] is not None else ordered[0].occurred_at
    hi = window[1] if window[1] is not None else history_end
    activity: dict[str, list[float]] = defaultdict(list)
    for e in ordered:
        if e.type in QUALIFYING:
            activity[e.customer_id].append(e.occurred_at)
    versions = [p.version for p in policies]
    if len(set(versions)) != len(versions):
        raise ValueError(f"the policies must have different versions to be told apart, got {versions}")
    report: dict[str, Any] = {"events": len(ordered), "customers": len(activity), "horizon_days": horizon_s / DAY,
                              "from": _iso(lo), "to": _iso(hi), "history_end": _iso(history_end), "policies": {}}
    for policy in policies:
        started = time.perf_counter()
        decided = replay_sharded(ordered, model, policy, history_end)
        figures = outcomes(decided, activity, (lo, hi), history_end, horizon_s)
        figures["replay_seconds"] = round(time.perf_counter() - started, 2)
        report["policies"][policy.version] = figures
    return report


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(report: dict[str, Any]) -> str:
    lines = [f"{report['events']} events, {report['customers']} customers, triggers counted "
             f"{report['from'][:10]}..{report['to'][:10]}, horizon {report['horizon_days']:g} days"]
    for version, p in report["policies"].items():
        def pct(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1%}"
        warn = "n/a" if p["median_warning_days"] is None else f"{p['median_warning_days']:.0f} d"
        lines.append(f"policy {version}: triggers {p['triggers']}, {p['customers_reached']} customers reached, "
                     f"precision {pct(p['precision'])}, recall {pct(p['recall'])} of {p['churners']} churners, "
                     f"median warning {warn}, suppressed {p['suppressed']} ({p['replay_seconds']} s)")
    return "\n".join(lines)


COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7")


def render_html(report: dict[str, Any]) -> str:
    """Weekly trigger volumes of each policy, and their precision and recall, as inline SVG."""
    policies = report["policies"]
    weeks = sorted({w for p in policies.values() for per in p["triggers_by_week"].values() for w in per})
    totals = {v: [sum(per.get(w, 0) for per in p["triggers_by_week"].values()) for w in weeks]
              for v, p in policies.items()}
    top = max([1, *(n for series in totals.values() for n in series)])
    w, h, pad = 720, 300, 50
    lines = []
    for i, (version, series) in enumerate(totals.items()):
        step = (w - 2 * pad) / max(len(weeks) - 1, 1)
        pts = " ".join(f"{pad + k * step:.1f},{h - pad - n / top * (h - 2 * pad):.1f}" for k, n in enumerate(series))
        colour = COLOURS[i % len(COLOURS)]
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>'
                     f'<text x="{w - pad - 150}" y="{pad + 14 * i}" fill="{colour}">{html.escape(version)}</text>')
    axes = (f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#333"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#333"/>'
            f'<text x="{pad - 6}" y="{pad + 4}" text-anchor="end" font-size="10">{top}</text>'
            f'<text x="{pad}" y="{h - pad + 14}" font-size="10">{weeks[0] if weeks else ""}</text>'
            f'<text x="{w - pad}" y="{h - pad + 14}" text-anchor="end" font-size="10">'
            f'{weeks[-1] if weeks else ""}</text>')
    volume = f'<svg width="{w}" height="{h}" font-family="sans-serif" font-size="12">' \
             f'<text x="{w / 2}" y="18" text-anchor="middle" font-weight="bold">Triggers sent per week</text>' \
             f'{axes}{"".join(lines)}</svg>'
    quality = _quality_svg(policies, w, h, pad)
    rows = "".join(
        f"<tr><td>{html.escape(v)}</td><td>{sum(p['triggers'].values())}</td><td>{p['customers_reached']}</td>"
        f"<td>{_pct(p['precision'])}</td><td>{_pct(p['recall'])}</td><td>{p['median_warning_days'] or 'n/a'}</td>"
        f"<td>{html.escape(json.dumps(p['suppressed']))}</td></tr>" for v, p in policies.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Policy simulation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}th{{background:#f4f4f4}}</style></head><body>
<h1>Policy simulation</h1>
<p>{report['events']} events of {report['customers']} customers replayed through the worker's pipeline; triggers
counted {report['from'][:10]} to {report['to'][:10]}. Churned: no login or purchase within
{report['horizon_days']:g} days.</p>
<table><tr><th>policy</th><th>triggers sent</th><th>customers reached</th><th>precision</th><th>recall</th>
<th>median warning (days)</th><th>suppressed</th></tr>{rows}</table>
{volume}{quality}
<details><summary>All figures (JSON)</summary><pre>{html.escape(json.dumps(report, indent=2))}</pre></details>
</body></html>"""


def _quality_svg(policies: dict[str, Any], w: int, h: int, pad: int) -> str:
    """Precision and recall of each policy, as bars."""
    bars, bw = [], 40
    for i, p in enumerate(policies.values()):
        colour = COLOURS[i % len(COLOURS)]
        for j, key in enumerate(("precision", "recall")):
            value = p[key] or 0.0
            x = pad + j * 220 + i * (bw + 8)
            bars.append(f'<rect x="{x}" y="{h - pad - value * (h - 2 * pad):.1f}" width="{bw}" '
                        f'height="{value * (h - 2 * pad):.1f}" fill="{colour}"/>'
                        f'<text x="{x + bw / 2}" y="{h - pad - value * (h - 2 * pad) - 4:.1f}" text-anchor="middle" '
                        f'font-size="10">{value:.0%}</text>')
    bars += [f'<text x="{pad + j * 220 + 40}" y="{h - pad + 16}" text-anchor="middle">{name}</text>'
             for j, name in enumerate(("precision", "recall"))]
    quality = f'<svg width="{w}" height="{h}" font-family="sans-serif" font-size="12">' \
              f'<text x="{w / 2}" y="18" text-anchor="middle" font-weight="bold">Precision and recall</text>' \
              f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#333"/>{"".join(bars)}</svg>'
    return quality


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def simulate_command(args: Any) -> int:
    from worker.config import load_policy
    from worker.model.artifact import load_artifact
    from worker.tools.history import parse_duration, read_history
    from worker.tools.training import parse_date

    events, refused = read_history(args.events, progress=False)
    if refused:
        print(f"skipped {sum(refused.values())} invalid rows: {dict(refused)}")
    policies = [load_policy(args.policy)] + ([load_policy(args.against)] if args.against else [])
    window = (parse_date(args.from_) if args.from_ else None, parse_date(args.to) if args.to else None)
    report = simulate(events, load_artifact(args.model), policies, parse_duration(args.horizon), window)
    print(summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.report:
        Path(args.report).write_text(render_html(report))
    return 0
