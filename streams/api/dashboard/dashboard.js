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
    error.data = data;
    throw error;
  }
  return data;
}

function showLogin(message) {
  $("board").hidden = true;
  $("views").hidden = true;
  for (const view of document.querySelectorAll(".view")) view.hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

function fmt(value, digits) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return "–";
  const text = Number(value).toLocaleString("en", { maximumFractionDigits: digits || 0 });
  return /^-0(\.0*)?$/.test(text) ? text.slice(1) : text;  // never "-0"
}

const NO_DATA = "not enough data yet";

const SVG = "http://www.w3.org/2000/svg";
const SERIES_CLASSES = 5;  // .s0 ... .s4 in the style sheet (no inline styles under the CSP)

function svgElement(parent, tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  parent.appendChild(node);
  return node;
}

function clock(ms, seconds) {
  return new Date(ms).toISOString().slice(11, seconds ? 19 : 16);
}

// A time chart drawn in the element's own pixels: y axis with its unit, x axis in UTC,
// one line per series (gaps where a value is missing), an optional interval band,
// a zero line when values cross it, and vertical markers (drifts).
// series: [{name, points: [{t, v, low, high}]}]; options: {unit, digits, min, max, markers}
function drawTimeChart(svg, series, options) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const width = Math.max(svg.clientWidth, 200);
  const height = Math.max(svg.clientHeight, 100);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  const left = 52, right = 10, top = 24, bottom = 20;
  const all = series.flatMap((s) => s.points.filter((p) => p.v !== null && p.v !== undefined));
  svgElement(svg, "text", { x: 4, y: 11 }, options.unit);
  const times = series.flatMap((s) => s.points.map((p) => p.t));
  if (all.length < 2 || Math.max(...times) - Math.min(...times) <= 0) {
    svgElement(svg, "text", { x: width / 2, y: height / 2 + 4, "text-anchor": "middle", class: "empty" },
      "not enough data yet");
    return;
  }
  const values = all.flatMap((p) => [p.v, p.low, p.high]).filter((v) => v !== null && v !== undefined);
  let low = options.min !== undefined ? options.min : Math.min(0, ...values);
  let high = options.max !== undefined ? options.max : Math.max(...values);
  if (high - low < 1e-9) { high = low + 1; }
  const pad = (high - low) * 0.05;
  if (options.max === undefined) high += pad;
  if (options.min === undefined && low < 0) low -= pad;
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - (v - low) / (high - low)) * (height - top - bottom);
  for (let i = 0; i <= 2; i++) {  // three horizontal guides with their values
    const v = low + ((high - low) * i) / 2;
    svgElement(svg, "line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid-line" });
    svgElement(svg, "text", { x: left - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v, options.digits));
  }
  svgElement(svg, "line", { x1: left, x2: left, y1: top, y2: height - bottom, class: "axis" });
  svgElement(svg, "line", { x1: left, x2: width - right, y1: height - bottom, y2: height - bottom, class: "axis" });
  const ticks = Math.max(2, Math.min(6, Math.floor((width - left - right) / 90)));
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + ((t1 - t0) * i) / ticks;
    svgElement(svg, "text", { x: x(t), y: height - 5, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" },
      clock(t, t1 - t0 < 600000) + (i === ticks ? " UTC" : ""));
  }
  if (low < 0 && high > 0) {
    svgElement(svg, "line", { x1: left, x2: width - right, y1: y(0), y2: y(0), class: "zero" });
  }
  series.forEach((s, index) => {
    const colour = "s" + (index % SERIES_CLASSES);
    const banded = s.points.filter((p) => p.low !== null && p.low !== undefined && p.high !== null && p.high !== undefined);
    if (banded.length >= 2) {
      const upper = banded.map((p) => x(p.t).toFixed(1) + "," + y(p.high).toFixed(1));
      const lower = banded.slice().reverse().map((p) => x(p.t).toFixed(1) + "," + y(p.low).toFixed(1));
      svgElement(svg, "polygon", { points: upper.concat(lower).join(" "), class: "band" });
    }
    let run = [];
    const flush = () => {
      if (run.length >= 2) svgElement(svg, "polyline", { points: run.join(" "), class: colour });
      else if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        svgElement(svg, "circle", { cx, cy, r: 2.5, class: colour });
      }
      run = [];
    };
    for (const p of s.points) {
      if (p.v === null || p.v === undefined) flush();
      else run.push(x(p.t).toFixed(1) + "," + y(p.v).toFixed(1));
    }
    flush();
    if (series.length > 1) {
      svgElement(svg, "text", { x: width - right - 4, y: 11 + 12 * index, "text-anchor": "end", class: "legend " + colour },
        s.name);
    }
  });
  for (const m of options.markers || []) {
    if (m.t < t0 || m.t > t1) continue;
    svgElement(svg, "line", { x1: x(m.t), x2: x(m.t), y1: top, y2: height - bottom, class: "drift" });
    svgElement(svg, "text", { x: x(m.t) + 3, y: top + 10, class: "drift-label" }, m.label);
  }
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
      has ? fmt(clicks.rate_treated, 3) : NO_DATA, has ? fmt(clicks.rate_holdout, 3) : NO_DATA,
      has ? (clicks.difference > 0 ? "+" : "") + fmt(clicks.difference, 3) : NO_DATA,
      has ? fmt(clicks.low, 3) + " to " + fmt(clicks.high, 3) : NO_DATA], [2, 3, 4, 5, 6]);
  }));
}

