"""HTML report of a capacity run: per policy, the extra servers the site can host against the
flywheel size, each point labelled with its binding constraint (plotly, self-contained)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go


def write_capacity_report(path: Path, payload: Mapping[str, Any], title: str) -> None:
    fig = _curves(payload)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(_settings_line(payload))}</p>",
        _table(payload),
        fig.to_html(full_html=False, include_plotlyjs="inline"),
    ]
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(title)
        + "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path.write_text(doc)


def _points(payload: Mapping[str, Any], policy: str) -> list[tuple[float, dict[str, Any]]]:
    by_fraction = payload["policies"][policy]["kes_fraction"]
    return sorted((float(f), p) for f, p in by_fraction.items())


def _curves(payload: Mapping[str, Any]) -> go.Figure:
    fig = go.Figure()
    for policy in payload["policies"]:
        pts = _points(payload, policy)
        fig.add_trace(
            go.Scatter(
                x=[100.0 * f for f, _ in pts],
                y=[p["extra_servers_pct"] for _, p in pts],
                mode="lines+markers+text",
                name=policy,
                text=[p["binding"] for _, p in pts],
                textposition="top center",
                customdata=[[p["max_servers"], p["binding"]] for _, p in pts],
                hovertemplate=(
                    f"{policy}<br>flywheel %{{x:.1f}} % of peak<br>extra servers %{{y:.2f}} %"
                    "<br>max servers %{customdata[0]}<br>binding: %{customdata[1]}<extra></extra>"
                ),
            )
        )
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="Servers the site can host within the limits (label: binding constraint)",
        xaxis_title="flywheel power, % of each domain's baseline peak",
        yaxis_title="extra servers vs the installed base (%)",
        height=520,
    )
    return fig


def _table(payload: Mapping[str, Any]) -> str:
    rows = [
        "<table><tr><th>policy</th><th>flywheel (% of peak)</th><th>max servers</th>"
        "<th>extra servers %</th><th>binding constraint</th><th>also broken above</th></tr>"
    ]
    for policy in payload["policies"]:
        for f, p in _points(payload, policy):
            also = ", ".join(v for v in p["violated_above"] if v != p["binding"]) or "-"
            rows.append(
                f"<tr><td>{html.escape(policy)}</td><td>{100 * f:g}</td><td>{p['max_servers']}</td>"
                f"<td>{p['extra_servers_pct']:+.2f}</td><td>{html.escape(p['binding'])}</td>"
                f"<td>{html.escape(also)}</td></tr>"
            )
    rows.append("</table>")
    return "".join(rows)


def _settings_line(payload: Mapping[str, Any]) -> str:
    s = payload["settings"]
    lim = payload["limits"]
    user = ", ".join(f"{k}<={v:g}" for k, v in lim["user"].items()) or "none"
    trace = payload.get("trace", {})
    return (
        f"baseline {payload['baseline_servers']} servers ({s['servers_per_rack']} per trace rack); "
        f"growth: {s['growth']}; limits: breaker_trips=0, critical_capped_energy_kwh=0, {user}; "
        f"trace: {trace.get('path', '?')} ({trace.get('days', 0):.1f} days); "
        f"search resolution {s['search']['resolution']} servers"
    )
