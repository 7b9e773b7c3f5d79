// Relevanz operator dashboard: polls the worker's API with the token given in the
// URL fragment (#token=...) or typed in, and draws what it answers. Everything shown
// is set through textContent: dead-letter reasons carry text from producers.
"use strict";

const STORE_KEY = "relevanz-token";
let token = null;
let role = null;
let timer = null;

function $(id) { return document.getElementById(id); }

function takeTokenFromFragment() {
  const match = /(?:^|&)token=([^&]+)/.exec(location.hash.slice(1));
  if (match) {
    sessionStorage.setItem(STORE_KEY, decodeURIComponent(match[1]));
    // Keep the token out of the address bar and the history.
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(STORE_KEY);
}

async function api(method, path, body) {
  const options = { method, headers: { Authorization: "Bearer " + token } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.error) || ("HTTP " + response.status));
    error.status = response.status;
    throw error;
  }
  return data;
}

function showLogin(message) {
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

function fmt(value, digits) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en", { maximumFractionDigits: digits || 0 });
}

function drawChart(svg, values) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const ns = "http://www.w3.org/2000/svg";
  // Draw in the element's own pixels, so lines and labels keep their shape.
  const width = Math.max(svg.clientWidth, 100);
  svg.setAttribute("viewBox", "0 0 " + width + " 120");
  const points = values.filter((v) => v !== null && v !== undefined);
  const max = Math.max(1, ...points);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "12");
  label.textContent = points.length ? "max " + fmt(max, 1) : "collecting…";
  svg.appendChild(label);
  if (values.length < 2) return;
  const step = width / (values.length - 1);
  const coords = values.map((v, i) =>
    (i * step).toFixed(1) + "," + (115 - ((v || 0) / max) * 95).toFixed(1));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", coords.join(" "));
  svg.appendChild(line);
}

function row(cells, numeric) {
  const tr = document.createElement("tr");
  cells.forEach((cell, i) => {
    const td = document.createElement("td");
    td.textContent = cell;
    if (numeric && numeric.includes(i)) td.className = "num";
    tr.appendChild(td);
  });
  return tr;
}

function fill(id, rows) {
  const body = $(id);
  while (body.firstChild) body.removeChild(body.firstChild);
  rows.forEach((r) => body.appendChild(r));
}

function renderControls(controls) {
  if (!controls) return;
  const paused = controls.paused;
  const badge = $("pause-state");
  badge.textContent = paused ? "PAUSED" : "sending";
  badge.className = "badge " + (paused ? "bad" : "ok");
  $("kill-switch-text").textContent = paused
    ? "All send triggers are paused on every worker."
    : "Send triggers flow. Pausing stops them on every worker at once.";
  $("paused-campaigns").textContent =
    controls.paused_campaigns.length ? controls.paused_campaigns.join(", ") : "none";
  const operator = role === "operator";
  $("pause-all").disabled = !operator || paused;
  $("resume-all").disabled = !operator || !paused;
  for (const id of ["pause-campaign", "resume-campaign", "pause-reason", "campaign-id"]) {
    $(id).disabled = !operator;
  }
}

