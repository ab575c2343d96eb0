// Staff pages: facilitator dashboard, counsellor queue, ops tools. Text is always text.
import { api, el, timeOf, newId, Connection } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const S = { token: null, user: null, conn: null, room: null, rooms: new Map(), alerts: new Map(),
  held: new Map(), cases: new Map(), caseOpen: null, titles: new Map(), joined: new Set(),
  liveAlerts: 0 };
const ALERT_RANK = { risk: 0, grooming: 1, abuse: 2, contact: 3, evasion: 4, flood: 5,
  report: 6, unanswered: 7 };

// ---------------------------------------------------------------- sign in
$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    const res = await api("/api/login", { method: "POST",
      body: { username: $("username").value, password: $("password").value } });
    sessionStorage.setItem("staffToken", res.token);
    sessionStorage.setItem("staffUser", JSON.stringify(res.user));
    start(res.token, res.user);
  } catch (err) {
    $("login-error").textContent = err.message;
  }
});

function start(token, user) {
  S.token = token;
  S.user = user;
  $("login").hidden = true;
  $("who").textContent = `Signed in as ${user.name} (${user.role})`;
  if (user.role === "facilitator" || user.role === "ops") {
    $("facilitator").hidden = false;
    refreshRooms();
    S.roomTimer = setInterval(refreshRooms, 5000);
  }
  if (user.role === "counsellor") $("counsellor").hidden = false;
  if (user.role === "ops") { $("ops").hidden = false; refreshAudit(); }
  S.conn = new Connection(token, { onEvent, onStatus });
  S.conn.start();
}

function onStatus(status, code) {
  $("status").textContent = status === "reconnecting" ? "Connection lost. Reconnecting…" :
    status === "closed" ? `Disconnected (${code}). Please sign in again.` : "";
  if (status === "closed" && code === 4401) sessionStorage.clear();
}

// ---------------------------------------------------------------- rooms
function count(n, one, many) { return `${n} ${n === 1 ? one : many}`; }

async function refreshRooms() {
  try {
    const { rooms } = await api("/api/rooms", { token: S.token });
    for (const r of rooms) S.titles.set(r.id, r);
    renderAlerts();
    $("rooms").replaceChildren(...rooms.map((r) => el("li", { class: r.paused ? "paused" : "" },
      el("button", { class: "link", onclick: () => openRoom(r) }, r.title),
      el("span", { class: "small" }, ` ${count(r.participants, "young person", "young people")}, ${count(r.facilitators, "facilitator", "facilitators")}`,
        r.paused ? " · paused" : "", r.slow_mode_s ? ` · slow ${r.slow_mode_s}s` : ""))));
  } catch (err) {
    if (err.status === 401) onStatus("closed", 4401);
  }
}

function openRoom(r) {
  S.room = r.id;
  $("room-heading").textContent = r.title;
  $("transcript").replaceChildren();
  $("room-controls").hidden = S.user.role !== "facilitator";
  $("staff-compose").hidden = false;
  S.conn.lastSeq[r.id] = 0;  // a fresh transcript: show the history the server sends
  S.conn.send({ type: "join", room: r.id });
  S.joined.add(r.id);
}

$("pause").addEventListener("click", () => {
  const paused = $("pause").dataset.paused === "true";
  S.conn.send(paused ? { type: "resume", room: S.room } :
    { type: "pause", room: S.room, reason: "paused by facilitator" });
});
$("slow").addEventListener("change", () => {
  S.conn.send({ type: "slow_mode", room: S.room, seconds: Number($("slow").value) });
});
$("staff-compose").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("staff-text").value.trim();
  if (text && S.conn.send({ type: "send", room: S.room, id: newId(), text })) $("staff-text").value = "";
});

