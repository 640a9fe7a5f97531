// permitchain console: the live view of the chain. Hand-written, no framework, no build step.
//
// Events arrive by Server-Sent Events (read with fetch, so the bearer token goes in a header,
// never a cookie or a URL), are queued, and applied once per animation frame: at 1,000
// plans/s the page keeps the newest MAX_PLANS plans, draws DRAWN_PLANS of them, and counts
// denials by reason instead of listing them.
"use strict";

const MAX_PLANS = 300;
const DRAWN_PLANS = 60;
const REFRESH_MS = 5000;
const LAYERS = ["planner", "governor", "position-brain", "executor"];
const DENIALS = new Set(["DENY", "BLOCKED", "SKIP"]);

const $ = (id) => document.getElementById(id);
const plans = new Map(); // plan id -> {id, symbol, action, t0, steps: {layer: step}, outcome}
const denials = new Map(); // reason -> {count, layer, plan}
let pending = [];
let frameAsked = false;
let lastEventId = null;
let eventCount = 0;
let planCount = 0;
let rateMark = {t: performance.now(), events: 0, plans: 0};

// -- small helpers -----------------------------------------------------------------------
function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function utc(ts) {
  return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 23) : "-";
}
function token() { return sessionStorage.getItem("permitchain.token") || ""; }
function operatorName() { return sessionStorage.getItem("permitchain.operator") || ""; }
function headers(json) {
  const h = {};
  if (token()) h["Authorization"] = "Bearer " + token();
  if (operatorName()) h["X-Operator"] = operatorName();
  if (json) h["Content-Type"] = "application/json";
  return h;
}
async function api(method, path, body) {
  const res = await fetch(path, {
    method, headers: headers(body !== undefined), cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = {error: res.statusText}; }
  return {ok: res.ok, status: res.status, data};
}
function say(id, text, bad) {
  const el = $(id);
  el.textContent = text;
  el.dataset.bad = bad ? "1" : "";
}

// -- events ------------------------------------------------------------------------------
let stream = null; // the AbortController of the open event stream
let wake = null; // resolves the wait between reconnects

function pause(ms) {
  return new Promise((r) => { wake = r; setTimeout(r, ms); });
}

function reconnectNow() {
  if (stream) stream.abort();
  if (wake) wake();
}

async function connect() {
  const live = $("live");
  for (;;) {
    try {
      const h = headers(false);
      if (lastEventId) h["Last-Event-ID"] = lastEventId;
      stream = new AbortController();
      const res = await fetch("/api/events?compact=true",
                              {headers: h, cache: "no-store", signal: stream.signal});
      if (!res.ok) {
        const err = await res.json().catch(() => ({error: res.statusText}));
        live.textContent = `events: ${res.status} ${err.error || ""}`;
        live.dataset.live = "off";
        await pause(res.status === 401 ? 5000 : 1000);
        continue;
      }
      live.textContent = "events: live";
      live.dataset.live = "on";
      if (!lastEventId) seedPlans();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          parseBlock(block);
        }
      }
    } catch (e) {
      // network error: reconnect below, resuming after the last event seen
    }
    live.textContent = "events: reconnecting";
    live.dataset.live = "off";
    await pause(1000);
  }
}

function parseBlock(block) {
  let id = null, type = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) id = line.slice(4);
    else if (line.startsWith("event: ")) type = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  if (id) lastEventId = id;
  pending.push([type, JSON.parse(data)]);
  if (!frameAsked) {
    frameAsked = true;
    requestAnimationFrame(frame);
  }
}

function apply(type, e) {
  eventCount++;
  if (type === "trading_state") {
    showState(e.decision.replace("TRADING_", ""), e);
    return;
  }
  if (DENIALS.has(e.decision)) {
    const d = denials.get(e.reason) || {count: 0};
    denials.set(e.reason, {count: d.count + 1, layer: e.layer, plan: e.plan_id});
  }
  if (!e.plan_id || !LAYERS.includes(e.layer) || e.decision === "LEDGER_APPLY") return;
  let p = plans.get(e.plan_id);
  if (!p) {
    p = {id: e.plan_id, symbol: e.symbol, action: e.action || "", t0: e.ts, steps: {},
         outcome: "pending"};
    plans.set(e.plan_id, p);
    planCount++;
    if (plans.size > MAX_PLANS) plans.delete(plans.keys().next().value);
  }
  if (e.layer === "planner") {
    if (e.decision === "DUPLICATE") return;
    p.t0 = e.ts;
    if (e.action) p.action = e.action;
    if (e.decision !== "EXECUTE") p.outcome = e.decision.toLowerCase();
  }
  p.steps[e.layer] = e;
  if (e.layer === "executor") {
    p.outcome = (e.result && e.result.status) || e.decision.toLowerCase();
    schedulePositions();
  }
}

