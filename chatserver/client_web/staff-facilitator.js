// The facilitator's dashboard (ops see it too): rooms, the live transcript, people and
// their cards, the review queue with keyboard shortcuts, and the alerts backlog.
import { api, el, timeOf, newId } from "/static/common.js";
import { $, S, on, onStart, say, warned, attention } from "/static/staff-core.js";

const F = { room: null, rooms: new Map(), alerts: new Map(), held: new Map(),
  titles: new Map(), joined: new Set(), liveAlerts: 0, messages: new Map(), selected: null,
  muted: new Map(), card: null };
const ALERT_RANK = { risk: 0, grooming: 1, abuse: 2, contact: 3, evasion: 4, flood: 5,
  report: 6, unanswered: 7 };
const facilitating = () => S.user.role === "facilitator";

onStart(() => {
  $("facilitator").hidden = false;
  refreshRooms();
  setInterval(refreshRooms, 5000);
});

// ---------------------------------------------------------------- rooms
function count(n, one, many) { return `${n} ${n === 1 ? one : many}`; }

async function refreshRooms() {
  try {
    const { rooms } = await api("/api/rooms", { token: S.token });
    for (const r of rooms) F.titles.set(r.id, r);
    renderAlerts();
    $("rooms").replaceChildren(...rooms.map((r) => el("li", { class: r.paused ? "paused" : "" },
      el("button", { class: "link", onclick: () => openRoom(r) }, r.title),
      el("span", { class: "small" }, ` ${count(r.participants, "young person", "young people")}, ${count(r.facilitators, "facilitator", "facilitators")}`,
        r.paused ? " · paused" : "", r.slow_mode_s ? ` · slow ${r.slow_mode_s}s` : ""))));
  } catch (err) {
    if (err.status === 401) say("Your session has ended. Please sign in again.");
  }
}

function title(id) { const r = F.titles.get(id); return r ? r.title : id; }

function openRoom(r) {
  F.room = r.id;
  $("room-heading").textContent = r.title;
  $("transcript").replaceChildren();
  F.messages.set(r.id, []);
  $("room-controls").hidden = !facilitating();
  $("staff-compose").hidden = false;
  S.conn.lastSeq[r.id] = 0;  // a fresh transcript: show the history the server sends
  S.conn.send({ type: "join", room: r.id });
  F.joined.add(r.id);
}

$("pause").addEventListener("click", () => {
  const paused = $("pause").dataset.paused === "true";
  S.conn.send(paused ? { type: "resume", room: F.room } :
    { type: "pause", room: F.room, reason: "paused by facilitator" });
});
$("slow").addEventListener("change", () => {
  S.conn.send({ type: "slow_mode", room: F.room, seconds: Number($("slow").value) });
});
$("staff-compose").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("staff-text").value.trim();
  if (text && S.conn.send({ type: "send", room: F.room, id: newId(), text })) $("staff-text").value = "";
});

function renderRoom(r) {
  F.rooms.set(r.room, r);
  for (const m of r.members || []) {
    // Mutes seen this session, for the person card (the audit log has the older ones).
    const key = `${r.room}:${m.id}`;
    if (m.muted && !F.muted.get(key)) F.muted.set(key, Date.now());
    if (!m.muted) F.muted.delete(key);
  }
  if (r.room !== F.room) return;
  $("pause").textContent = r.paused ? "Resume room" : "Pause room";
  $("pause").dataset.paused = String(r.paused);
  $("slow").value = String(r.slow_mode_s);
  $("members").replaceChildren(...r.members.map((m) => memberRow(m)));
  if (F.card) {
    const again = r.members.find((m) => m.id === F.card.id);
    if (again) renderCard(again); // keep the card's mute line current
  }
}

function memberRow(m) {
  const staff = m.role !== "participant";
  const row = el("li", {},
    staff ? el("span", { class: "who" }, m.name) :
      el("button", { class: "link who", "aria-label": `About ${m.name}`, "aria-controls": "card",
        onclick: () => openCard(m) }, m.name),
    el("span", { class: "small" }, ` ${m.role}${m.muted ? " · muted" : ""}`));
  if (staff || !facilitating()) return row;
  const minutes = el("select", { "aria-label": `Mute ${m.name} for` },
    ...[5, 15, 60].map((n) => el("option", { value: n }, `${n} min`)));
  const urgency = el("select", { "aria-label": `Urgency for ${m.name}` },
    ...["routine", "urgent", "emergency"].map((u) => el("option", { value: u }, u)));
  const note = el("input", { "aria-label": `Note for the counsellor about ${m.name}`, placeholder: "Note" });
  const act = (frame) => () => S.conn.send({ room: F.room, participant: m.id, ...frame });
  row.append(el("span", { class: "actions" },
    m.muted ? el("button", { onclick: act({ type: "unmute" }) }, "Unmute") :
      el("span", {}, minutes, el("button", { onclick: () => act({ type: "mute", minutes: Number(minutes.value) })() }, "Mute")),
    el("button", { onclick: (ev) => confirmRemove(m, ev.currentTarget) }, "Remove"),
    urgency, note,
    el("button", { onclick: () => act({ type: "escalate", urgency: urgency.value, note: note.value })() }, "Escalate")));
  return row;
}

