// A tiny SVG chart of demand vs capacity with the forecast band. No dependencies.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function pathFrom(points) {
  return points.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1)).join("");
}

// history: [{timestamp_s, demand_kw, primary_kw, kes_max_discharge_kw, forecast: [...]}, ...]
function drawDomainChart(svg, history) {
  const W = 600, H = 190, L = 44, R = 8, T = 8, B = 18;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  if (!history.length) return;
  const last = history[history.length - 1];
  const bands = (last.forecast || []).filter(b => b.p05_kw != null && b.p95_kw != null);
  const t0 = history[0].timestamp_s, tNow = last.timestamp_s;
  const hMax = bands.length ? Math.max(...bands.map(b => b.horizon_s)) : 0;
  // Piecewise time axis: the past fills 70 % of the width, the forecast horizon the rest, so a
  // short history and a 15-minute forecast are both readable.
  const xSplit = L + (W - L - R) * (hMax ? 0.7 : 1.0);
  const x = t => (t <= tNow
    ? L + (xSplit - L) * (t - t0) / Math.max(tNow - t0, 1e-9)
    : xSplit + (W - R - xSplit) * (t - tNow) / hMax);
  const tEnd = tNow + hMax;
  // Zoom on where the action is: a 3 % excess over a 750 kW feed must be visible, so the
  // y axis spans the data (demand, band, capacity, capacity + KES) with some padding, not 0..max.
  const kesTop = (last.primary_kw || 0) + (last.kes_max_discharge_kw || 0);
  const values = [kesTop];
  for (const s of history) {
    if (s.demand_kw != null) values.push(s.demand_kw);
    if (s.primary_kw != null) values.push(s.primary_kw);
  }
  for (const b of bands) values.push(b.p05_kw, b.p95_kw);
  const lo = Math.min(...values), hi = Math.max(...values);
  const pad = Math.max((hi - lo) * 0.1, hi * 0.01, 1e-3);
  const yMin = Math.max(0, lo - pad), yMax = hi + pad;
  const y = v => T + (H - T - B) * (1 - (v - yMin) / (yMax - yMin));

  for (const f of [0, 0.5, 1]) {
    const v = yMin + (yMax - yMin) * f;
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
    const label = svgEl("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" });
    label.textContent = v.toFixed(0);
    svg.append(label);
  }
  if (bands.length) {
    const upper = [[x(tNow), y(last.demand_kw)]].concat(bands.map(b => [x(tNow + b.horizon_s), y(b.p95_kw)]));
    const lower = bands.map(b => [x(tNow + b.horizon_s), y(b.p05_kw)]).reverse();
    svg.append(svgEl("path", { d: pathFrom(upper.concat(lower)) + "Z", class: "forecast-band" }));
    const mid = [[x(tNow), y(last.demand_kw)]].concat(bands.map(b => [x(tNow + b.horizon_s), y(b.p50_kw)]));
    svg.append(svgEl("path", { d: pathFrom(mid), class: "forecast-p50" }));
  }
  const cap = history.map(s => [x(s.timestamp_s), y(s.primary_kw)]);
  cap.push([x(tEnd), y(last.primary_kw)]);
  svg.append(svgEl("path", { d: pathFrom(cap), class: "capacity-line", fill: "none" }));
  if (last.kes_max_discharge_kw > 0) {
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(kesTop), y2: y(kesTop), class: "kes-line" }));
  }
  const demand = history.filter(s => s.demand_kw != null).map(s => [x(s.timestamp_s), y(s.demand_kw)]);
  svg.append(svgEl("path", { d: pathFrom(demand), class: "demand-line", "data-points": demand.length }));
  svg.append(svgEl("line", { x1: x(tNow), x2: x(tNow), y1: T, y2: H - B, class: "now-line" }));
  const nowLabel = svgEl("text", { x: x(tNow), y: H - 4, "text-anchor": "middle" });
  nowLabel.textContent = "now";
  svg.append(nowLabel);
  const startLabel = svgEl("text", { x: L, y: H - 4 });
  startLabel.textContent = `-${Math.round((tNow - t0) / 60)} min`;
  svg.append(startLabel);
  if (hMax) {
    const endLabel = svgEl("text", { x: W - R, y: H - 4, "text-anchor": "end" });
    endLabel.textContent = `+${Math.round(hMax / 60)} min`;
    svg.append(endLabel);
  }
}