async function seedPlans() {
  // The newest plans as they stand, under the live ones (their per-layer steps come from
  // the plan page; the live view draws them for plans seen as they happen).
  const res = await api("GET", "/api/plans?last=30");
  if (!res.ok) return;
  for (const row of res.data.reverse()) {
    if (plans.has(row.plan_id)) continue;
    plans.set(row.plan_id, {
      id: row.plan_id, symbol: row.symbol, action: row.action, t0: row.created_at,
      steps: {planner: {decision: row.decision, reason: row.reason_codes, ts: row.created_at}},
      outcomeOnly: row.state ? {decision: row.state, reason: row.state_reason} : null,
      outcome: (row.state || row.decision || "pending").toLowerCase(),
    });
  }
  if (!frameAsked) {
    frameAsked = true;
    requestAnimationFrame(frame);
  }
}

function frame() {
  frameAsked = false;
  const batch = pending;
  pending = [];
  for (const [type, e] of batch) apply(type, e);
  drawPlans();
  drawDenials();
  const now = performance.now();
  if (now - rateMark.t > 1000) {
    const s = (now - rateMark.t) / 1000;
    $("rate").textContent = `${((planCount - rateMark.plans) / s).toFixed(0)} plans/s · ` +
      `${((eventCount - rateMark.events) / s).toFixed(0)} events/s`;
    rateMark = {t: now, events: eventCount, plans: planCount};
  }
}

function cell(p, layer) {
  const st = p.steps[layer] || (layer === "executor" ? p.outcomeOnly : null);
  if (!st) return `<td class="step empty">·</td>`;
  const ms = p.t0 && st.ts ? `+${Math.max(0, (st.ts - p.t0) * 1000).toFixed(1)} ms` : "";
  const shown = layer === "executor" && st.result && st.result.status
    ? st.result.status : st.decision;
  const good = ["EXECUTE", "GRANT", "ALLOW", "EXECUTED", "filled", "dry_run"].includes(shown);
  return `<td class="step ${good ? "pass" : "stop"}"><b>${esc(shown)}</b> ` +
    `<span class="reason">${esc(st.reason)}</span> <span class="ms">${ms}</span></td>`;
}

function drawPlans() {
  const rows = [];
  const all = Array.from(plans.values());
  for (let i = all.length - 1; i >= 0 && rows.length < DRAWN_PLANS; i--) {
    const p = all[i];
    rows.push(`<tr data-plan="${esc(p.id)}" data-outcome="${esc(p.outcome)}">` +
      `<td>${esc(utc(p.t0).slice(11))}</td>` +
      `<td><a href="#/plan/${encodeURIComponent(p.id)}">${esc(p.id)}</a></td>` +
      `<td>${esc(p.symbol)}</td><td>${esc(p.action)}</td>` +
      LAYERS.map((l) => cell(p, l)).join("") + "</tr>");
  }
  $("plans").innerHTML = rows.join("");
  $("pipeline-note").textContent = `(newest ${Math.min(DRAWN_PLANS, plans.size)} of ` +
    `${plans.size} kept)`;
}

function drawDenials() {
  const rows = Array.from(denials.entries()).sort((a, b) => b[1].count - a[1].count);
  $("denial-rows").innerHTML = rows.slice(0, 30).map(([reason, d]) =>
    `<tr data-reason="${esc(reason)}"><td>${esc(reason)}</td><td>${d.count}</td>` +
    `<td>${esc(d.layer)}</td><td><a href="#/plan/${encodeURIComponent(d.plan)}">` +
    `${esc(d.plan)}</a></td></tr>`).join("");
}

// -- trading state -----------------------------------------------------------------------
function showState(state, change) {
  $("state").textContent = "trading: " + state;
  $("state").dataset.state = state;
  $("state-now").textContent = state;
  if (change) {
    const who = change.operator || (change.context && change.context.operator) || "?";
    $("state-since").textContent = `since ${utc(change.ts)} UTC by ${who}: ${change.reason}`;
  }
}

