// The young person's room: join, chat, help, report, ignore, quick exit, and a
// conversation that survives a reload (kept in sessionStorage: this tab only) and
// reconnects with `resume` by seq.
import { api, el, timeOf, newId, Connection, installQuickExit, resourceItem } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const KEEP = 300;  // entries kept for a reload
const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

const state = {
  me: null, room: null, conn: null, muted: false, paused: false, unstaffed: false,
  privateRoom: sessionStorage.getItem("privateRoom"),
  privateEnded: sessionStorage.getItem("privateEnded") === "1",
  tab: "group", unread: 0, removed: false, members: [],
  ignored: new Set(JSON.parse(sessionStorage.getItem("ignored") || "[]")),
  entries: [], nodes: new Map(), notes: 0,
};

// ------------------------------------------------------------------ quick exit
installQuickExit($("exit"), () => { if (state.conn) state.conn.stop(); });

// ------------------------------------------------------------------ help sheet
function openHelp(intro, { focus = false } = {}) {
  $("help").hidden = false;
  $("help-toggle").setAttribute("aria-expanded", "true");
  if (intro) $("help-intro").textContent = intro;
  sessionStorage.setItem("helpOpen", intro || "1");
  if (focus) $("help-heading").focus();
}

function closeHelp() {
  const hadFocus = $("help").contains(document.activeElement);
  $("help").hidden = true;
  $("help-toggle").setAttribute("aria-expanded", "false");
  sessionStorage.removeItem("helpOpen");
  if (hadFocus) $("help-toggle").focus();
}

$("help-toggle").addEventListener("click", () => {
  if ($("help").hidden) openHelp(null, { focus: true }); else closeHelp();
});
$("help-close").addEventListener("click", closeHelp);

async function loadResources() {
  try {
    const { resources, complaints } = await api("/api/resources");
    $("resources").replaceChildren(...resources.map(resourceItem));
    $("complaints").textContent = complaints || "";
  } catch { /* the toggle still shows the panel's own words */ }
}
loadResources();

async function loadRooms() {
  try {
    const { rooms } = await api("/api/rooms/open");
    $("room").replaceChildren(...rooms.map((r) => el("option", { value: r.id }, r.title)));
    loadRoomConfig();
  } catch {
    $("join-error").textContent = "We couldn't load the rooms. Please try again in a moment.";
  }
}

// The room's public config (issue 16): its age groups and guidelines come from the
// server's config; the page's own copies stay only if the request fails.
function bandLabel(band) { return band.replace("-", " to "); }
async function loadRoomConfig(id = $("room").value) {
  if (!id) return;
  try {
    const room = await api(`/api/rooms/${encodeURIComponent(id)}/public`);
    const chosen = $("band").value;
    $("band").replaceChildren(...room.age_bands.map((b) => el("option", { value: b }, bandLabel(b))));
    if (room.age_bands.includes(chosen)) $("band").value = chosen;
    if (room.support_note_chars) $("support-note").maxLength = room.support_note_chars;
    if (room.guidelines && room.guidelines.length) {
      $("guidelines").replaceChildren(...room.guidelines.map((g) => el("li", {}, g)));
    }
  } catch { /* keep what the page has */ }
}
$("room").addEventListener("change", () => loadRoomConfig());

// ------------------------------------------------------------------ transcript
// One entry per bubble: {t: "own"|"msg"|"note", k: key, ...}. An own message is one
// bubble from "Sending…" to its last status (sent, waiting, approved, not shared,
// not sent, removed); it is never shown twice.
function save() {
  state.entries = state.entries.slice(-KEEP);
  sessionStorage.setItem("transcript", JSON.stringify(state.entries));
}

function find(pred) { return state.entries.find(pred); }

function scroll() {
  const log = $(state.tab === "private" ? "private-log" : "log");
  log.scrollTo({ top: log.scrollHeight, behavior: reduceMotion.matches ? "auto" : "smooth" });
}

const OWN_STATUS = {
  sending: "Sending…", held: "Waiting for a facilitator", rejected: "Not shared",
  blocked: "Not sent", notsent: "Not sent", removed: "Removed by a facilitator",
};