function renderStatus(status) {
  $("version").textContent = "v" + status.version + " · " + status.consumer_group;
  const ready = $("ready");
  ready.textContent = status.ready ? "ready" : "not ready";
  ready.className = "badge " + (status.ready ? "ok" : "bad");
  ready.title = Object.entries(status.checks).map(([k, v]) => k + ": " + v).join("\n");
  const ingest = status.throughput.ingest;
  $("rate-1m").textContent = fmt(ingest["1m"].per_s, 1);
  $("rate-5m").textContent = fmt(ingest["5m"].per_s, 1);
  $("lag-total").textContent = fmt(status.lag_total);
  $("partition-count").textContent = fmt(status.partitions.length);
  $("tag-changes").textContent = fmt(status.interest_tags.tag_changes);
  const note = status.models.note || "";
  $("models-note").textContent = status.models.quality.length
    ? "" : note.charAt(0).toUpperCase() + note.slice(1) + ".";
  const c = status.counts;
  fill("counts", [
    row(["consumed", fmt(c.events_in)], [1]), row(["applied", fmt(c.applied)], [1]),
    row(["duplicates", fmt(c.duplicates)], [1]),
    row(["dead letters", fmt(c.dead_letters)], [1]),
    row(["decisions", fmt(c.decisions)], [1]), row(["send triggers", fmt(c.send_triggers)], [1]),
  ]);
  $("store-kind").textContent = status.store.kind;
  $("store-latency").textContent = status.store.reachable
    ? fmt(status.store.latency_ms, 2) + " ms" : "not reachable";
  fill("dead-letters", status.dead_letters.latest.map((d) => row(
    [d.received_at.slice(0, 19).replace("T", " "), d.source_topic, d.partition + "/" + d.offset, d.field || "–", d.reason])));
  fill("partitions", status.partitions.map((p) => row(
    [p.topic, String(p.partition), fmt(p.end_offset), fmt(p.committed_offset), fmt(p.lag)],
    [1, 2, 3, 4])));
  renderControls(status.controls);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function renderCampaigns(report) {
  fill("campaigns", report.campaigns.map((c) => {
    const clicks = c.uplift ? c.uplift.clicks : null;
    const has = clicks && clicks.difference !== null;
    return row([c.campaign_id, c.paused ? "paused" : (c.approval ? "approval" : "on"),
      fmt(c.treated.sends), fmt(c.holdout.sends),
      has ? fmt(clicks.rate_treated, 3) : "–", has ? fmt(clicks.rate_holdout, 3) : "–",
      has ? (clicks.difference >= 0 ? "+" : "") + fmt(clicks.difference, 3) : "–",
      has ? fmt(clicks.low, 3) + " to " + fmt(clicks.high, 3) : "–"], [2, 3, 4, 5, 6]);
  }));
}

function renderModels(models) {
  fill("models", models.quality.map((q) => row(
    [q.model, fmt(q.examples), fmt(q.roc_auc, 3), fmt(q.log_loss, 3), fmt(q.drifts)],
    [1, 2, 3, 4])));
}

function renderHistory(history) {
  const points = history.points;
  drawChart($("chart-throughput"), points.map((p) => p.events_per_s));
  drawChart($("chart-lag"), points.map((p) => p.lag));
  const tags = points.map((p, i) => (i ? p.tag_changes - points[i - 1].tag_changes : 0));
  drawChart($("chart-tags"), tags);
}

async function refresh() {
  try {
    const status = await api("GET", "/v1/status");
    renderStatus(status);
    renderModels(status.models);
    renderHistory(await api("GET", "/v1/history"));
    renderCampaigns(await api("GET", "/v1/campaigns"));
  } catch (error) {
    if (error.status === 401) {
      sessionStorage.removeItem(STORE_KEY);
      showLogin("That token was not accepted.");
      return;
    }
    $("updated").textContent = "update failed: " + error.message;
  }
}

async function control(path) {
  $("control-error").textContent = "";
  const reason = $("pause-reason").value.trim();
  try {
    renderControls(await api("POST", path, reason ? { reason } : {}));
  } catch (error) {
    $("control-error").textContent = error.message;
  }
}

async function campaignControl(action) {
  const id = $("campaign-id").value.trim();
  if (!id) {
    $("control-error").textContent = "Enter the id of the campaign first.";
    return;
  }
  await control("/v1/controls/campaigns/" + encodeURIComponent(id) + "/" + action);
}

async function start() {
  token = takeTokenFromFragment();
  if (!token) { showLogin(""); return; }
  try {
    role = (await api("GET", "/v1/me")).role;
  } catch (error) {
    sessionStorage.removeItem(STORE_KEY);
    showLogin(error.status === 401 ? "That token was not accepted." : error.message);
    return;
  }
  $("login").hidden = true;
  $("board").hidden = false;
  $("role").textContent = "signed in as " + role;
  await refresh();
  if (timer === null) timer = setInterval(refresh, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(STORE_KEY, $("token").value.trim());
    start();
  });
  $("pause-all").addEventListener("click", () => control("/v1/controls/pause"));
  $("resume-all").addEventListener("click", () => control("/v1/controls/resume"));
  $("pause-campaign").addEventListener("click", () => campaignControl("pause"));
  $("resume-campaign").addEventListener("click", () => campaignControl("resume"));
  start();
});
