"""A self-contained HTML report: ROC, calibration and gain curves as inline SVG,
and the threshold table, so a product person can pick thresholds from a picture."""
from __future__ import annotations

import html
import json

W, H, PAD = 320, 320, 40


def _path(points, colour: str, dash: str = "") -> str:
    coords = " ".join(f"{PAD + x * (W - 2 * PAD):.1f},{H - PAD - y * (H - 2 * PAD):.1f}" for x, y in points)
    style = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2"{style} points="{coords}"/>'


def _chart(title: str, xlabel: str, ylabel: str, series: list[str]) -> str:
    axes = (f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>'
            f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{xlabel}</text>'
            f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">{ylabel}</text>'
            f'<text x="{W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>')
    return f'<svg width="{W}" height="{H}" font-size="12" font-family="sans-serif">{axes}{"".join(series)}</svg>'


def _table(rows: list[dict]) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{'' if v is None else v}</td>" for v in r.values()) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(summary: dict, curves: dict, thresholds: list[dict], title: str) -> str:
    diagonal = [(0, 0), (1, 1)]
    roc = _chart("ROC", "false positive rate", "true positive rate",
                 [_path(diagonal, "#bbb", "4"), _path(curves["roc_recency"], "#e69f00", "6 3"),
                  _path(curves["roc"], "#0072b2")])
    calib = _chart("Calibration", "predicted churn probability", "observed churn rate",
                   [_path(diagonal, "#bbb", "4"), _path([(p, o) for p, o, _ in curves["calibration"]], "#0072b2")])
    gain = _chart("Cumulative gain", "share of customers contacted (by risk)", "share of churners reached",
                  [_path(diagonal, "#bbb", "4"), _path(curves["gain"], "#0072b2")])
    base = summary["baselines"]
    figures = [
        {"model": "this model", **{k: summary[k] for k in ("roc_auc", "pr_auc", "brier", "lift_top10",
                                                            "capture_top10", "lift_top20", "capture_top20")}},
        {"model": "recency alone", **{k: base["recency"].get(k) for k in ("roc_auc", "pr_auc")},
         "brier": base["recency_calibrated"]["brier"], **{k: base["recency"][k] for k in
                                                          ("lift_top10", "capture_top10", "lift_top20",
                                                           "capture_top20")}},
        {"model": "purchase count alone", **{k: base["frequency"].get(k) for k in ("roc_auc", "pr_auc")},
         "brier": None, **{k: base["frequency"][k] for k in ("lift_top10", "capture_top10", "lift_top20",
                                                             "capture_top20")}},
    ]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{summary['n_customers']} customers at the cutoff, churn rate {summary['churn_rate']:.1%}.
Blue: this model; orange dashed: days since last purchase alone; grey: chance / perfect calibration.</p>
{roc}{calib}{gain}
<h2>Model against baselines</h2>{_table(figures)}
<h2>What each threshold would flag</h2>
<p>Customers whose churn probability is at or above the threshold, and how many of them did churn.</p>
{_table(thresholds)}
<details><summary>All figures (JSON)</summary><pre>{html.escape(json.dumps(summary, indent=2))}</pre></details>
</body></html>"""