function helpButton() {
  return el("button", { class: "link help-link", type: "button",
    onclick: () => openHelp(null, { focus: true }) }, "See who can help now");
}

function render(entry) {
  let node;
  if (entry.t === "note") {
    node = el("li", { class: `note ${entry.cls}` }, el("span", {}, entry.text),
      entry.help ? helpButton() : null);
  } else {
    const mine = entry.t === "own";
    const m = entry.m || {};
    const from = m.from || {};
    const staff = !mine && from.role && from.role !== "participant";
    const status = mine ? entry.status : (entry.removed ? "removed" : "delivered");
    let meta;
    if (status === "sent") meta = `Sent · ${timeOf(entry.ts)}`;
    else if (status === "approved") meta = `Shared by a facilitator · ${timeOf(entry.ts)}`;
    else if (status === "delivered") meta = timeOf(m.ts);
    else meta = OWN_STATUS[status] || "";
    const removed = status === "removed";
    const room = mine ? entry.room : m.room;
    const privateMsg = state.privateRoom && room === state.privateRoom;
    node = el("li", {
      class: ["msg", mine ? "mine" : "theirs", staff ? "staff" : "", privateMsg ? "private" : "",
        `s-${status}`, status === "sending" ? "pending" : "",
        status === "held" ? "held" : "", ["blocked", "notsent", "rejected"].includes(status) ? "blocked" : "",
        !mine && state.ignored.has(from.id) ? "ignored" : ""].filter(Boolean).join(" "),
      "data-seq": (mine ? entry.seq : m.seq) ?? false, "data-id": mine ? entry.id : m.id,
    },
    el("span", { class: "who" }, mine ? "You" : from.name,
      staff ? el("span", { class: "badge" }, from.role === "counsellor" ? "Counsellor" : "Facilitator") : null,
      privateMsg ? el("span", { class: "badge private-badge" }, "Private") : null),
    el("span", { class: "text" }, removed ? "This message was removed by a facilitator." : (mine ? entry.text : m.text)),
    el("span", { class: "meta" }, meta),
    entry.notice && !removed ? el("p", { class: "notice-inline" }, entry.notice) : null,
    entry.help ? helpButton() : null,
    !mine && !removed ? el("button", { class: "link report", type: "button",
      "aria-label": `Report message from ${from.name}`, onclick: () => report(m) }, "Report") : null);
  }
  const old = state.nodes.get(entry.k);
  const pane = paneOf(entry);
  if (old) old.replaceWith(node);
  else $(pane === "private" ? "private-messages" : "messages").append(node);
  state.nodes.set(entry.k, node);
  if (!old) {
    if (pane === "private") showTabs();
    if (pane !== state.tab && entry.t === "msg" && !restoring) countUnread();
    scroll();
  }
}

// ------------------------------------------------------------------ one-to-one tab
// The counsellor's chat is a tab of its own (WAI-ARIA tabs: arrow keys move between
// them), so private words never sit in the group's stream.
let restoring = false;
function paneOf(entry) {
  if (entry.pane) return entry.pane;
  const room = entry.t === "own" ? entry.room : entry.t === "msg" ? entry.m.room : null;
  return room && state.room && room !== state.room.id ? "private" : "group";
}

function showTabs() {
  if (!$("tabs").hidden) return;
  $("tabs").hidden = false;
  $("log").setAttribute("role", "tabpanel");
  $("log").removeAttribute("aria-label");
  $("log").setAttribute("aria-labelledby", "tab-group");
}

function countUnread() {
  if (state.tab === "private") return;
  state.unread += 1;
  $("private-unread").textContent = String(state.unread);
  $("private-unread").setAttribute("aria-label", `${state.unread} new`);
}

function selectTab(tab, { focus = false } = {}) {
  state.tab = tab;
  const priv = tab === "private";
  $("tab-group").setAttribute("aria-selected", String(!priv));
  $("tab-private").setAttribute("aria-selected", String(priv));
  $("tab-group").tabIndex = priv ? -1 : 0;
  $("tab-private").tabIndex = priv ? 0 : -1;
  $("log").hidden = priv;
  $("private-log").hidden = !priv;
  if (priv) {
    state.unread = 0;
    $("private-unread").textContent = "";
    $("private-unread").removeAttribute("aria-label");
  }
  if (focus) $(priv ? "tab-private" : "tab-group").focus();
  updateCompose();
  scroll();
}