function renderRoom(r) {
  S.rooms.set(r.room, r);
  if (r.room !== S.room) {
    if (S.caseOpen && r.room === S.caseOpen.private_room && r.closed) endCase();
    return;
  }
  $("pause").textContent = r.paused ? "Resume room" : "Pause room";
  $("pause").dataset.paused = String(r.paused);
  $("slow").value = String(r.slow_mode_s);
  $("members").replaceChildren(...r.members.map((m) => memberRow(m)));
}

function memberRow(m) {
  const row = el("li", {}, el("span", { class: "who" }, m.name),
    el("span", { class: "small" }, ` ${m.role}${m.muted ? " · muted" : ""}`));
  if (m.role !== "participant" || S.user.role !== "facilitator") return row;
  const minutes = el("select", { "aria-label": `Mute ${m.name} for` },
    ...[5, 15, 60].map((n) => el("option", { value: n }, `${n} min`)));
  const urgency = el("select", { "aria-label": `Urgency for ${m.name}` },
    ...["routine", "urgent", "emergency"].map((u) => el("option", { value: u }, u)));
  const note = el("input", { "aria-label": `Note for the counsellor about ${m.name}`, placeholder: "Note" });
  const act = (frame) => () => S.conn.send({ room: S.room, participant: m.id, ...frame });
  row.append(el("span", { class: "actions" },
    m.muted ? el("button", { onclick: act({ type: "unmute" }) }, "Unmute") :
      el("span", {}, minutes, el("button", { onclick: () => act({ type: "mute", minutes: Number(minutes.value) })() }, "Mute")),
    el("button", { onclick: act({ type: "remove", reason: "removed by facilitator" }) }, "Remove"),
    urgency, note,
    el("button", { onclick: () => act({ type: "escalate", urgency: urgency.value, note: note.value })() }, "Escalate")));
  return row;
}