// ---------------------------------------------------------------- remove, confirmed
// Remove sticks for the room's life (docs/protocol.md § Abuse limits), so it asks
// first; Cancel has the focus, so an Enter pressed by habit removes nobody.
let removing = null;
function confirmRemove(m, from) {
  removing = { m, room: F.room, from };
  $("remove-text").textContent = `Remove ${m.name} from ${title(F.room)}? They leave at once ` +
    "and cannot come back to this room under this name.";
  $("remove-reason").value = "";
  $("remove-dialog").showModal();
  $("remove-cancel").focus();
}
$("remove-dialog").addEventListener("close", () => {
  const r = removing;
  removing = null;
  if (!r) return;
  if ($("remove-dialog").returnValue === "remove") {
    S.conn.send({ type: "remove", room: r.room, participant: r.m.id,
      reason: $("remove-reason").value.trim() || "removed by facilitator" });
    say(`${r.m.name} was removed from ${title(r.room)}.`);
  } else if (r.from && r.from.isConnected) r.from.focus();
});

// ---------------------------------------------------------------- transcript
export function renderMessage(list, m, { redactable = false } = {}) {
  if (list.querySelector(`[data-seq="${m.seq}"][data-room="${m.room}"]`)) return;
  const staff = m.from.role !== "participant";
  const item = el("li", { class: `msg theirs ${staff ? "staff" : ""}`, "data-seq": m.seq, "data-room": m.room },
    el("span", { class: "who" }, m.from.name, staff ? el("span", { class: "badge" }, m.from.role) : null),
    el("span", { class: "text" }, m.text), el("span", { class: "meta" }, timeOf(m.ts)));
  if (redactable) {
    item.append(el("button", { class: "link", onclick: () => S.conn.send({ type: "redact", room: m.room, seq: m.seq, reason: "removed by facilitator" }) }, "Remove message"));
  }
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

on("welcome", (e) => { for (const r of e.rooms) renderRoom(r); });
on("room", renderRoom);
on("message", (e) => {
  if (!F.messages.has(e.room)) return;
  F.messages.get(e.room).push(e);
  if (e.room === F.room) renderMessage($("transcript"), e, { redactable: facilitating() });
});
on("redact", (e) => {
  const item = $("transcript").querySelector(`[data-seq="${e.seq}"][data-room="${e.room}"]`);
  if (item) item.remove();
  const list = F.messages.get(e.room);
  if (list) F.messages.set(e.room, list.filter((m) => m.seq !== e.seq));
});

// ---------------------------------------------------------------- person card
// What the console already knows about one young person (messages, alerts, held ones,
// mutes seen), and the counts the audit log keeps for the room (flags, mutes, reports):
// no new server view, and no risky text outside a content warning.
function openCard(m) {
  F.card = { id: m.id, room: F.room, history: null };
  renderCard(m);
  $("card").hidden = false;
  $("card-heading").focus();
  loadHistory(F.card);
}

async function loadHistory(card) {
  try {
    const { entries } = await api(`/api/audit?room=${encodeURIComponent(card.room)}&limit=1000`,
      { token: S.token });
    card.history = entries.filter((e) => e.target === card.id || e.actor === card.id);
  } catch {
    card.history = "unavailable";
  }
  if (F.card === card) {
    const m = (F.rooms.get(card.room)?.members || []).find((x) => x.id === card.id);
    renderCard(m || { id: card.id, name: $("card-heading").dataset.name, muted: false });
  }
}

function tally(history, id) {
  const count = (pred) => history.filter(pred).length;
  return [
    ["Messages held or not sent", count((e) => e.actor === id &&
      ["message.hold", "message.block", "message.mask"].includes(e.action))],
    ["Times muted", count((e) => e.target === id && e.action === "mute")],
    ["Messages of theirs reported", count((e) => e.target === id && e.action === "report" &&
      e.actor !== id)],
    ["Reports they made", count((e) => e.actor === id && e.action === "report")],
    ["Escalations and requests for a counsellor", count((e) => e.target === id &&
      ["escalate", "request_support"].includes(e.action))],
  ];
}

function renderCard(m) {
  const card = F.card;
  $("card-heading").textContent = `About ${m.name}`;
  $("card-heading").dataset.name = m.name;
  const mutedSince = F.muted.get(`${card.room}:${m.id}`);
  const recent = (F.messages.get(card.room) || []).filter((x) => x.from.id === m.id).slice(-5);
  const flags = [...F.alerts.values()].filter((a) => a.participant === m.id);
  const held = [...F.held.values()].filter((h) => h.held.from.id === m.id);
  const history = card.history;
  $("card-body").replaceChildren(
    el("p", {}, m.muted ? `Muted now${mutedSince ? ` (seen at ${timeOf(mutedSince)})` : ""}.` :
      "Not muted.", ` In ${title(card.room)}.`),
    el("h4", {}, "Recent messages"),
    recent.length ? el("ol", { class: "plain" }, ...recent.map((x) =>
      el("li", {}, el("span", { class: "meta" }, `${timeOf(x.ts)} `), x.text))) :
      el("p", { class: "small" }, "None in this room since you opened it."),
    el("h4", {}, "Flags and alerts"),
    flags.length || held.length ? el("ul", { class: "plain" },
      ...flags.map((a) => el("li", {}, `${a.kind} alert at ${timeOf(a.at)}`,
        a.acknowledged_by ? ` · acknowledged by ${a.acknowledged_by.name}` : "",
        warned(a.excerpt || ""))),
      ...held.map((h) => el("li", {}, `Waiting in the review queue since ${timeOf(h.held.ts)}`,
        warned(h.held.text)))) :
      el("p", { class: "small" }, "No open alerts or held messages."),
    el("h4", {}, "History in this room"),
    history === null ? el("p", { class: "small" }, "Loading…") :
      history === "unavailable" ? el("p", { class: "small" }, "The audit log could not be read.") :
        el("dl", { class: "tally" }, ...tally(history, m.id).flatMap(([k, v]) =>
          [el("dt", {}, k), el("dd", {}, String(v))])));
}

$("card-close").addEventListener("click", () => {
  const name = $("card-heading").dataset.name;
  F.card = null;
  $("card").hidden = true;
  const back = name && $("members").querySelector(`[aria-label="About ${CSS.escape(name)}"]`);
  if (back) back.focus();
});

// ---------------------------------------------------------------- review queue
// Keyboard: J / K (or N) move through the queue, V shows the message, A approves and
// R rejects the selected one, ? lists the keys. A message is approved only once it has
// been shown: nobody shares what they have not read.
function queueItems() {
  return [...F.held.values()].sort((a, b) => a.held.ts - b.held.ts);
}

function renderHeld() {
  const items = queueItems();
  if (F.selected && !F.held.has(F.selected)) F.selected = null;
  const hadFocus = $("held").contains(document.activeElement);
  $("held").replaceChildren(...items.map(({ room, held }) => {
    const item = el("li", { class: `held-item${held.id === F.selected ? " selected" : ""}`,
      tabindex: "-1", "data-held": held.id,
      "aria-current": held.id === F.selected ? "true" : false,
      "aria-label": `Held message from ${held.from.name} in ${title(room)}`,
      onfocus: () => select(held.id, false) },
    el("p", {}, el("strong", {}, held.from.name), ` in ${title(room)} at ${timeOf(held.ts)}`),
    el("p", { class: "small" }, "Rules: ", held.rules.map((r) => `${r.category} (${r.id})`).join(", ")),
    warned(held.text),
    el("button", { onclick: () => decide("approve", held.id) }, "Approve"),
    el("button", { onclick: () => decide("reject", held.id) }, "Reject"));
    return item;
  }));
  if (hadFocus && F.selected) itemOf(F.selected)?.focus();
}

function itemOf(id) { return $("held").querySelector(`[data-held="${CSS.escape(id)}"]`); }

function select(id, focus = true) {
  if (F.selected === id) return;
  F.selected = id;
  for (const li of $("held").children) {
    const on = li.dataset.held === id;
    li.classList.toggle("selected", on);
    if (on) li.setAttribute("aria-current", "true"); else li.removeAttribute("aria-current");
  }
  if (focus) itemOf(id)?.focus();
}

function decide(type, id) {
  const entry = F.held.get(id);
  if (!entry) return;
  const next = neighbour(id, 1) || neighbour(id, -1);
  S.conn.send({ type, room: entry.room, held: id, ...(type === "reject" ? { reason: "not shared" } : {}) });
  F.held.delete(id);
  say(`${type === "approve" ? "Approved" : "Rejected"} the message from ${entry.held.from.name}.`);
  F.selected = next;
  renderHeld();
  if (next) itemOf(next)?.focus();
}

function neighbour(id, step) {
  const ids = queueItems().map((x) => x.held.id);
  const i = ids.indexOf(id);
  return i < 0 ? null : ids[i + step] || null;
}

function typing(target) {
  return target.closest("input, textarea, select, dialog") || target.isContentEditable;
}

document.addEventListener("keydown", (ev) => {
  if (!S.user || $("facilitator").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (typing(ev.target)) return;
  if (ev.key === "?") { ev.preventDefault(); $("keys-dialog").showModal(); return; }
  if (!facilitating()) return;
  const ids = queueItems().map((x) => x.held.id);
  if (!ids.length) return;
  const key = ev.key.toLowerCase();
  const current = F.selected && ids.includes(F.selected) ? F.selected : null;
  if (key === "j" || key === "n") {
    ev.preventDefault();
    select(current ? (neighbour(current, 1) || current) : ids[0]);
  } else if (key === "k") {
    ev.preventDefault();
    select(current ? (neighbour(current, -1) || current) : ids[0]);
  } else if (!current) {
    if (["a", "r", "v"].includes(key)) say("Press J to pick a held message first.");
  } else if (key === "v") {
    ev.preventDefault();
    const d = itemOf(current).querySelector("details");
    d.open = !d.open;
  } else if (key === "a") {
    ev.preventDefault();
    if (!itemOf(current).querySelector("details").open) {
      say("Read it first: press V to show the message, then A to approve.");
    } else decide("approve", current);
  } else if (key === "r") {
    ev.preventDefault();
    decide("reject", current);
  }
});
$("keys-open").addEventListener("click", () => $("keys-dialog").showModal());

on("held", (e) => { F.held.set(e.held.id, e); renderHeld(); });

// ---------------------------------------------------------------- alerts
// Stored alerts carry an id: the backlog sent at sign-in, then acknowledge and resolve,
// which every facilitator sees (issue 16). Risky text sits behind a content warning.
// Alerts without an id (unanswered) are shown until the page reloads.
function addAlert(a) {
  if (a.id && F.alerts.has(a.id)) return;  // the backlog and a live copy are one alert
  F.alerts.set(a.id || `live-${++F.liveAlerts}`, { ...a, at: a.ts || Date.now() });
  renderAlerts();
  if (!a.backlog && isUrgent(a)) {
    document.title = `(!) ${a.kind} alert: Staff`;
    document.body.classList.add("flash");
    setTimeout(() => document.body.classList.remove("flash"), 1500);
    attention(`Urgent ${a.kind} alert in ${title(a.room)}`);
  }
}

function updateAlert(u) {
  const a = F.alerts.get(u.alert);
  if (!a) return;
  if (u.status === "resolved") F.alerts.delete(u.alert);
  else Object.assign(a, { status: u.status, acknowledged_by: u.by, acknowledged_ts: u.ts });
  renderAlerts();
}

function renderAlerts() {
  const items = [...F.alerts.values()].sort((x, y) =>
    (ALERT_RANK[x.kind] ?? 9) - (ALERT_RANK[y.kind] ?? 9) || y.at - x.at);
  $("alerts").replaceChildren(...items.slice(0, 50).map(alertItem));
}

function alertItem(x) {
  const who = x.name || "Someone";
  const item = el("li", { class: `alert alert-${x.kind}`, "data-alert": x.id || "" },
    el("p", {}, el("strong", {}, x.kind.toUpperCase()), ` ${who} in ${title(x.room)} at ${timeOf(x.at)}`,
      x.seq ? el("span", { class: "small" }, ` (message ${x.seq})`) : null),
    x.rules && x.rules.length ? el("p", { class: "small" }, "Rules: ",
      x.rules.map((r) => r.category).join(", ")) : null,
    warned(x.excerpt));
  if (x.acknowledged_by) {
    item.append(el("p", { class: "acked" }, `Acknowledged by ${x.acknowledged_by.name}`,
      x.acknowledged_ts ? ` at ${timeOf(x.acknowledged_ts)}` : ""));
  }
  if (x.id && facilitating()) {
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
  if (!F.joined.has(x.room)) openRoom(F.titles.get(x.room) || { id: x.room, title: x.room });
  S.conn.send({ type, room: x.room, alert: x.id });
}
function isUrgent(a) { return a.kind === "risk" || a.kind === "grooming"; }

on("alert", addAlert);
on("alert_update", updateAlert);
on("notice", (e) => {
  if (e.kind === "emergency_procedure") {
    $("emergency").textContent = e.text;
    $("emergency").hidden = false;
  }
});