$("tab-group").addEventListener("click", () => selectTab("group"));
$("tab-private").addEventListener("click", () => selectTab("private"));
$("tabs").addEventListener("keydown", (ev) => {
  if (!["ArrowLeft", "ArrowRight", "Home", "End"].includes(ev.key)) return;
  ev.preventDefault();
  const priv = ev.key === "End" || (ev.key !== "Home" && state.tab === "group");
  selectTab(priv ? "private" : "group", { focus: true });
});

/** Who the message box writes to: the tab on show. Muted in the group does not stop the
 *  one-to-one; an ended one-to-one takes nothing more. */
function target() {
  return state.tab === "private" && state.privateRoom && !state.privateEnded ?
    state.privateRoom : state.room.id;
}

function updateCompose() {
  const priv = state.tab === "private";
  const off = priv ? state.privateEnded || !state.privateRoom : state.muted;
  $("text").disabled = off;
  $("send").disabled = off;
  $("text").placeholder = priv ? (off ? "This one-to-one chat has ended." :
    "Write to your counsellor…") : "Type a message…";
}

function openPrivate(room) {
  state.privateRoom = room;
  state.privateEnded = false;
  sessionStorage.setItem("privateRoom", room);
  sessionStorage.removeItem("privateEnded");
  showTabs();
}

function add(entry) {
  state.entries.push(entry);
  render(entry);
  save();
}

function update(entry, fields) {
  Object.assign(entry, fields);
  render(entry);
  save();
}

function system(text, cls = "system", extra = {}) {
  state.notes += 1;
  add({ t: "note", k: `note:${Date.now()}:${state.notes}`, text, cls, ...extra });
}

function onMessage(m) {
  if (m.room !== state.room.id && m.room !== state.privateRoom) return;
  if (state.me && m.from.id === state.me.id) {
    const own = find((e) => e.t === "own" && e.id === m.id);
    if (own) {
      update(own, { status: own.status === "held" || own.status === "approved" ? "approved" : "sent",
        seq: m.seq, ts: m.ts, text: m.text, notice: null, help: false });
    } else {
      add({ t: "own", k: `own:${m.id}`, id: m.id, room: m.room, text: m.text, status: "sent",
        seq: m.seq, ts: m.ts });
    }
    return;
  }
  if (find((e) => e.t === "msg" && e.m.room === m.room && e.m.seq === m.seq)) return;
  add({ t: "msg", k: `seq:${m.room}:${m.seq}`, m });
}

function report(m) {
  state.conn.send({ type: "report", room: m.room, seq: m.seq });
}

function settle(ack) {
  const entry = find((e) => e.t === "own" && e.id === ack.ref);
  if (!entry) return;
  if (ack.status === "sent") {
    if (entry.status === "sending") {
      update(entry, { status: "sent", seq: ack.seq, ts: entry.ts || Date.now(),
        text: ack.text || entry.text });
    }
  } else if (ack.status === "held") {
    update(entry, { status: "held", held: ack.held, notice: ack.notice || null });
  } else if (ack.status === "blocked") {
    update(entry, { status: "blocked", notice: ack.notice || null });
  } else if (ack.code === "paused" && state.unstaffed) {
    update(entry, { status: "notsent", help: true,
      notice: "There isn't a facilitator in the room right now, so your message wasn't shared. " +
        "If you need to talk to someone now, these services are free and there to listen." });
  } else {
    update(entry, { status: "notsent", notice: rejectText(ack.code) });
  }
}

function rejectText(code) {
  return {
    muted: "You can read along, but can't send messages for a little while.",
    paused: "The room is paused for a moment. A facilitator will be back soon.",
    slow_mode: "The room is in slow mode: please wait a few seconds between messages.",
    rate_limited: "That's a lot of messages quickly. Take a breath and try again in a moment.",
    too_large: "That message is too long. Could you split it up?",
    internal: "Something went wrong on our side. Your message wasn't sent; please try again.",
  }[code] || "Your message wasn't sent. Please try again.";
}