function renderMessage(list, m) {
  if (list.querySelector(`[data-seq="${m.seq}"][data-room="${m.room}"]`)) return;
  const staff = m.from.role !== "participant";
  const item = el("li", { class: `msg theirs ${staff ? "staff" : ""}`, "data-seq": m.seq, "data-room": m.room },
    el("span", { class: "who" }, m.from.name, staff ? el("span", { class: "badge" }, m.from.role) : null),
    el("span", { class: "text" }, m.text), el("span", { class: "meta" }, timeOf(m.ts)));
  if (S.user.role === "facilitator" && list === $("transcript")) {
    item.append(el("button", { class: "link", onclick: () => S.conn.send({ type: "redact", room: m.room, seq: m.seq, reason: "removed by facilitator" }) }, "Remove message"));
  }
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

// ---------------------------------------------------------------- review queue
function renderHeld() {
  const items = [...S.held.values()].sort((a, b) => a.held.ts - b.held.ts);
  $("held").replaceChildren(...items.map(({ room, held }) => {
    const reveal = el("details", {}, el("summary", {}, "Content warning: show message"),
      el("p", { class: "held-text" }, held.text));
    const decide = (type) => () => {
      S.conn.send({ type, room, held: held.id, ...(type === "reject" ? { reason: "not shared" } : {}) });
      S.held.delete(held.id);
      renderHeld();
    };
    return el("li", { class: "held-item" },
      el("p", {}, el("strong", {}, held.from.name), ` in ${room} at ${timeOf(held.ts)}`),
      el("p", { class: "small" }, "Rules: ", held.rules.map((r) => `${r.category} (${r.id})`).join(", ")),
      reveal,
      el("button", { onclick: decide("approve") }, "Approve"),
      el("button", { onclick: decide("reject") }, "Reject"));
  }));
}

// ---------------------------------------------------------------- alerts
// Stored alerts carry an id: the backlog sent at sign-in, then acknowledge and resolve,
// which every facilitator sees (issue 16). Risky text sits behind the review queue's
// content warning. Alerts without an id (unanswered) are shown until the page reloads.
function addAlert(a) {
  if (a.id && S.alerts.has(a.id)) return;  // the backlog and a live copy are one alert
  S.alerts.set(a.id || `live-${++S.liveAlerts}`, { ...a, at: a.ts || Date.now() });
  renderAlerts();
  if (!a.backlog && isUrgent(a)) {
    document.title = `(!) ${a.kind} alert: Staff`;
    document.body.classList.add("flash");
    setTimeout(() => document.body.classList.remove("flash"), 1500);
  }
}

function updateAlert(u) {
  const a = S.alerts.get(u.alert);
  if (!a) return;
  if (u.status === "resolved") S.alerts.delete(u.alert);
  else Object.assign(a, { status: u.status, acknowledged_by: u.by, acknowledged_ts: u.ts });
  renderAlerts();
}

function renderAlerts() {
  const items = [...S.alerts.values()].sort((x, y) =>
    (ALERT_RANK[x.kind] ?? 9) - (ALERT_RANK[y.kind] ?? 9) || y.at - x.at);
  $("alerts").replaceChildren(...items.slice(0, 50).map(alertItem));
}

function alertItem(x) {
  const room = S.titles.get(x.room);
  const who = x.name || "Someone";
  const where = room ? room.title : x.room;
  const item = el("li", { class: `alert alert-${x.kind}`, "data-alert": x.id || "" },
    el("p", {}, el("strong", {}, x.kind.toUpperCase()), ` ${who} in ${where} at ${timeOf(x.at)}`,
      x.seq ? el("span", { class: "small" }, ` (message ${x.seq})`) : null),
    x.rules && x.rules.length ? el("p", { class: "small" }, "Rules: ",
      x.rules.map((r) => r.category).join(", ")) : null,
    el("details", {}, el("summary", {}, "Content warning: show message"),
      el("p", { class: "held-text" }, x.excerpt)));
  if (x.acknowledged_by) {
    item.append(el("p", { class: "acked" }, `Acknowledged by ${x.acknowledged_by.name}`,
      x.acknowledged_ts ? ` at ${timeOf(x.acknowledged_ts)}` : ""));
  }
  if (x.id && S.user.role === "facilitator") {
    const label = `${x.kind} alert about ${who}`;
    if (!x.acknowledged_by) {
      item.append(el("button", { "aria-label": `Acknowledge ${label}`,
        onclick: () => decideAlert("alert_ack", x) }, "Acknowledge"));
    }
    item.append(el("button", { "aria-label": `Resolve ${label}`,
      onclick: () => decideAlert("alert_resolve", x) }, "Resolve"));
  }
  return item;
}

// Acting on an alert means being in its room: the room opens first (frames on one
// socket arrive in order, so the join comes before the acknowledge).
function decideAlert(type, x) {
  if (!S.joined.has(x.room)) openRoom(S.titles.get(x.room) || { id: x.room, title: x.room });
  S.conn.send({ type, room: x.room, alert: x.id });
}
function isUrgent(a) { return a.kind === "risk" || a.kind === "grooming"; }

// ---------------------------------------------------------------- cases
function renderCases() {
  const rank = { emergency: 0, urgent: 1, routine: 2 };
  const open = [...S.cases.values()].filter((c) => c.status !== "closed" &&
    (c.status === "open" || c.counsellor === S.user.id))
    .sort((a, b) => rank[a.urgency] - rank[b.urgency] || a.ts - b.ts);
  $("cases").replaceChildren(...open.map((c) => el("li", { class: `case case-${c.urgency}` },
    el("strong", {}, c.urgency), ` from ${c.room}, ${timeOf(c.ts)}`,
    c.note ? el("p", { class: "small" }, c.note) : null,
    c.status === "open" ? el("button", { onclick: () => claim(c) }, "Claim") :
      el("button", { onclick: () => showCase(c) }, "Open"))));
}

function claim(c) {
  S.conn.send({ type: "claim", case: c.id });
}

function showCase(c) {
  S.caseOpen = c;
  $("case-heading").textContent = `Case ${c.id} (${c.urgency})`;
  $("context").replaceChildren();
  for (const m of c.context || []) renderMessage($("context"), m);
  $("private-compose").hidden = c.status !== "claimed";
  $("close-form").hidden = c.status !== "claimed";
}

function endCase() {
  $("private-compose").hidden = true;
  $("close-form").hidden = true;
}

$("private-compose").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("private-text").value.trim();
  const room = S.caseOpen && S.caseOpen.private_room;
  if (text && room && S.conn.send({ type: "send", room, id: newId(), text })) $("private-text").value = "";
});
$("close-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const outcome = $("outcome").value.trim();
  if (!outcome || !S.caseOpen) return;
  S.conn.send({ type: "close_case", case: S.caseOpen.id, outcome });
  $("outcome").value = "";
});

