"""`churn-worker uplift`: what the triggers changed, measured against the control group.

    churn-worker uplift --events HISTORY --decisions FILE_OR_TOPICS [--window 60d] [--json OUT]

Decisions are trigger records: those sent (the trigger topics) and those held out (the
holdout topic, `"held_out": true`), from a JSONL file or read from topics. Each customer
counts once per trigger type, in the arm of its first decision of that type (and once
overall, in the arm of its first decision). A customer churned when the history holds no
qualifying activity (a login or a purchase) within the window after that decision;
decisions whose window runs past the end of the history are left out (censored) and
counted. Per type and overall: churn rate of each arm, the uplift (held-out churn less
treated churn: the churn the triggers prevented) absolute and relative, with a 95%
confidence interval (normal approximation for a difference of proportions), the
customers in each arm, and the smallest absolute uplift the sample can detect (two-sided
5% level, 80% power).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.core.events import Event

Z_95, Z_POWER_80 = 1.959964, 0.841621
QUALIFYING = ("login", "purchase")


@dataclass(frozen=True)
class Decision:
    customer_id: str
    type: str
    at: float
    held_out: bool


@dataclass(frozen=True)
class Arms:
    treated: int
    treated_churned: int
    held_out: int
    held_out_churned: int
    censored: int

    @property
    def treated_rate(self) -> float | None:
        return self.treated_churned / self.treated if self.treated else None

    @property
    def held_out_rate(self) -> float | None:
        return self.held_out_churned / self.held_out if self.held_out else None


def decisions_from(records: Iterable[dict[str, Any]]) -> list[Decision]:
    out = []
    for r in records:
        at = datetime.fromisoformat(str(r["event_time"]).replace("Z", "+00:00")).timestamp()
        out.append(Decision(str(r["customer_id"]), str(r["type"]), at, bool(r.get("held_out", False))))
    return out


def first_decisions(decisions: Sequence[Decision]) -> dict[str, dict[str, Decision]]:
    """scope ('overall' or a trigger type) -> customer -> its first decision there."""
    scopes: dict[str, dict[str, Decision]] = defaultdict(dict)
    for d in sorted(decisions, key=lambda d: d.at):
        for scope in ("overall", d.type):
            scopes[scope].setdefault(d.customer_id, d)
    return scopes


def arms(first: dict[str, Decision], activity: dict[str, list[float]], window_s: float, history_end: float) -> Arms:
    counts = {"treated": [0, 0], "held_out": [0, 0]}
    censored = 0
    for cid, d in first.items():
        if d.at + window_s > history_end:
            censored += 1
            continue
        times = activity.get(cid, ())
        churned = not any(d.at < t <= d.at + window_s for t in times)
        arm = counts["held_out" if d.held_out else "treated"]
        arm[0] += 1
        arm[1] += churned
    return Arms(counts["treated"][0], counts["treated"][1], counts["held_out"][0], counts["held_out"][1], censored)


def compare(a: Arms) -> dict[str, Any]:
    """Rates, uplift with its 95% interval, and the smallest detectable uplift."""
    out: dict[str, Any] = {**asdict(a), "treated_churn_rate": a.treated_rate, "held_out_churn_rate": a.held_out_rate}
    pt, ph = a.treated_rate, a.held_out_rate
    if pt is None or ph is None:
        return {**out, "uplift": None, "uplift_ci95": None, "relative_uplift": None, "min_detectable_uplift": None}
    diff = ph - pt
    se = math.sqrt(pt * (1 - pt) / a.treated + ph * (1 - ph) / a.held_out)
    pooled = (a.treated_churned + a.held_out_churned) / (a.treated + a.held_out)
    mde = (Z_95 + Z_POWER_80) * math.sqrt(pooled * (1 - pooled) * (1 / a.treated + 1 / a.held_out))
    return {**out, "uplift": diff, "uplift_ci95": [diff - Z_95 * se, diff + Z_95 * se],
            "relative_uplift": diff / ph if ph else None, "min_detectable_uplift": mde}


def uplift(events: Sequence[Event], decisions: Sequence[Decision], window_s: float) -> dict[str, Any]:
    activity: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.type in QUALIFYING:
            activity[e.customer_id].append(e.occurred_at)
    end = max((e.occurred_at for e in events), default=0.0)
    return {"window_days": window_s / 86400, "history_end": end,
            "scopes": {scope: compare(arms(first, activity, window_s, end))
                       for scope, first in sorted(first_decisions(decisions).items())}}


def read_decisions(path: Path) -> list[Decision]:
    with path.open() as handle:
        return decisions_from(json.loads(line) for line in handle if line.strip())


def render(result: dict[str, Any]) -> str:
    lines = [f"churn = no login or purchase within {result['window_days']:.0f} days after the first decision",
             f"{'scope':18} {'treated':>9} {'churn':>7} {'held out':>9} {'churn':>7} {'uplift':>8} "
             f"{'95% CI':>18} {'MDE':>7} {'censored':>9}"]
    for scope, r in result["scopes"].items():
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{100 * v:.1f}%"
        ci = "-" if r["uplift_ci95"] is None else f"[{100 * r['uplift_ci95'][0]:.1f}, {100 * r['uplift_ci95'][1]:.1f}]"
        lines.append(f"{scope:18} {r['treated']:9} {pct(r['treated_churn_rate']):>7} {r['held_out']:9} "
                     f"{pct(r['held_out_churn_rate']):>7} {pct(r['uplift']):>8} {ci:>18} "
                     f"{pct(r['min_detectable_uplift']):>7} {r['censored']:9}")
    return "\n".join(lines)