function heldRejected(e) {
  const room = e.room || state.room.id;
  // The notice names the held message when the server says which; otherwise it is the
  // oldest of ours still waiting in that room (facilitators decide in queue order).
  const entry = (e.held && find((x) => x.t === "own" && x.held === e.held)) ||
    find((x) => x.t === "own" && x.status === "held" && x.room === room);
  if (entry) update(entry, { status: "rejected", notice: e.text });
  else system(e.text, "notice");
}

function redact(e) {
  const entry = find((x) => (x.t === "own" ? x.room === e.room && x.seq === e.seq :
    x.t === "msg" && x.m.room === e.room && x.m.seq === e.seq));
  if (!entry) return;
  if (entry.t === "own") update(entry, { status: "removed", text: "", notice: null });
  else update(entry, { removed: true, m: { ...entry.m, text: "" } });
}

// ------------------------------------------------------------------ talk privately
// TalkLife's "I need help": the young person asks for a one-to-one themselves
// (`request_support`, docs/protocol.md § Alerts and asking for support), with an
// optional note; the server's kind words confirm it (`support_requested`, or
// `support_pending` when they have already asked).
function openSupport() {
  if (state.privateRoom && !state.privateEnded) { selectTab("private", { focus: true }); return; }
  const panel = $("support");
  // Open, or (after a confirmation) ask again: the server answers a repeat kindly.
  const opening = panel.hidden || $("support-form").hidden;
  panel.hidden = !opening;
  $("support-open").setAttribute("aria-expanded", String(opening));
  if (opening) {
    $("support-form").hidden = false;
    $("support-result").textContent = "";
    $("support-note").focus();
  }
}

function closeSupport() {
  $("support").hidden = true;
  $("support-open").setAttribute("aria-expanded", "false");
  $("support-open").focus();
}

function supportDone(text) {
  if (!text) { $("support").hidden = true; $("support-open").setAttribute("aria-expanded", "false"); return; }
  $("support").hidden = false;
  $("support-open").setAttribute("aria-expanded", "true");
  $("support-form").hidden = true;
  $("support-result").textContent = text;
  $("support-heading").focus();
}

$("support-open").addEventListener("click", openSupport);
$("support-cancel").addEventListener("click", closeSupport);
$("support").addEventListener("keydown", (ev) => {
  // Esc closes the panel (twice still leaves the page: the quick exit listens too).
  if (ev.key === "Escape") closeSupport();
});
$("support-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const note = $("support-note").value.trim();
  const frame = { type: "request_support", room: state.room.id };
  if (note) frame.note = note;
  if (!state.conn || !state.conn.send(frame)) {
    $("support-result").textContent = "You're offline right now; please try again in a moment.";
    return;
  }
  $("support-note").value = "";
});

