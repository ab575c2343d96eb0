// The "Tell us" page: a young person tells the team what we got wrong (issue 15 § 4).
// POST /api/feedback; the server's own kind words are shown, as text, whatever happens.
import { api, installQuickExit, resourceItem } from "/static/common.js";

const $ = (id) => document.getElementById(id);

installQuickExit($("exit"));

async function loadResources() {
  try {
    const { resources } = await api("/api/resources");
    $("resources").replaceChildren(...resources.map(resourceItem));
  } catch { /* the panel keeps its own words */ }
}
loadResources();

const SORRY = "Sorry, that didn't reach us. Please try again in a moment.";

$("feedback-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("feedback-text").value.trim();
  $("feedback-error").textContent = "";
  if (!text) {
    $("feedback-error").textContent = "Please write something first.";
    $("feedback-text").focus();
    return;
  }
  $("feedback-send").disabled = true;
  try {
    const res = await api("/api/feedback", { method: "POST", body: { text } });
    $("feedback-form").hidden = true;
    $("feedback-notice").textContent = res.notice;
    // Contact details were masked: show what the team will read.
    $("feedback-kept").hidden = res.text === text;
    $("feedback-kept").textContent = res.text === text ? "" :
      `To keep you safe we hid some details. The team will read: ${res.text}`;
    $("feedback-thanks").hidden = false;
    $("feedback-thanks").focus();
    $("feedback-text").value = "";
    if (res.signpost) showHelp(res.signpost_notice);
  } catch (err) {
    $("feedback-error").textContent = err.status && err.status < 500 ? err.message : SORRY;
    if (err.data && err.data.signpost) showHelp();
  } finally {
    $("feedback-send").disabled = false;
  }
});

// A risk disclosure: crisis support comes first, as on the chat page.
function showHelp(intro) {
  if (intro) $("help-intro").textContent = intro;
  $("help").classList.add("signposted");
  $("help-heading").focus();
}

$("feedback-again").addEventListener("click", () => {
  $("feedback-thanks").hidden = true;
  $("feedback-form").hidden = false;
  $("feedback-text").focus();
});
