// The young person's room: join, chat, help, report, reconnect with resume.
import { api, el, timeOf, newId, Connection, loadResources } from "/static/common.js";

const $ = (id) => document.getElementById(id);
const state = { me: null, room: null, conn: null, pending: new Map(), muted: false, paused: false };

function openHelp(intro) {
  $("help").hidden = false;
  $("help-toggle").setAttribute("aria-expanded", "true");
  if (intro) $("help-intro").textContent = intro;
}

$("help-toggle").addEventListener("click", () => {
  if ($("help").hidden) openHelp(); else closeHelp();
});
function closeHelp() {
  $("help").hidden = true;
  $("help-toggle").setAttribute("aria-expanded", "false");
}
$("help-close").addEventListener("click", closeHelp);

loadResources($("resources")).then((c) => { $("complaints").textContent = c; });

async function loadRooms() {
  try {
    const { rooms } = await api("/api/rooms/open");
    $("room").replaceChildren(...rooms.map((r) => el("option", { value: r.id }, r.title)));
  } catch {
    $("join-error").textContent = "We couldn't load the rooms. Please try again in a moment.";
  }
}

function system(text, kind = "system") {
  $("messages").append(el("li", { class: `note ${kind}` }, text));
  scroll();
}

function scroll() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function renderMessage(m) {
  const mine = state.me && m.from.id === state.me.id;
  const pending = mine ? state.pending.get(m.id) : null;
  if (pending) { pending.remove(); state.pending.delete(m.id); }
  const staff = m.from.role !== "participant";
  const item = el("li", { class: `msg ${mine ? "mine" : "theirs"} ${staff ? "staff" : ""}`, "data-seq": m.seq },
    el("span", { class: "who" }, mine ? "You" : m.from.name,
      staff ? el("span", { class: "badge" }, m.from.role === "counsellor" ? "Counsellor" : "Facilitator") : null),
    el("span", { class: "text" }, m.text),
    el("span", { class: "meta" }, timeOf(m.ts)));
  if (!mine) {
    item.append(el("button", { class: "link report", "aria-label": `Report message from ${m.from.name}`,
      onclick: () => report(m) }, "Report"));
  }
  $("messages").append(item);
  scroll();
}

function report(m) {
  state.conn.send({ type: "report", room: m.room, seq: m.seq });
}

function showPending(id, text) {
  const item = el("li", { class: "msg mine pending", "data-id": id },
    el("span", { class: "who" }, "You"), el("span", { class: "text" }, text),
    el("span", { class: "meta" }, "Sending…"));
  state.pending.set(id, item);
  $("messages").append(item);
  scroll();
}

function settle(ack) {
  const item = state.pending.get(ack.ref);
  if (!item) return;
  const meta = item.querySelector(".meta");
  if (ack.status === "sent") {
    if (ack.text) item.querySelector(".text").textContent = ack.text;
    meta.textContent = "Sent";
    return;  // replaced by the message itself when it arrives
  }
  state.pending.delete(ack.ref);
  item.classList.remove("pending");
  if (ack.status === "held") {
    item.classList.add("held");
    meta.textContent = "Waiting for a facilitator";
    if (ack.notice) item.append(el("p", { class: "notice-inline" }, ack.notice));
  } else if (ack.status === "blocked") {
    item.classList.add("blocked");
    meta.textContent = "Not sent";
    if (ack.notice) item.append(el("p", { class: "notice-inline" }, ack.notice));
  } else {
    item.classList.add("blocked");
    meta.textContent = "Not sent";
    item.append(el("p", { class: "notice-inline" }, rejectText(ack.code)));
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

function onRoomState(r) {
  if (r.room === state.privateRoom && r.closed) {
    state.privateRoom = null;
    $("target-row").hidden = true;
    system("Your one-to-one chat with the counsellor has ended. You're still in the group.", "notice");
    return;
  }
  if (r.room !== state.room.id) return;
  state.paused = r.paused;
  const me = r.members.find((m) => state.me && m.id === state.me.id);
  state.muted = Boolean(me && me.muted);
  const banner = $("banner");
  const lines = [];
  if (r.paused) lines.push("The room is paused for a moment.");
  if (r.slow_mode_s) lines.push(`Slow mode: one message every ${r.slow_mode_s} seconds.`);
  if (state.muted) lines.push("You're muted for now: you can still read along.");
  banner.textContent = lines.join(" ");
  banner.hidden = lines.length === 0;
  $("text").disabled = state.muted;
  $("send").disabled = state.muted;
}

function onEvent(e) {
  switch (e.type) {
    case "welcome":
      state.me = e.you;
      for (const r of e.rooms) {
        if (r.room === state.room.id) onRoomState(r);
        else if (!r.closed) {  // an open one-to-one room, after a reconnect
          state.privateRoom = r.room;
          $("target-row").hidden = false;
        }
      }
      if (e.rooms.some((r) => r.gap)) {
        $("messages").replaceChildren();
        system("You were away for a while, so here are the latest messages.");
      }
      break;
    case "message":
      if (e.room === state.room.id) renderMessage(e);
      else if (state.privateRoom && e.room === state.privateRoom) renderMessage(e);
      break;
    case "ack": settle(e); break;
    case "room": onRoomState(e); break;
    case "redact": {
      const item = $("messages").querySelector(`[data-seq="${e.seq}"]`);
      if (item) item.remove();
      break;
    }
    case "notice":
      if (e.kind === "signpost") openHelp(e.text);
      else if (e.kind === "escalated" && e.room) {
        state.privateRoom = e.room;
        $("target-row").hidden = false;
        $("target").value = "private";
        system(`${e.text} Your counsellor's messages appear here, marked "Counsellor".`, "notice");
      } else system(e.text, e.kind === "break_reminder" ? "wellbeing" : "notice");
      if (e.kind === "removed") endChat();
      break;
    case "error":
      if (e.code !== "rate_limited") system(e.message || "Something went wrong.", "error");
      break;
    default: break;
  }
}

function onStatus(status, code) {
  const s = $("status");
  if (status === "reconnecting") s.textContent = "Connection lost. Reconnecting…";
  else if (status === "reconnected") s.textContent = "Reconnected: you're caught up.";
  else if (status === "connected") s.textContent = "";
  else if (status === "closed") {
    s.textContent = code === 4401 ? "Your session has ended. Please join again." :
      "You've left the room.";
    if (code === 4401) sessionStorage.clear();
  }
}

function endChat() {
  $("compose").hidden = true;
}

function startChat(token, room) {
  state.room = room;
  $("join").hidden = true;
  $("chat").hidden = false;
  $("room-title").textContent = room.title;
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
    sessionStorage.setItem("token", res.token);
    sessionStorage.setItem("room", JSON.stringify(res.room));
    sessionStorage.removeItem("lastSeq");
    startChat(res.token, res.room);
  } catch (err) {
    $("join-error").textContent = err.message;
  }
});

$("compose").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  const id = newId();
  const target = state.privateRoom && $("target").value === "private" ?
    state.privateRoom : state.room.id;
  if (!state.conn.send({ type: "send", room: target, id, text })) {
    system("You're offline right now; we'll reconnect in a moment.", "error");
    return;
  }
  showPending(id, text);
  $("text").value = "";
});

$("text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("compose").requestSubmit();
  }
});

const saved = sessionStorage.getItem("token");
if (saved) startChat(saved, JSON.parse(sessionStorage.getItem("room")));
else loadRooms();