// ------------------------------------------------------------------ who is here
function renderMembers() {
  const list = $("members");
  const people = state.members;
  $("people-count").textContent = String(people.length);
  // A re-render keeps the keyboard where it was (on that person's button).
  const focused = list.contains(document.activeElement) ?
    document.activeElement.getAttribute("data-person") : null;
  list.replaceChildren(...people.map((p) => {
    const me = state.me && p.id === state.me.id;
    const staff = p.role !== "participant";
    const ignored = state.ignored.has(p.id);
    return el("li", {},
      el("span", { class: "who" }, me ? `${p.name} (you)` : p.name,
        staff ? el("span", { class: "badge" }, p.role === "counsellor" ? "Counsellor" : "Facilitator") : null),
      ignored ? el("span", { class: "small" }, " ignored") : null,
      !me && !staff ? el("button", { class: "link", type: "button", "data-person": p.id,
        "aria-label": ignored ? `Stop ignoring ${p.name}` : `Ignore ${p.name}`,
        onclick: () => setIgnored(p, !ignored) }, ignored ? "Stop ignoring" : "Ignore") : null);
  }));
  if (focused) {
    const again = list.querySelector(`[data-person="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  const facilitators = people.filter((p) => p.role === "facilitator");
  $("presence").textContent = facilitators.length ?
    `A facilitator is here: ${facilitators.map((p) => p.name).join(", ")}.` :
    "No facilitator is here right now.";
  $("presence").classList.toggle("away", facilitators.length === 0);
  $("welcome-staff").textContent = facilitators.length ?
    "A facilitator is in the room and reads along." :
    (state.unstaffed ? "No facilitator is in the room right now, so messages can't be shared " +
      "until one joins. If you need to talk to someone now, press \"Get help now\"." :
      "No facilitator is in the room right now. Messages are still checked before anyone sees them.");
}

function setIgnored(person, on) {
  if (!state.conn || !state.conn.send({ type: on ? "ignore" : "unignore", room: state.room.id,
    participant: person.id })) {
    system("You're offline right now; please try again in a moment.", "error");
    return;
  }
  if (on) state.ignored.add(person.id); else state.ignored.delete(person.id);
  sessionStorage.setItem("ignored", JSON.stringify([...state.ignored]));
  for (const entry of state.entries) {
    if (entry.t === "msg" && entry.m.from.id === person.id) render(entry);
  }
  system(on ? `You're ignoring ${person.name}: you won't see their messages.` :
    `You're no longer ignoring ${person.name}.`, "notice");
  renderMembers();
}

function onRoomState(r) {
  if (r.room === state.privateRoom && r.closed) {
    if (state.privateEnded) return;
    state.privateEnded = true;
    sessionStorage.setItem("privateEnded", "1");
    system("Your one-to-one chat with the counsellor has ended. You're still in the group.",
      "notice", { pane: "private" });
    updateCompose();
    return;
  }
  if (r.room !== state.room.id || state.removed) return;
  state.members = r.members;
  state.paused = r.paused;
  state.unstaffed = r.paused && !r.members.some((m) => m.role === "facilitator");
  const me = r.members.find((m) => state.me && m.id === state.me.id);
  state.muted = Boolean(me && me.muted);
  const lines = [];
  if (state.unstaffed) {
    lines.push("No facilitator is here yet, so messages can't be shared until one joins.");
  } else if (r.paused) lines.push("The room is paused for a moment.");
  if (r.slow_mode_s) lines.push(`Slow mode: one message every ${r.slow_mode_s} seconds.`);
  if (state.muted) lines.push("You're muted for now: you can still read along.");
  const banner = $("banner");
  banner.textContent = lines.join(" ");
  banner.hidden = lines.length === 0;
  updateCompose();
  renderMembers();
}

// ------------------------------------------------------------------ removed
const REMOVED_TEXT = "A facilitator has asked you to leave this room, so you can't send " +
  "messages here. If you need support, \"Get help now\" is always there for you.";

function setRemoved(text) {
  if (text) sessionStorage.setItem("removedText", text);
  if (state.removed) return;
  state.removed = true;
  sessionStorage.setItem("removed", "1");
  if (state.conn) state.conn.stop();
  for (const id of ["compose", "people", "presence", "banner", "support-open", "support"]) {
    $(id).hidden = true;
  }
  $("status").textContent = "";
  const ended = $("ended");
  ended.replaceChildren(el("strong", {}, "You were removed from this room. "),
    text || sessionStorage.getItem("removedText") || REMOVED_TEXT);
  ended.hidden = false;
}

// ------------------------------------------------------------------ events
function onEvent(e) {
  switch (e.type) {
    case "welcome":
      state.me = e.you;
      $("welcome-heading").textContent = `Welcome to ${state.room.title}, ${e.you.name}`;
      for (const r of e.rooms) {
        if (r.room === state.room.id) onRoomState(r);
        else if (!r.closed) openPrivate(r.room);  // an open one-to-one, after a reconnect
      }
      if (e.rooms.some((r) => r.gap)) {
        system("You were away for a while, so some messages in between aren't shown.");
      }
      // A send that never got its answer: the same id again gets the original outcome.
      for (const entry of state.entries) {
        if (entry.t === "own" && entry.status === "sending") {
          state.conn.send({ type: "send", room: entry.room, id: entry.id, text: entry.text });
        }
      }
      break;
    case "message": onMessage(e); break;
    case "ack": settle(e); break;
    case "room": onRoomState(e); break;
    case "redact": redact(e); break;
    case "notice":
      if (e.kind === "signpost") {
        openHelp(e.text);
        system(e.text, "crisis", { help: true });
      } else if (e.kind === "escalated" && e.room) {
        openPrivate(e.room);
        system(`${e.text} Your one-to-one chat is in the "Counsellor (private)" tab.`, "notice");
        system("A counsellor has joined you here. Only the two of you see this chat.",
          "notice", { pane: "private" });
        selectTab("private");
        supportDone(null);
      } else if (e.kind === "support_requested" || e.kind === "support_pending") {
        supportDone(e.text);
      } else if (e.kind === "held_rejected") heldRejected(e);
      else if (e.kind === "removed") setRemoved(e.text);
      else if (e.kind === "welcome_back") {
        if (!$("status").textContent) $("status").textContent = e.text;  // after a reload
      }
      else system(e.text, e.kind === "break_reminder" ? "wellbeing" : "notice");
      break;
    case "error":
      if (e.code !== "rate_limited") system(e.message || "Something went wrong.", "error");
      break;
    default: break;
  }
}

function onStatus(status, code) {
  const s = $("status");
  if (state.removed) return;
  if (status === "reconnecting") s.textContent = "Connection lost. Reconnecting…";
  else if (status === "reconnected") s.textContent = "Reconnected: you're caught up.";
  else if (status === "connected") s.textContent = "";
  else if (status === "closed") {
    if (code === 4403) { setRemoved(); return; }
    s.textContent = code === 4401 ? "Your session has ended. Please join again." :
      "You've left the room.";
    if (code === 4401) sessionStorage.clear();
    $("compose").hidden = true;
  }
}

function startChat(token, room) {
  state.room = room;
  $("join").hidden = true;
  $("chat").hidden = false;
  document.body.classList.add("in-chat");
  $("room-title").textContent = room.title;
  $("welcome-heading").textContent = `Welcome to ${room.title}`;
  // On the chat page the help sheet sits just above the message box: never over it.
  $("compose").before($("help"));
  restoring = true;
  for (const entry of state.entries) render(entry);
  restoring = false;
  if (state.privateRoom) showTabs();
  if (state.removed) {
    state.removed = false;
    setRemoved();
    return;
  }
  state.conn = new Connection(token, { onEvent, onStatus });
  state.conn.start();
  $("text").focus();
}

$("join-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("join-error").textContent = "";
  try {
    const res = await api("/api/join", { method: "POST",
      body: { room: $("room").value, name: $("name").value.trim(), age_band: $("band").value } });
    for (const key of ["lastSeq", "transcript", "removed", "removedText", "ignored", "helpOpen",
      "privateRoom", "privateEnded"]) {
      sessionStorage.removeItem(key);
    }
    sessionStorage.setItem("token", res.token);
    sessionStorage.setItem("room", JSON.stringify(res.room));
    startChat(res.token, res.room);
  } catch (err) {
    $("join-error").textContent = err.message;
  }
});

$("compose").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text || state.removed) return;
  const id = newId();
  const room = target();
  if (!state.conn || !state.conn.send({ type: "send", room, id, text })) {
    system("You're offline right now; we'll reconnect in a moment.", "error");
    return;
  }
  add({ t: "own", k: `own:${id}`, id, room, text, status: "sending" });
  $("text").value = "";
});

$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("compose").requestSubmit();
  }
});

// A reload in this tab picks the conversation up where it was.
const saved = sessionStorage.getItem("token");
if (saved) {
  state.entries = JSON.parse(sessionStorage.getItem("transcript") || "[]");
  state.removed = sessionStorage.getItem("removed") === "1";
  const help = sessionStorage.getItem("helpOpen");
  if (help) openHelp(help === "1" ? null : help);
  const room = JSON.parse(sessionStorage.getItem("room"));
  startChat(saved, room);
  if (room && room.id) loadRoomConfig(room.id);
} else {
  loadRooms();
}
