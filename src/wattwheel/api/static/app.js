// Dashboard: initial snapshot and live updates over SSE (/api/v1/stream), plain DOM + SVG.
"use strict";

const API = "/api/v1";
const HISTORY_LEN = 600;
const TOKEN_KEY = "wattwheel_token";
const token = takeToken();

// The token lives in this tab's sessionStorage and travels only in the Authorization header:
// never in a URL the server sees (logs, proxies), nor in the history (the #token= a user opened
// the page with is removed at once), nor on disk after the tab is closed.
function takeToken() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  localStorage.removeItem(TOKEN_KEY); // earlier versions kept it there
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  return token ? { Authorization: "Bearer " + token } : {};
}

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
  const resp = await fetch(API + path, { headers: authHeaders() });
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

// Server-sent events read with fetch (EventSource cannot send an Authorization header).
async function connect() {
  const conn = $("#conn");
  for (;;) {
    try {
      const resp = await fetch(API + "/stream", { headers: authHeaders(), cache: "no-store" });
      if (!resp.ok) throw new Error(`stream: HTTP ${resp.status}`);
      conn.textContent = "live";
      conn.className = "badge live";
      await readEvents(resp.body.pipeThrough(new TextDecoderStream()).getReader());
    } catch (err) {
      if (String(err.message || err).includes("401")) askForToken();
    }
    conn.textContent = "reconnecting";
    conn.className = "badge down";
    await new Promise(resolve => setTimeout(resolve, 2000));
  }
}

async function readEvents(reader) {
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      dispatch(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  const handler = handlers[name];
  if (handler && data.length) {
    handler(JSON.parse(data.join("\n")));
    queueRender();
  }
}

function askForToken() {
  const form = $("#token-form");
  if (!form.hidden) return;
  form.hidden = false;
  form.onsubmit = ev => {
    ev.preventDefault();
    const value = $("#token-input").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    location.reload();
  };
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
    $("#tick").textContent = msg.includes("401") ? "token needed" : msg;
    if (msg.includes("401")) askForToken();
  }
}

connect();
pollStatus();
setInterval(pollStatus, 5000);