function renderModels(models) {
  fill("models", models.quality.map((q) => {
    const learnt = hasFigures(q);
    return row([q.model, fmt(q.examples), learnt ? fmt(q.roc_auc, 3) : NO_DATA,
      learnt ? fmt(q.log_loss, 3) : NO_DATA, fmt(q.drifts)], [1, 2, 3, 4]);
  }));
}

function renderHistory(history) {
  const points = history.points.map((p) => ({ ...p, t: Date.parse(p.at) }));
  const line = (name, key) => [{ name, points: points.map((p) => ({ t: p.t, v: p[key] })) }];
  drawTimeChart($("chart-throughput"), line("events/s", "events_per_s"),
    { unit: "events/s", digits: 1 });
  drawTimeChart($("chart-lag"), line("lag", "lag"), { unit: "messages behind", digits: 0 });
  const tags = points.map((p, i) => ({ t: p.t, v: i ? p.tag_changes - points[i - 1].tag_changes : null }));
  drawTimeChart($("chart-tags"), [{ name: "tag changes", points: tags }],
    { unit: "interest tag changes per " + history.step_s + " s", digits: 0 });
}

// Before its first labels a model has no figures, and River's ROC AUC stays 0 until both
// outcomes have been seen: both mean "not enough data yet", not a score of 0.
function hasFigures(q) {
  return q.examples > 0 && q.roc_auc !== null && q.roc_auc !== 0;
}

const GOAL_UNITS = { clicks: "clicks per send", conversions: "orders per send", revenue: "revenue per send" };

function renderTrends(trends) {
  const points = trends.points.map((p) => ({ ...p, t: Date.parse(p.at) }));
  const campaigns = new Map();
  for (const p of points) {
    for (const c of p.campaigns) {
      if (!campaigns.has(c.campaign_id)) campaigns.set(c.campaign_id, { goal: c.goal, points: [] });
      campaigns.get(c.campaign_id).points.push({ t: p.t, v: c.difference, low: c.low, high: c.high,
        sends: c.sends, held: c.held_out });
    }
  }
  const box = $("uplift-charts");
  for (const [id, c] of campaigns) {
    let figure = document.getElementById("uplift-" + id);
    if (!figure) {
      figure = element("figure", null, "small-chart");
      figure.id = "uplift-" + id;
      figure.appendChild(element("figcaption"));
      svgElement(figure, "svg", { class: "chart", role: "img", "aria-label": "uplift of " + id + " over time" });
      box.appendChild(figure);
    }
    const last = c.points[c.points.length - 1];
    figure.firstChild.textContent = id + " — " + fmt(last.sends) + " sent, " + fmt(last.held) +
      " held out";
    drawTimeChart(figure.querySelector("svg"), [{ name: id, points: c.points }],
      { unit: "uplift, " + (GOAL_UNITS[c.goal] || c.goal) + " (95% interval shaded)", digits: 3 });
  }
  $("uplift-note").textContent = campaigns.size ? "" : NO_DATA;
  const models = new Map();
  for (const p of points) {
    for (const m of p.models) {
      if (!models.has(m.model)) models.set(m.model, []);
      const learnt = hasFigures(m);
      models.get(m.model).push({ t: p.t, auc: learnt ? m.roc_auc : null, loss: learnt ? m.log_loss : null });
    }
  }
  const markers = trends.drift.map((d) => ({ t: Date.parse(d.at), label: "drift " + d.model }));
  const series = (key) => [...models].map(([name, ps]) => ({ name, points: ps.map((p) => ({ t: p.t, v: p[key] })) }));
  drawTimeChart($("chart-auc"), series("auc"), { unit: "ROC AUC (0.5 = chance)", digits: 2, min: 0, max: 1, markers });
  drawTimeChart($("chart-logloss"), series("loss"), { unit: "log loss (lower is better)", digits: 2, min: 0, markers });
}

