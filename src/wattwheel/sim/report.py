"""HTML report of a bench or a single run: demand vs capacity with the forecast band, KES SoC,
reserve, caps and shifts over time, and the cost breakdown per policy (plotly, self-contained)."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from wattwheel.domain.site import SiteParams
from wattwheel.sim.simulator import SimResult

#: Policies drawn in the time-series panels (the others are in the cost table).
FOCUS = ("predictive", "reactive")
#: Time-series panels are drawn over at most this many steps (around the worst excess).
WINDOW_STEPS = 2016


def write_report(
    path: Path,
    site: SiteParams,
    results: Mapping[str, SimResult],
    title: str,
    forecaster_training: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """``forecaster_training``: per policy, what its forecaster's model was trained on."""
    figures = [_cost_figure(site, results)]
    focus = next((results[p] for p in FOCUS if p in results), next(iter(results.values())))
    for d, name in enumerate(site.domain_names):
        figures.append(_domain_figure(site, focus, d, name))
    parts = [f"<h1>{title}</h1>", _summary_table(results)]
    if forecaster_training:
        parts.append(_training_table(forecaster_training))
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False))
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + title + "</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path.write_text(html)


def _training_table(training: Mapping[str, Mapping[str, Any]]) -> str:
    """Which data each policy's forecaster saw (a model must not have seen the benched trace)."""
    rows = []
    for policy, info in training.items():
        data = info.get("training_data") or {}
        files = ", ".join(f.get("name", "?") for f in data.get("files", []))
        files = files or str(data.get("source") or "none")
        note = info.get("note") or info.get("command") or ""
        cells = (policy, str(info.get("model", "")), files, str(note))
        rows.append(
            "<tr>"
            + "".join(f"<td style='text-align:left'>{escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    head = "".join(f"<th>{c}</th>" for c in ("policy", "forecaster model", "trained on", "how"))
    return (
        "<h2>Forecasters and the data their models saw</h2>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    )


def _summary_table(results: Mapping[str, SimResult]) -> str:
    cols = (
        "cost_total",
        "reserve_energy_kwh",
        "reserve_activations",
        "overload_energy_kwh",
        "breaker_trips",
        "capped_energy_kwh",
        "critical_capped_energy_kwh",
        "shifted_energy_kwh",
        "kes_losses_kwh",
        "kes_equivalent_cycles",
        "wall_seconds",
    )
    head = "".join(f"<th>{c}</th>" for c in ("policy", *cols))
    rows = []
    for name, res in results.items():
        cells = "".join(f"<td>{res.site_metrics.get(c, float('nan')):,.2f}</td>" for c in cols)
        rows.append(f"<tr><th>{name}</th>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _cost_figure(site: SiteParams, results: Mapping[str, SimResult]) -> go.Figure:
    fig = go.Figure()
    names = list(results)
    for metric, weight in site.costs.items():
        values = [weight * results[n].site_metrics.get(metric, 0.0) for n in names]
        if any(v > 0 for v in values):
            fig.add_bar(name=metric, x=names, y=values)
    fig.update_layout(
        barmode="stack", title="Cost breakdown per policy", yaxis_title="cost", height=420
    )
    return fig


def _window(demand: np.ndarray, primary: float) -> slice:
    n = demand.shape[0]
    if n <= WINDOW_STEPS:
        return slice(0, n)
    worst = int(np.argmax(demand - primary))
    start = min(max(worst - WINDOW_STEPS // 2, 0), n - WINDOW_STEPS)
    return slice(start, start + WINDOW_STEPS)


def _forecast_band(
    s: Mapping[str, np.ndarray], w: slice, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-horizon band of the forecasts issued in window ``w``, placed at the time each is
    for (issued_at + horizon, hours since the trace start), in time order."""
    target = s["fc_target_s"][w, d]
    issued = np.isfinite(target)
    order = np.argsort(target[issued], kind="stable")
    t_fc = ((target[issued] - s["timestamps_s"][0]) / 3600.0)[order]
    return t_fc, s["fc_lo_kw"][w, d][issued][order], s["fc_hi_kw"][w, d][issued][order]


def _domain_figure(site: SiteParams, res: SimResult, d: int, name: str) -> go.Figure:
    s = res.series
    primary = float(site.primary_kw[d])
    w = _window(s["demand_kw"][:, d], primary)
    t = (s["timestamps_s"][w] - s["timestamps_s"][0]) / 3600.0
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        subplot_titles=(
            "demand vs capacity (kW)",
            "KES state of charge",
            "reserve and KES power (kW)",
            "caps and shifts (kW)",
        ),
    )
    t_fc, lo, hi = _forecast_band(s, w, d)
    fig.add_scatter(x=t_fc, y=hi, name="forecast p95", line={"width": 0}, row=1, col=1)
    fig.add_scatter(
        x=t_fc,
        y=lo,
        name="forecast band (p05-p95, at its target time)",
        fill="tonexty",
        line={"width": 0},
        row=1,
        col=1,
    )
    fig.add_scatter(x=t, y=s["demand_kw"][w, d], name="demand", row=1, col=1)
    fig.add_scatter(x=t, y=s["grid_kw"][w, d], name="grid draw", row=1, col=1)
    fig.add_hline(y=primary, line_dash="dash", annotation_text="primary", row=1, col=1)
    fig.add_scatter(x=t, y=s["soc"][w, d], name="SoC", row=2, col=1)
    fig.add_scatter(x=t, y=s["reserve_kw"][w, d], name="reserve", row=3, col=1)
    fig.add_scatter(x=t, y=s["kes_kw"][w, d], name="KES (+dis)", row=3, col=1)
    fig.add_scatter(x=t, y=s["cap_kw"][w, d], name="capped", row=4, col=1)
    fig.add_scatter(
        x=t, y=s["shift_out_kw"][w, d] - s["shift_in_kw"][w, d], name="shift out-in", row=4, col=1
    )
    fig.update_layout(title=f"{name} — {res.policy}", height=900)
    fig.update_xaxes(title_text="hours since trace start", row=4, col=1)
    return fig
