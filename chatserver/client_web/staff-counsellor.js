// The counsellor's page: the case queue, the hand-over (the young person's display
// name, the note, what was said before, and disclosures still held), the one-to-one
// chat and close-with-outcome. Notes and held disclosures sit behind content warnings.
import { el, timeOf, newId } from "/static/common.js";
import { $, S, on, onStart, warned, attention } from "/static/staff-core.js";

const C = { cases: new Map(), open: null, since: Date.now() };
const RANK = { emergency: 0, urgent: 1, routine: 2 };

onStart(() => { $("counsellor").hidden = false; C.since = Date.now(); });

function who(c) { return c.name || "A young person"; }

function renderCases() {
  const open = [...C.cases.values()].filter((c) => c.status !== "closed" &&
    (c.status === "open" || c.counsellor === S.user.id))
    .sort((a, b) => RANK[a.urgency] - RANK[b.urgency] || a.ts - b.ts);
  $("cases").replaceChildren(...open.map((c) => el("li", { class: `case case-${c.urgency}` },
    el("strong", {}, c.urgency), ` ${who(c)}, from ${c.room}, ${timeOf(c.ts)}`,
    c.held && c.held.length ? el("span", { class: "small" },
      ` · ${c.held.length} held ${c.held.length === 1 ? "message" : "messages"}`) : null,
    c.note ? warned(c.note, "Content warning: show the note") : null,
    c.status === "open" ?
      el("button", { "aria-label": `Claim ${c.urgency} case: ${who(c)}`, onclick: () => claim(c) }, "Claim") :
      el("button", { "aria-label": `Open case: ${who(c)}`, onclick: () => showCase(c) }, "Open"))));
}

function claim(c) { S.conn.send({ type: "claim", case: c.id }); }

function contextItem(m) {
  const staff = m.from.role !== "participant";
  return el("li", { class: `msg theirs ${staff ? "staff" : ""}`, "data-seq": m.seq, "data-room": m.room },
    el("span", { class: "who" }, m.from.name, staff ? el("span", { class: "badge" }, m.from.role) : null),
    el("span", { class: "text" }, m.text), el("span", { class: "meta" }, timeOf(m.ts)));
}

function showCase(c) {
  C.open = c;
  $("case-heading").textContent = `Case: ${who(c)} (${c.urgency})`;
  $("handover-note").replaceChildren(c.note ?
    warned(c.note, "Content warning: show the note handed over") :
    el("span", { class: "small" }, "No note."));
  $("context").replaceChildren(...(c.context || []).map(contextItem));
  const held = c.held || [];
  $("handover-held").replaceChildren(...(held.length ? held.map((h) => el("li", { class: "held-item" },
    el("p", {}, el("strong", {}, h.from.name), ` at ${timeOf(h.ts)} · `,
      h.rules.map((r) => r.category).join(", ")),
    warned(h.text, "Content warning: show the held message"))) :
    [el("li", { class: "small" }, "None: nothing of theirs was waiting for a facilitator.")]));
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
  const room = C.open && C.open.private_room;
  if (text && room && S.conn.send({ type: "send", room, id: newId(), text })) $("private-text").value = "";
});
$("close-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const outcome = $("outcome").value.trim();
  if (!outcome || !C.open) return;
  S.conn.send({ type: "close_case", case: C.open.id, outcome });
  $("outcome").value = "";
});

on("case", (e) => {
  const isNew = !C.cases.has(e.case.id);
  C.cases.set(e.case.id, e.case);
  renderCases();
  // The queue sent at sign-in is not news: only a case opened since then sounds.
  if (isNew && e.case.status === "open" && e.case.urgency !== "routine" && e.case.ts >= C.since) {
    attention(`New ${e.case.urgency} case waiting`);
  }
  if (e.case.counsellor === S.user.id && e.case.status === "claimed") showCase(e.case);
  if (e.case.status === "closed" && C.open && C.open.id === e.case.id) endCase();
});
on("message", (e) => {
  if (!C.open || e.room !== C.open.private_room) return;
  const list = $("private");
  if (list.querySelector(`[data-seq="${e.seq}"][data-room="${e.room}"]`)) return;
  list.append(contextItem(e));
  list.scrollTop = list.scrollHeight;
});
on("room", (r) => { if (C.open && r.room === C.open.private_room && r.closed) endCase(); });