// --- views -------------------------------------------------------------------------

let view = "overview";

function showView(name) {
  view = name;
  $("board").hidden = name !== "overview";
  $("proposals-view").hidden = name !== "proposals";
  $("customer-view").hidden = name !== "customer";
  for (const tab of document.querySelectorAll(".tab")) {
    tab.setAttribute("aria-pressed", String(tab.dataset.view === name));
  }
  refresh();
}

function utc(iso) {
  if (!iso) return "–";
  return iso.slice(0, 16).replace("T", " ");
}

function relative(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  const size = Math.abs(seconds);
  const text = size < 90 ? Math.round(size) + " s" : size < 5400 ? Math.round(size / 60) + " min"
    : size < 172800 ? Math.round(size / 3600) + " h" : Math.round(size / 86400) + " days";
  return seconds >= 0 ? "in " + text : text + " ago";
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// --- proposals -------------------------------------------------------------------------

const ANSWERS = { approved: "approved: one send trigger went out", rejected: "rejected: nothing is sent",
  expired: "expired: nobody answered in time", withdrawn: "withdrawn: consent no longer allows it" };
const cards = new Map();

function answerText(p) {
  let text = ANSWERS[p.status] || p.status;
  if (p.resolved_by) text += " · by " + p.resolved_by;
  if (p.resolved_at) text += " · " + utc(p.resolved_at) + " UTC";
  if (p.note) text += " · “" + p.note + "”";
  return text;
}

function showAnswer(card, p) {
  card.classList.add("resolved", p.status);
  const answer = card.querySelector(".answer");
  answer.textContent = answerText(p);
  for (const control of card.querySelectorAll("button, input")) control.disabled = true;
}

function proposalCard(p) {
  const card = element("article", null, "proposal");
  card.id = "proposal-" + p.proposal_id;
  card.dataset.proposalId = p.proposal_id;
  const head = element("h3");
  head.appendChild(element("span", p.campaign_id, "campaign"));
  head.appendChild(element("span", " · " + p.channel + " · send " + utc(p.send_at) + " UTC (" +
    relative(p.send_at) + ")", "muted"));
  card.appendChild(head);
  const facts = element("dl");
  const who = element("button", p.customer_id, "link customer-ref");
  who.type = "button";
  who.title = "Look up this customer";
  who.addEventListener("click", () => lookUp(p.customer_id));
  const add = (term, value) => {
    facts.appendChild(element("dt", term));
    const dd = element("dd");
    if (typeof value === "string") dd.textContent = value; else dd.appendChild(value);
    facts.appendChild(dd);
  };
  add("customer", who);
  add("content", p.content_id + " (" + p.variant_language + ")");
  add("proposed", utc(p.created_at) + " UTC, waits until " + utc(p.expires_at) + " UTC");
  card.appendChild(facts);
  card.appendChild(element("p", "Why:", "why"));
  const reasons = element("ul", null, "reasons");
  for (const reason of p.reasons) reasons.appendChild(element("li", reason));
  card.appendChild(reasons);
  const actions = element("div", null, "actions");
  const approve = element("button", "Approve", "approve");
  approve.type = "button";
  const note = element("input");
  note.type = "text";
  note.maxLength = 500;
  note.placeholder = "reason for rejecting (optional)";
  note.setAttribute("aria-label", "reason for rejecting");
  note.className = "reject-reason";
  const reject = element("button", "Reject", "reject");
  reject.type = "button";
  const operator = role === "operator";
  for (const control of [approve, note, reject]) {
    control.disabled = !operator;
    actions.appendChild(control);
  }
  if (!operator) actions.appendChild(element("span", "Viewers see proposals; an operator token answers them.", "muted"));
  approve.addEventListener("click", () => resolveProposal(card, "approve"));
  reject.addEventListener("click", () => resolveProposal(card, "reject", note.value.trim()));
  card.appendChild(actions);
  card.appendChild(element("p", "", "answer"));
  return card;
}

async function resolveProposal(card, action, reason) {
  $("proposal-error").textContent = "";
  const id = card.dataset.proposalId;
  for (const control of card.querySelectorAll("button, input")) control.disabled = true;
  try {
    const body = reason ? { reason } : {};
    showAnswer(card, await api("POST", "/v1/proposals/" + encodeURIComponent(id) + "/" + action, body));
  } catch (error) {
    if (error.data && error.data.status && error.data.status !== "proposed") {
      showAnswer(card, error.data);  // answered elsewhere (or expired): show that answer
      return;
    }
    $("proposal-error").textContent = error.message;
    for (const control of card.querySelectorAll("button, input")) control.disabled = role !== "operator";
  }
}

function renderProposals(open, recent) {
  const list = $("proposals");
  const byId = new Map(recent.map((p) => [p.proposal_id, p]));
  for (const p of open) {
    if (!cards.has(p.proposal_id)) cards.set(p.proposal_id, proposalCard(p));
  }
  for (const [id, card] of cards) {
    if (!open.some((p) => p.proposal_id === id) && !card.classList.contains("resolved")) {
      const now = byId.get(id);
      if (now) showAnswer(card, now); else cards.delete(id);
    }
  }
  // Newest first, as the API lists them; answered cards stay until the page reloads.
  const order = [...cards.values()];
  const created = new Map([...open, ...recent].map((p) => [p.proposal_id, p.created_at]));
  order.sort((a, b) => String(created.get(b.dataset.proposalId) || "").localeCompare(
    String(created.get(a.dataset.proposalId) || "")));
  order.forEach((card) => list.appendChild(card));
  $("proposal-count").textContent = open.length ? String(open.length) : "";
  $("proposals-note").textContent = open.length
    ? (open.length >= 100 ? "The 100 newest of more" : open.length) + " open proposal" +
      (open.length === 1 ? "" : "s") + "."
    : "No proposal is waiting. Campaigns with approval = true in the campaign book put their sends here.";
  fill("resolved-proposals", recent.filter((p) => p.status !== "proposed").slice(0, 20).map((p) => row(
    [p.proposal_id, p.customer_id, p.campaign_id, p.status, p.resolved_by || "–",
      utc(p.resolved_at), p.note || "–"])));
}

async function refreshProposals() {
  const open = (await api("GET", "/v1/proposals?status=proposed&limit=100")).proposals;
  const recent = (await api("GET", "/v1/proposals?limit=100")).proposals;
  renderProposals(open, recent);
}

// --- customer lookup ----------------------------------------------------------------------

let customer = null;

function lookUp(id) {
  $("customer-id").value = id;
  showView("customer");
  loadCustomer();
}

function pairs(id, entries) {
  fill(id, entries.map(([k, v]) => row([k, v === null || v === undefined || v === "" ? "–" : String(v)])));
}

function renderCustomer(c) {
  const m = c.master || {};
  pairs("customer-profile", [["customer id", c.customer_id], ["language", m.language],
    ["locale", m.locale], ["time zone", m.time_zone], ["country", m.country],
    ["birth year", m.birth_year], ["orders", c.purchases.orders],
    ["revenue", fmt(c.purchases.revenue, 2)], ["last event (UTC)", utc(c.last_event_at)],
    ...Object.entries(m.attributes || {}).map(([k, v]) => ["CRM " + k, v])]);
  const consent = Object.entries(c.consent || {}).sort();
  fill("customer-consent", consent.length ? consent.map(([purpose, e]) => row(
    [purpose, e.granted ? "granted" : "revoked", utc(e.at), e.source, e.legal_basis]))
    : [row(["no consent recorded: the strict default applies", "", "", "", ""])]);
  const interests = Object.entries(c.interests || {}).sort((a, b) => b[1].score - a[1].score);
  const tagged = {};  // topic -> "tag (since ...)"
  for (const [tag, t] of Object.entries(c.tags || {})) {
    tagged[t.topic] = (tagged[t.topic] ? tagged[t.topic] + ", " : "") + tag + " since " +
      utc(t.assigned_at) + " UTC";
  }
  fill("customer-interests", interests.length ? interests.map(([topic, i]) => row(
    [topic, fmt(i.score, 2), tagged[topic] || "–"], [1]))
    : [row(["no interests yet", "", ""])]);
  const p = c.predictions;
  pairs("customer-predictions", p ? [["chance of an order", pct(p.purchase)],
    ["chance of churning", pct(p.churn)],
    ["best send hour (local)", p.best_hour === null ? "not enough data yet" : p.best_hour + ":00"],
    ["as of (UTC)", utc(p.at)]]
    : [["predictions", "not enough data yet (or no consent to profiling)"]]);
  fill("customer-decisions", c.recent_decisions.length ? c.recent_decisions.map((d) => {
    const tr = row([utc(d.decided_at), d.channel + " / " + d.slot,
      d.content_id + " (" + d.variant_language + ")",
      d.policy + (d.score === null || d.score === undefined ? "" : " · score " + fmt(d.score, 3)),
      d.campaign_id || "–", ""]);
    const ul = element("ul", null, "reasons");
    for (const reason of d.reasons) ul.appendChild(element("li", reason));
    tr.lastChild.appendChild(ul);
    return tr;
  }) : [row(["no decision kept for this customer", "", "", "", "", ""])]);
  const history = (c.history || []).slice().reverse().slice(0, 20);
  fill("customer-history", history.length ? history.map((h) => row(
    [utc(h.occurred_at), h.kind, h.content_id || "–", h.campaign_id || "–",
      h.amount === null || h.amount === undefined ? "–" : fmt(h.amount, 2)]))
    : [row(["nothing yet (or no consent to profiling)", "", "", "", ""])]);
  fill("customer-sends", (c.pending || []).length ? c.pending.map((s) => row(
    [utc(s.send_at), s.channel, s.campaign_id, s.content_id, s.trigger_id]))
    : [row(["no sends planned or counting against a cap", "", "", "", ""])]);
}

function pct(value) {
  return value === null || value === undefined ? "not enough data yet" : fmt(value * 100, 1) + " %";
}

async function loadCustomer() {
  const id = $("customer-id").value.trim();
  $("customer-error").textContent = "";
  $("erase-confirm").hidden = true;
  if (!id) { $("customer-error").textContent = "Enter a customer id first."; return; }
  try {
    customer = await api("GET", "/v1/customers/" + encodeURIComponent(id));
    $("customer-note").textContent = "Held as of " + utc(customer.exported_at) + " UTC.";
    $("customer-panels").hidden = false;
    renderCustomer(customer);
  } catch (error) {
    customer = null;
    $("customer-panels").hidden = true;
    $("customer-note").textContent = "";
    $("customer-error").textContent = error.status === 404
      ? "Nothing is held about " + id + "." : error.message;
  }
  updateCustomerButtons();
}

function updateCustomerButtons() {
  const operator = role === "operator";
  $("customer-export").disabled = !operator || customer === null;
  $("customer-erase").disabled = !operator || !$("customer-id").value.trim();
}

function exportCustomer() {
  if (customer === null) return;
  const blob = new Blob([JSON.stringify(customer, null, 2)], { type: "application/json" });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "customer-" + customer.customer_id + ".json";
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

async function eraseCustomer() {
  const id = $("customer-id").value.trim();
  $("erase-confirm").hidden = true;
  try {
    const answer = await api("POST", "/v1/customers/" + encodeURIComponent(id) + "/erasure", {});
    $("customer-note").textContent = "Erasure requested at " + utc(answer.requested_at) +
      " UTC; the worker deletes everything held within seconds.";
  } catch (error) {
    $("customer-error").textContent = error.message;
  }
}

async function refresh() {
  try {
    if (view === "proposals") { await refreshProposals(); return; }
    if (view === "customer") return;  // a lookup is read when asked for
    const status = await api("GET", "/v1/status");
    renderStatus(status);
    renderModels(status.models);
    renderHistory(await api("GET", "/v1/history"));
    renderTrends(await api("GET", "/v1/trends"));
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
  $("views").hidden = false;
  $("role").textContent = "signed in as " + role;
  updateCustomerButtons();
  showView(view);
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
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("customer-form").addEventListener("submit", (event) => { event.preventDefault(); loadCustomer(); });
  $("customer-id").addEventListener("input", updateCustomerButtons);
  $("customer-export").addEventListener("click", exportCustomer);
  $("customer-erase").addEventListener("click", () => {
    $("erase-who").textContent = $("customer-id").value.trim();
    $("erase-confirm").hidden = false;
  });
  $("erase-yes").addEventListener("click", eraseCustomer);
  $("erase-no").addEventListener("click", () => { $("erase-confirm").hidden = true; });
  start();
});
