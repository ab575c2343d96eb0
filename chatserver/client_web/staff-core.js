// The staff console's small shared core: sign-in and sign-out, the one connection,
// the frame dispatch each role module subscribes to, content warnings, and the opt-in
// alert sound and browser notification. Role code lives in staff-facilitator.js,
// staff-counsellor.js and staff-ops.js; staff.js loads only the modules a role uses.
import { api, el, Connection } from "/static/common.js";

export const $ = (id) => document.getElementById(id);

/** Shared session state: the modules read it, only this core replaces it. */
export const S = { token: null, user: null, conn: null };

const handlers = new Map();
const starters = [];

/** A role module listens for a frame type (several modules may listen for one). */
export function on(type, fn) {
  if (!handlers.has(type)) handlers.set(type, []);
  handlers.get(type).push(fn);
}

/** A role module's set-up, run once the user is signed in. */
export function onStart(fn) { starters.push(fn); }

function dispatch(e) {
  for (const fn of handlers.get(e.type) || []) fn(e);
  if (e.type === "error") $("status").textContent = e.message;
}

export function say(text) { $("status").textContent = text; }

/**
 * Risky text behind a content warning: closed until the reader chooses to open it.
 * Every place a disclosure, an alert excerpt, a held message or a note may appear
 * uses this, so the console never shows such text in plain view.
 */
export function warned(text, label = "Content warning: show message") {
  return el("details", { class: "cw" }, el("summary", {}, label),
    el("p", { class: "held-text" }, text));
}

// ---------------------------------------------------------------- sign in / out
export function start(token, user) {
  S.token = token;
  S.user = user;
  $("login").hidden = true;
  $("who").textContent = `Signed in as ${user.name} (${user.role})`;
  $("account").hidden = false;
  S.conn = new Connection(token, { onEvent: dispatch, onStatus });
  for (const fn of starters) fn(user);
  S.conn.start();
}

function onStatus(status, code) {
  say(status === "reconnecting" ? "Connection lost. Reconnecting…" :
    status === "closed" ? `Disconnected (${code}). Please sign in again.` : "");
  if (status === "closed" && code === 4401) forget();
}

function forget() {
  for (const key of ["staffToken", "staffUser", "lastSeq"]) sessionStorage.removeItem(key);
}

/**
 * Sign-out ends the session on the server (POST /api/logout: every token of this account
 * stops working, open sockets close 4401), then forgets it here and shows the sign-in
 * form on a fresh page, so nothing of the last session stays on screen.
 */
export async function signOut() {
  try {
    await api("/api/logout", { method: "POST", token: S.token, body: {} });
  } catch { /* already ended (401): forgetting it here is what is left to do */ }
  if (S.conn) S.conn.stop();
  forget();
  location.replace("/staff");
}

export function wireSignIn() {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const res = await api("/api/login", { method: "POST",
        body: { username: $("username").value, password: $("password").value } });
      sessionStorage.setItem("staffToken", res.token);
      sessionStorage.setItem("staffUser", JSON.stringify(res.user));
      await startRole(res.token, res.user);
    } catch (err) {
      $("login-error").textContent = err.message;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  wireAttention();
}

let roleLoader = async () => {};
/** staff.js says how a role's modules are loaded (import() of the ones it needs). */
export function setRoleLoader(fn) { roleLoader = fn; }
export async function startRole(token, user) {
  await roleLoader(user.role);
  start(token, user);
}

// ---------------------------------------------------------------- sound and notification
// Both are off by default (a shared office, a quiet ward) and kept per browser in
// localStorage: a preference, not a secret. A notification never carries risky text or
// a young person's name: it may show on a locked screen.
const PREFS = { sound: "staffAlertSound", notify: "staffAlertNotify" };
let audio = null;

function wireAttention() {
  const sound = $("pref-sound");
  const notify = $("pref-notify");
  sound.checked = localStorage.getItem(PREFS.sound) === "on";
  notify.checked = localStorage.getItem(PREFS.notify) === "on" &&
    "Notification" in window && Notification.permission === "granted";
  sound.addEventListener("change", () => {
    localStorage.setItem(PREFS.sound, sound.checked ? "on" : "off");
    if (sound.checked) beep();  // this click lets the page play sound from now on
    $("pref-result").textContent = sound.checked ? "Alert sound on." : "Alert sound off.";
  });
  notify.addEventListener("change", async () => {
    if (!notify.checked) {
      localStorage.setItem(PREFS.notify, "off");
      $("pref-result").textContent = "Browser notifications off.";
      return;
    }
    const answer = "Notification" in window ? await Notification.requestPermission() : "denied";
    notify.checked = answer === "granted";
    localStorage.setItem(PREFS.notify, notify.checked ? "on" : "off");
    $("pref-result").textContent = notify.checked ? "Browser notifications on." :
      "The browser did not allow notifications; you can allow them in its site settings.";
  });
}

function beep() {
  try {
    audio = audio || new AudioContext();
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 660;
    gain.gain.value = 0.15;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.25);
  } catch { /* no audio output: the visual alert still shows */ }
}

/** Something new needs a person now: sound and notify, if this browser opted in. */
export function attention(title) {
  if ($("pref-sound").checked) beep();
  if ($("pref-notify").checked && "Notification" in window &&
      Notification.permission === "granted") {
    try {
      const n = new Notification(title, { tag: "staff-alert" });
      n.addEventListener("click", () => { window.focus(); n.close(); });
    } catch { /* some browsers only notify from a service worker */ }
  }
}