async function loadState() {
  const res = await api("GET", "/api/trading-state");
  if (res.ok) showState(res.data.state, res.data.last_change);
}

let askedAction = null;
function askState(action) {
  askedAction = action;
  $("state-confirm-text").textContent =
    `${action.toUpperCase()} trading? Reason: "${$("state-reason").value || "(none)"}"`;
  $("state-confirm").hidden = false;
}

async function confirmState() {
  $("state-confirm").hidden = true;
  const res = await api("POST", `/api/trading-state/${askedAction}`,
                        {reason: $("state-reason").value});
  if (res.ok) {
    say("state-msg", `trading ${res.data.before} → ${res.data.after} (by ${res.data.operator})`);
    showState(res.data.after);
  } else {
    say("state-msg", `refused (${res.status}): ${res.data.error}`, true);
  }
}

// -- proposals ---------------------------------------------------------------------------
async function propose(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = {symbol: f.get("symbol"), action: f.get("action"),
                kill_score: f.get("kill_score"), tranche: Number(f.get("tranche") || 0)};
  const res = await api("POST", "/api/proposals", body);
  if (res.ok) say("propose-msg", `proposal ${res.data.proposal_id} → plan ${res.data.plan_id}`);
  else say("propose-msg", `refused (${res.status}): ${res.data.error}`, true);
}

// -- positions and reconcile -------------------------------------------------------------
let positionsTimer = null;
function schedulePositions() {
  if (positionsTimer === null) positionsTimer = setTimeout(loadPositions, 500);
}

async function loadPositions() {
  positionsTimer = null;
  const res = await api("GET", "/api/positions");
  if (!res.ok) return;
  $("position-rows").innerHTML = res.data.positions.map((p) => {
    const bad = p.verdict !== "ok";
    return `<tr data-symbol="${esc(p.symbol)}" class="${bad ? "mismatch" : ""}">` +
      `<td>${esc(p.symbol)}</td><td>${esc(p.exchange_amt)}</td><td>${esc(p.ledger_amt)}</td>` +
      `<td>${esc(p.diff ?? "-")}</td><td>${esc(p.tolerance ?? "-")}</td>` +
      `<td>${p.snapshot_age_s ?? "-"} s</td>` +
      `<td>${p.in_flight_plan ? esc(p.in_flight_plan) + " " + (p.in_flight_ttl_s ?? "") + " s"
                              : "-"}</td>` +
      `<td class="verdict">${esc(p.verdict)}</td>` +
      `<td><button class="reconcile" data-symbol="${esc(p.symbol)}">Reconcile…</button></td></tr>`;
  }).join("");
}

let reconcileSymbol = null;
async function previewReconcile(symbol) {
  reconcileSymbol = symbol;
  const res = await api("POST", `/api/reconcile/${encodeURIComponent(symbol)}`,
                        {confirm: false, reason: ""});
  if (!res.ok) {
    say("reconcile-msg", `refused (${res.status}): ${res.data.error}`, true);
    return;
  }
  const c = res.data;
  $("reconcile-text").textContent = `${symbol}: would set the ledger ${c.ledger_before} → ` +
    `${c.ledger_after} (exchange ${c.exchange_amt}, diff ${c.diff}), epoch ` +
    `${c.epoch_before} → ${c.epoch_after}` +
    (c.in_flight_plan ? `. Plan ${c.in_flight_plan} is in flight: wait for its result.` : "");
  $("reconcile").hidden = false;
  say("reconcile-msg", "");
}

async function confirmReconcile() {
  $("reconcile").hidden = true;
  const res = await api("POST", `/api/reconcile/${encodeURIComponent(reconcileSymbol)}`,
                        {confirm: true, reason: $("reconcile-reason").value});
  if (res.ok) {
    say("reconcile-msg", `reconciled ${res.data.symbol}: ledger ${res.data.ledger_after}, ` +
        `epoch ${res.data.epoch_after}`);
  } else {
    say("reconcile-msg", `refused (${res.status}): ${res.data.error}`, true);
  }
  loadPositions();
}

