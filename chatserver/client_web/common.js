// Shared by every page: API calls, safe rendering, and a WebSocket that resumes.
// Message text and names are only ever set with textContent, never as HTML.

export async function api(path, { method = "GET", body, token } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  let data = {};
  try { data = await res.json(); } catch { /* empty body */ }
  if (!res.ok) {
    const err = new Error((data.error && data.error.message) || `Request failed (${res.status})`);
    err.status = res.status;
    err.data = data;
    throw err;
  }
  return data;
}

/** Build an element: el("p", {class: "x"}, "text", child). Strings become text nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function timeOf(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function newId() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Close codes after which a client reconnects with `resume` (docs/protocol.md § Close codes).
const RECONNECT = new Set([1001, 1006, 1012, 1013, 1011]);
const MAX_PENDING = 20;

/**
 * One chat connection. Keeps the last seq per room and resumes from it after a drop,
 * with jittered exponential backoff, so a reconnect storm spreads out (FL-08).
 * Events are delivered once: a seq already seen in a room is dropped.
 */
export class Connection {
  constructor(token, { onEvent, onStatus }) {
    this.token = token;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.lastSeq = JSON.parse(sessionStorage.getItem("lastSeq") || "{}");
    this.attempt = 0;
    this.stopped = false;
    this.connected = false;
    this.gone = false;
    // Frames sent before the welcome (someone typing while the socket opens, or while it
    // reconnects): sent, in order, once it arrives, so nobody is told they are offline
    // for a connection that is only starting. Bounded: past that, "offline" is the truth.
    this.pending = [];
  }

  start() { this.open(false); }

  open(resuming) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    ws.addEventListener("open", () => {
      const hello = { type: "hello", token: this.token };
      if (resuming || Object.keys(this.lastSeq).length) hello.resume = this.lastSeq;
      ws.send(JSON.stringify(hello));
    });
    ws.addEventListener("message", (e) => this.receive(JSON.parse(e.data)));
    ws.addEventListener("close", (e) => {
      this.connected = false;
      if (this.stopped) return;
      if (RECONNECT.has(e.code)) {
        this.attempt += 1;
        const base = Math.min(30000, 500 * 2 ** Math.min(this.attempt, 6));
        const delay = base / 2 + Math.random() * base / 2;
        this.onStatus("reconnecting", e.code);
        this.timer = setTimeout(() => this.open(true), delay);
      } else {
        this.gone = true;
        this.pending = [];
        this.onStatus("closed", e.code);
      }
    });
  }

  receive(event) {
    if (event.type === "welcome") {
      this.connected = true;
      const wasRetry = this.attempt > 0;
      this.attempt = 0;
      this.onStatus(wasRetry ? "reconnected" : "connected");
      this.onEvent(event);
      for (const [room, messages] of Object.entries(event.history || {})) {
        for (const m of messages) this.message(m);
      }
      const waiting = this.pending;
      this.pending = [];
      for (const frame of waiting) this.ws.send(JSON.stringify(frame));
      return;
    }
    if (event.type === "message") { this.message(event); return; }
    this.onEvent(event);
  }

  message(m) {
    const last = this.lastSeq[m.room] || 0;
    if (m.seq <= last) return;  // already shown: never twice
    this.lastSeq[m.room] = m.seq;
    sessionStorage.setItem("lastSeq", JSON.stringify(this.lastSeq));
    this.onEvent({ ...m, type: "message" });
  }

  send(frame) {
    if (this.connected) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    if (this.stopped || this.gone || this.pending.length >= MAX_PENDING) return false;
    this.pending.push(frame);
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
  }
}

export async function loadResources(list) {
  try {
    const { resources, complaints } = await api("/api/resources");
    list.replaceChildren(...resources.map((r) => el("li", {},
      el("strong", {}, r.name), " ",
      r.phone ? el("a", { href: `tel:${r.phone.replace(/\s/g, "")}` }, r.phone) : null,
      r.text ? el("span", {}, ` ${r.text}`) : null,
      r.hours ? el("span", { class: "hours" }, ` (${r.hours})`) : null)));
    return complaints;
  } catch {
    return "";
  }
}

// Quick exit for the young person's pages: leaves at once for a neutral site, with
// location.replace so Back does not return here, the tab's copy of the chat cleared
// first. A button, or Esc pressed twice within a second.
export const EXIT_URL = "https://www.bbc.co.uk/weather";

export function installQuickExit(button, beforeLeaving = () => {}) {
  const leave = () => {
    try { sessionStorage.clear(); } catch { /* storage may be unavailable */ }
    beforeLeaving();
    document.title = "Weather";
    document.body.replaceChildren();
    location.replace(EXIT_URL);
  };
  button.addEventListener("click", leave);
  let lastEscape = -Infinity;
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape") return;
    const now = performance.now();
    if (now - lastEscape < 1000) leave();
    else lastEscape = now;
  });
}

// One crisis or support service, with call, text and website links.
export function resourceItem(r) {
  const parts = [el("strong", {}, r.name)];
  if (r.phone) {
    parts.push(" ", el("a", { href: `tel:${r.phone.replace(/\s/g, "")}` }, `Call ${r.phone}`));
  }
  const sms = r.text && /\btext\s+(\w+)\s+to\s+(\d{4,6})\b/i.exec(r.text);
  if (sms) parts.push(" ", el("a", { href: `sms:${sms[2]}` }, r.text));
  else if (r.text) parts.push(el("span", {}, ` ${r.text}`));
  if (r.url) {
    let host = r.url;
    try { host = new URL(r.url).hostname.replace(/^www\./, ""); } catch { /* keep as is */ }
    parts.push(" ", el("a", { href: r.url, target: "_blank", rel: "noopener noreferrer" }, host));
  }
  if (r.hours) parts.push(el("span", { class: "hours" }, ` (${r.hours})`));
  return el("li", {}, ...parts);
}
