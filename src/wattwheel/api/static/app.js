// Dashboard: initial snapshot and live updates over SSE (/api/v1/stream), plain DOM + SVG.
"use strict";

const API = "/api/v1";
const HISTORY_LEN = 600;
const token = new URLSearchParams(location.hash.slice(1)).get("token")
  || localStorage.getItem("wattwheel_token") || "";
if (token) localStorage.setItem("wattwheel_token", token);

const model = { history: {}, latest: {}, racks: {}, decisions: [], events: [], mode: "" };
let renderQueued = false;

const fmt = (v, d = 1) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(d));
const timeOf = s => new Date(s * 1000).toISOString().slice(11, 19);
const $ = sel => document.querySelector(sel);

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function getJSON(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const resp = await fetch(API + path, { headers });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function addSnapshots(snaps) {
  for (const s of snaps) {
    const h = (model.history[s.domain_id] ||= []);
    if (!h.length || h[h.length - 1].timestamp_s < s.timestamp_s) h.push(s);
    if (h.length > HISTORY_LEN) h.splice(0, h.length - HISTORY_LEN);
    model.latest[s.domain_id] = s;
  }
}

function domainCard(id) {
  let card = document.getElementById("domain-" + id);
  if (card) return card;
  card = document.createElement("div");
  card.className = "card";
  card.id = "domain-" + id;
  card.innerHTML = `<h3><span class="name"></span><span class="demand"></span>
      <span class="muted cap"></span><span class="badge stale-badge" hidden>stale</span></h3>
    <svg class="chart" preserveAspectRatio="none"></svg>
    <div class="legend"><span><i style="background:var(--demand)"></i>demand</span>
      <span><i style="background:var(--cap)"></i>primary capacity</span>
      <span><i style="background:var(--kes)"></i>+ KES</span>
      <span><i style="background:var(--band)"></i>forecast p05–p95</span></div>
    <div class="facts"><span>KES SoC <span class="soc"><div></div></span> <b class="soc-text"></b></span>
      <span>KES <b class="kes"></b> kW</span>
      <span>reserve <span class="badge reserve"></span> <b class="reserve-kw"></b></span>
      <span>capped <b class="capped"></b> kW</span></div>`;
  card.querySelector(".name").textContent = id;
  $("#domains").append(card);
  $("#no-domains")?.remove();
  return card;
}

function renderDomains() {
  for (const [id, s] of Object.entries(model.latest)) {
    const card = domainCard(id);
    card.querySelector(".demand").textContent = `${fmt(s.demand_kw)} kW`;
    card.querySelector(".cap").textContent = `of ${fmt(s.primary_kw, 0)} kW primary`;
    card.querySelector(".stale-badge").hidden = !s.stale;
    const soc = s.kes_soc == null ? 0 : s.kes_soc;
    card.querySelector(".soc > div").style.width = `${Math.round(100 * soc)}%`;
    card.querySelector(".soc-text").textContent = `${fmt(100 * soc, 0)} %`;
    card.querySelector(".kes").textContent = fmt(s.kes_kw);
    const badge = card.querySelector(".reserve");
    badge.textContent = s.reserve_mode;
    badge.className = "badge reserve " + s.reserve_mode;
    card.querySelector(".reserve-kw").textContent = s.reserve_kw ? `${fmt(s.reserve_kw)} kW` : "";
    card.querySelector(".capped").textContent = fmt(s.cap_kw);
    drawDomainChart(card.querySelector("svg"), model.history[id] || []);
  }
}

function renderDecisions() {
  const rows = model.decisions.slice(0, 60).map(d => {
    const tr = document.createElement("tr");
    tr.className = "decision-row";
    tr.append(cell(timeOf(d.timestamp_s)), cell(d.domain_id), cell(d.policy),
      cell(fmt(d.kes_kw), "num"), cell(fmt(d.cap_kw), "num"),
      cell(d.reserve_on ? `on ${fmt(d.reserve_kw)}` : "off"), cell(d.reason || "", "reason"));
    return tr;
  });
  $("#decisions tbody").replaceChildren(...rows);
}

function renderRacks() {
  const racks = Object.values(model.racks)
    .sort((a, b) => (a.domain_id + a.rack_id).localeCompare(b.domain_id + b.rack_id)).slice(0, 80);
  $("#racks tbody").replaceChildren(...racks.map(r => {
    const tr = document.createElement("tr");
    tr.append(cell(r.rack_id), cell(r.domain_id), cell(fmt(r.power_kw, 2), "num"),
      cell(r.cap_kw == null ? "–" : fmt(r.cap_kw, 2), "num"),
      cell(r.pinned_cap_kw == null ? "" : fmt(r.pinned_cap_kw, 2), "num"));
    return tr;
  }));
}

function renderEvents() {
  $("#events").replaceChildren(...model.events.slice(0, 30).map(e => {
    const li = document.createElement("li");
    li.textContent = `${timeOf(e.timestamp_s)} ${e.kind}${e.actor ? " by " + e.actor : ""}: ${e.message}`;
    return li;
  }));
}

function describeOverride(o) {
  const what = o.kind === "pin_cap" ? `${o.scope} ${o.target} pinned at ${fmt(o.cap_kw)} kW`
    : o.kind === "reserve" ? `reserve ${o.action} on ${o.target}` : "maintenance mode";
  const until = o.expires_s ? ` until ${timeOf(o.expires_s)}` : "";
  return `${what} — ${o.actor}: ${o.reason}${until}`;
}

function renderOverrides(list) {
  const items = list.map(o => {
    const li = document.createElement("li");
    li.className = "override";
    li.textContent = describeOverride(o);
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "none";
    items.push(li);
  }
  $("#overrides").replaceChildren(...items);
}

function renderMode() {
  const m = $("#mode");
  m.textContent = model.mode || "…";
  m.className = "badge " + model.mode;
}

function render() {
  renderQueued = false;
  renderMode();
  renderDomains();
  renderDecisions();
  renderRacks();
  renderEvents();
}

function queueRender() {
  if (!renderQueued) {
    renderQueued = true;
    requestAnimationFrame(render);
  }
}

const handlers = {
  snapshot(d) {
    model.mode = d.mode;
    $("#policy").textContent = d.policy ? "policy " + d.policy : "";
    for (const snaps of Object.values(d.history || {})) addSnapshots(snaps);
    addSnapshots(d.domains || []);
    for (const r of d.racks || []) model.racks[r.rack_id] = r;
    model.decisions = d.decisions || [];
    model.events = d.events || [];
  },
  domains(d) { addSnapshots(d.domains); },
  racks(d) { for (const r of d.racks) model.racks[r.rack_id] = { ...model.racks[r.rack_id], ...r }; },
  decisions(d) {
    model.decisions = d.decisions.slice().reverse().concat(model.decisions).slice(0, 200);
    if (d.decisions.length) $("#policy").textContent = "policy " + d.decisions[0].policy;
  },
  event(e) { model.events = [e].concat(model.events).slice(0, 100); },
  mode(d) { model.mode = d.mode; },
};

function connect() {
  const url = API + "/stream" + (token ? "?access_token=" + encodeURIComponent(token) : "");
  const source = new EventSource(url);
  const conn = $("#conn");
  source.onopen = () => { conn.textContent = "live"; conn.className = "badge live"; };
  source.onerror = () => { conn.textContent = "reconnecting"; conn.className = "badge down"; };
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, ev => { fn(JSON.parse(ev.data)); queueRender(); });
  }
}

async function pollStatus() {
  try {
    const s = await getJSON("/status");
    $("#site").textContent = s.site || "";
    $("#tick").textContent = s.tick_age_s == null ? "no tick yet" : `last tick ${fmt(s.tick_age_s)} s ago`;
    const lat = s.loop_latency_ms;
    $("#latency").textContent = lat.count ? `loop p50 ${fmt(lat.p50)} ms · p99 ${fmt(lat.p99)} ms` : "";
    const pins = await getJSON("/racks");
    for (const r of pins.racks) model.racks[r.rack_id] = r;
    renderOverrides((await getJSON("/overrides")).overrides);
    queueRender();
  } catch (err) {
    const msg = String(err.message || err);
    $("#tick").textContent = msg.includes("401") ? "token needed: open /#token=YOUR_TOKEN" : msg;
  }
}

connect();
pollStatus();
setInterval(pollStatus, 5000);
