"""A self-contained HTML report: ROC, calibration and gain curves as inline SVG,
and a threshold table, so a product person can pick thresholds from a picture."""
from __future__ import annotations

import html
import json

W, H, PAD = 360, 340, 48
TICKS = (0, 0.25, 0.5, 0.75, 1)
BLUE, ORANGE, GREY = "#0072b2", "#e69f00", "#999"


def _xy(x: float, y: float) -> tuple[float, float]:
    return PAD + x * (W - 2 * PAD), H - PAD - y * (H - 2 * PAD)


def _line(points, colour: str, dash: str = "") -> str:
    coords = " ".join("{:.1f},{:.1f}".format(*_xy(x, y)) for x, y in points)
    style = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2"{style} points="{coords}"/>'


def _dots(points, colour: str) -> str:
    """Calibration bins: a dot per bin, labelled with how many customers it holds."""
    out = []
    for x, y, n in points:
        cx, cy = _xy(x, y)
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{colour}"/>'
                   f'<text x="{cx + 5:.1f}" y="{cy + 12:.1f}" font-size="9" fill="#555">n={n}</text>')
    return "".join(out)


def _frame(title: str, xlabel: str, ylabel: str, legend: list[tuple[str, str, str]],
           corner: str = "bottom-right") -> str:
    """Axes with ticks and a grid; the legend goes in the corner the curves leave empty."""
    parts = [f'<text x="{W / 2}" y="18" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>']
    for t in TICKS:
        x, y0 = _xy(t, 0)
        x0, y = _xy(0, t)
        parts.append(f'<line x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{H - PAD}" stroke="#eee"/>'
                     f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - PAD}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">{t:g}</text>'
                     f'<text x="{PAD - 6}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{t:g}</text>')
    parts.append(f'<rect x="{PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#333"/>'
                 f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">{html.escape(xlabel)}</text>'
                 f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">'
                 f'{html.escape(ylabel)}</text>')
    left = PAD + 8 if corner == "top-left" else W - PAD - 120
    top = PAD + 14 if corner == "top-left" else H - PAD - 8 - 14 * (len(legend) - 1)
    for i, (label, colour, dash) in enumerate(legend):
        y = top + 14 * i
        style = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{left}" y1="{y - 4}" x2="{left + 20}" y2="{y - 4}" '
                     f'stroke="{colour}" stroke-width="2"{style}/>'
                     f'<text x="{left + 24}" y="{y}" font-size="10">{html.escape(label)}</text>')
    return "".join(parts)


def _svg(body: str) -> str:
    return f'<svg width="{W}" height="{H}" font-size="12" font-family="sans-serif">{body}</svg>'


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def charts(summary: dict, curves: dict) -> str:
    base = summary["baselines"]["recency"]
    roc = _svg(_frame(f"ROC: model {summary['roc_auc']:.3f}, recency {base['roc_auc']:.3f}",
                      "false positive rate", "true positive rate",
                      [("this model", BLUE, ""), ("recency alone", ORANGE, "6 3"), ("chance", GREY, "4")])
               + _line([(0, 0), (1, 1)], GREY, "4") + _line(curves["roc_recency"], ORANGE, "6 3")
               + _line(curves["roc"], BLUE))
    calib = _svg(_frame("Calibration (bins of predicted risk)", "predicted churn probability",
                        "observed churn rate", [("this model", BLUE, ""), ("perfect", GREY, "4")], "top-left")
                 + _line([(0, 0), (1, 1)], GREY, "4")
                 + _line([(p, o) for p, o, _ in curves["calibration"]], BLUE) + _dots(curves["calibration"], BLUE))
    rate = summary["churn_rate"]
    gain = _svg(_frame("Cumulative gain", "share of customers contacted, riskiest first",
                       "share of churners reached",
                       [("this model", BLUE, ""), ("recency alone", ORANGE, "6 3"), ("best possible", "#009e73", "2 2"),
                        ("random", GREY, "4")])
                + _line([(0, 0), (1, 1)], GREY, "4") + _line([(0, 0), (rate, 1), (1, 1)], "#009e73", "2 2")
                + _line(curves["gain_recency"], ORANGE, "6 3") + _line(curves["gain"], BLUE))
    return roc + calib + gain


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def comparison(summary: dict) -> str:
    base = summary["baselines"]
    rows = [["this model", summary["roc_auc"], summary["pr_auc"], summary["brier"],
             _pct(summary["capture_top10"]), _pct(summary["capture_top20"])],
            ["days since last purchase alone", base["recency"]["roc_auc"], base["recency"]["pr_auc"],
             f"{base['recency_calibrated']['brier']} *", _pct(base["recency"]["capture_top10"]),
             _pct(base["recency"]["capture_top20"])],
            ["purchase count alone", base["frequency"]["roc_auc"], base["frequency"]["pr_auc"], "n/a",
             _pct(base["frequency"]["capture_top10"]), _pct(base["frequency"]["capture_top20"])]]
    return _table(["", "ROC AUC", "PR AUC", "Brier (lower is better)", "churners in the riskiest 10%",
                   "churners in the riskiest 20%"], rows)


def thresholds_table(rows: list[dict], churn_rate: float) -> str:
    body = [[r["rule"], f"{r['threshold']:.3f}", r["flagged"], _pct(r["flagged_share"]), r["churned"],
             _pct(r["precision"]), r["flagged"] - r["churned"], _pct(r["recall"])] for r in rows]
    return _table(["flag customers", "probability threshold", "customers flagged", "% of customers",
                   "of whom churned", f"% of flagged who churned (base rate {churn_rate:.1%})",
                   "false alarms", "% of all churners caught"], body)


def render(summary: dict, curves: dict, thresholds: list[dict], title: str, card: dict) -> str:
    training = card.get("training", {})
    warning = ""
    if summary.get("in_sample"):
        warning = ("<p style='color:#b00'><b>Warning:</b> this cutoff is not after the model's last training "
                   "cutoff; the figures are in-sample and flatter the model. Train with --train-until.</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1150px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}</style></head><body>
<h1>{html.escape(title)}</h1>{warning}
<p><b>Churned</b> means: no {html.escape(summary['churn_on'])} in the {summary['horizon_days']:g} days after
the cutoff {html.escape(summary['cutoff'][:10])}. {summary['n_customers']} customers were known at the cutoff;
{summary['churn_rate']:.1%} of them churned. The model was trained on cutoffs
{html.escape(', '.join(c[:10] for c in training.get('cutoffs', [])) or 'unknown')}.</p>
{charts(summary, curves)}
<h2>Model against simple baselines, on the same customers</h2>{comparison(summary)}
<p>* the baseline's probabilities are fitted on this very snapshot, which flatters it.</p>
<h2>What each threshold would flag</h2>
<p>Each row: contact every customer whose churn probability is at or above the threshold. Rows by
"riskiest N%" give the threshold for a contact budget.</p>
{thresholds_table(thresholds, summary['churn_rate'])}
<details><summary>All figures (JSON)</summary><pre>{html.escape(json.dumps(summary, indent=2))}</pre></details>
</body></html>"""
