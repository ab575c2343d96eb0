// Ops tools: try a message against the rules, reload the rules, read the audit log.
// (Ops also get the facilitator's dashboard, read-only, from staff-facilitator.js.)
import { api, el } from "/static/common.js";
import { $, S, onStart } from "/static/staff-core.js";

onStart(() => { $("ops").hidden = false; refreshAudit(); });

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