// -- health --------------------------------------------------------------------------------
async function loadStatus() {
  const res = await api("GET", "/api/status");
  const badge = $("health");
  if (!res.ok) {
    badge.textContent = `health: ${res.status} ${res.data.error || ""}`;
    badge.dataset.healthy = "0";
    return;
  }
  const h = res.data;
  badge.textContent = h.healthy ? "health: healthy" : `health: ${h.problems.length} problem(s)`;
  badge.dataset.healthy = h.healthy ? "1" : "0";
  $("service-rows").innerHTML = Object.entries(h.services).map(([name, s]) =>
    `<tr class="${s.up ? "" : "mismatch"}"><td>${esc(name)}</td><td>${s.up ? "up" : "down"}</td>` +
    `<td>${s.up ? s.age_s + " s ago" : "-"}</td><td>${esc(s.pid ?? "-")}</td></tr>`).join("");
  $("group-rows").innerHTML = h.groups.map((g) =>
    `<tr><td>${esc(g.stream)} / ${esc(g.group)}</td><td>${esc(g.service)}</td>` +
    `<td>${g.exists ? esc(g.lag ?? "-") : "missing"}</td><td>${esc(g.pending ?? "-")}</td></tr>`)
    .join("");
  $("problems").innerHTML = [
    ...h.problems.map((p) => `<li class="bad">${esc(p)}</li>`),
    ...h.warnings.map((w) => `<li class="warn">${esc(w)}</li>`),
  ].join("");
}

// -- plan page ---------------------------------------------------------------------------
async function showPlan(id) {
  $("main").hidden = true;
  $("plan-page").hidden = false;
  $("plan-title").textContent = `plan ${id}`;
  $("plan-steps").innerHTML = "";
  const res = await api("GET", `/api/plans/${encodeURIComponent(id)}`);
  if (!res.ok) {
    $("plan-outcome").textContent = `${res.status}: ${res.data.error}`;
    return;
  }
  const x = res.data;
  const plan = x.plan || {};
  $("plan-outcome").innerHTML = `${esc(x.symbol)} ${esc(plan.action || "")} mode ` +
    `${esc(plan.mode || "?")} → outcome <b id="plan-outcome-value">${esc(x.outcome)}</b>`;
  const t0 = x.steps.length ? x.steps[0].ts : 0;
  $("plan-steps").innerHTML = x.steps.map((s) =>
    `<tr><td>${esc(utc(s.ts))}</td><td>${((s.ts - t0) * 1000).toFixed(1)}</td>` +
    `<td>${esc(s.layer)}</td><td><b>${esc(s.decision)}</b></td><td>${esc(s.reason)}</td>` +
    `<td class="detail">${esc(s.detail)}</td></tr>`).join("");
  const live = x.permits_now.filter((p) => p.present);
  $("plan-permits").textContent = "permits now: " + (live.length
    ? live.map((p) => `${p.layer} ${p.decision} ttl ${p.ttl_s}s`).join(", ")
    : "none (consumed or expired)");
}

function route() {
  const m = location.hash.match(/^#\/plan\/(.+)$/);
  if (m) {
    showPlan(decodeURIComponent(m[1]));
  } else {
    $("plan-page").hidden = true;
    $("main").hidden = false;
  }
}

// -- start ---------------------------------------------------------------------------------
function refresh() {
  loadStatus();
  loadPositions();
  loadState();
}

document.addEventListener("DOMContentLoaded", () => {
  $("operator").value = operatorName();
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("permitchain.token", $("token").value.trim());
    sessionStorage.setItem("permitchain.operator", $("operator").value.trim());
    $("token").value = "";
    refresh();
    reconnectNow();
  });
  for (const b of document.querySelectorAll("#killswitch [data-action]")) {
    b.addEventListener("click", () => askState(b.dataset.action));
  }
  $("state-confirm-yes").addEventListener("click", confirmState);
  $("state-confirm-no").addEventListener("click", () => { $("state-confirm").hidden = true; });
  $("propose-form").addEventListener("submit", propose);
  $("position-rows").addEventListener("click", (ev) => {
    const b = ev.target.closest("button.reconcile");
    if (b) previewReconcile(b.dataset.symbol);
  });
  $("reconcile-yes").addEventListener("click", confirmReconcile);
  $("reconcile-no").addEventListener("click", () => { $("reconcile").hidden = true; });
  window.addEventListener("hashchange", route);
  route();
  refresh();
  setInterval(refresh, REFRESH_MS);
  connect();
});