// ---------------------------------------------------------------- events
function onEvent(e) {
  switch (e.type) {
    case "welcome": for (const r of e.rooms) renderRoom(r); break;
    case "room": renderRoom(e); break;
    case "message":
      if (S.caseOpen && e.room === S.caseOpen.private_room) renderMessage($("private"), e);
      else if (e.room === S.room) renderMessage($("transcript"), e);
      break;
    case "redact": {
      const item = document.querySelector(`[data-seq="${e.seq}"][data-room="${e.room}"]`);
      if (item) item.remove();
      break;
    }
    case "held": S.held.set(e.held.id, e); renderHeld(); break;
    case "alert": addAlert(e); break;
    case "alert_update": updateAlert(e); break;
    case "case": {
      S.cases.set(e.case.id, e.case);
      renderCases();
      if (e.case.counsellor === S.user.id && e.case.status === "claimed") showCase(e.case);
      if (e.case.status === "closed" && S.caseOpen && S.caseOpen.id === e.case.id) endCase();
      break;
    }
    case "notice":
      if (e.kind === "emergency_procedure") {
        $("emergency").textContent = e.text;
        $("emergency").hidden = false;
      }
      break;
    case "error": $("status").textContent = e.message; break;
    default: break;
  }
}

// ---------------------------------------------------------------- ops
$("try-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const v = await api("/api/rules/try", { method: "POST", token: S.token,
      body: { text: $("try-text").value, role: $("try-role").value } });
    const lines = [`verdict: ${v.action}`, `normalized: ${v.normalized}`];
    if (v.text_out) lines.push(`text out: ${v.text_out}`);
    for (const r of v.rules) lines.push(`  ${r.action} ${r.id} at ${r.span.join("-")}`);
    if (v.alerts.length) lines.push(`alerts: ${v.alerts.join(", ")}`);
    if (v.signpost) lines.push("signpost: crisis resources shown to the sender");
    lines.push(`rules version: ${v.version}`);
    $("verdict").textContent = lines.join("\n");
  } catch (err) { $("verdict").textContent = err.message; }
});

$("reload").addEventListener("click", async () => {
  try {
    const r = await api("/api/rules/reload", { method: "POST", token: S.token, body: {} });
    $("reload-result").textContent = `Reloaded: ${r.rules} rules, version ${r.version}.`;
  } catch (err) {
    const problems = (err.data && err.data.error && err.data.error.problems) || [];
    $("reload-result").textContent = [err.message,
      ...problems.map((p) => `${p.file}: ${p.rule}: ${p.message}`)].join("\n");
  }
});

async function refreshAudit() {
  try {
    const { entries } = await api("/api/audit?limit=100", { token: S.token });
    $("audit").replaceChildren(...entries.slice(-50).reverse().map((e) => el("tr", {},
      el("td", {}, new Date(e.ts).toLocaleString()), el("td", {}, e.room || ""),
      el("td", {}, e.actor), el("td", {}, e.action), el("td", {}, e.target || ""))));
  } catch (err) { $("audit").replaceChildren(el("tr", {}, el("td", { colspan: 5 }, err.message))); }
}
$("audit-refresh").addEventListener("click", refreshAudit);

const saved = sessionStorage.getItem("staffToken");
if (saved) start(saved, JSON.parse(sessionStorage.getItem("staffUser")));
