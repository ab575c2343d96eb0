// The staff console's entry point: sign-in, then only the modules the role uses
// (facilitator, counsellor, ops on the shared core of staff-core.js). Plain ES modules
// from client_web: no build step.
import { setRoleLoader, startRole, wireSignIn } from "/static/staff-core.js";

const MODULES = {
  facilitator: ["facilitator"],
  counsellor: ["counsellor"],
  ops: ["facilitator", "ops"],  // ops see the dashboard read-only, plus their tools
};

// A role not listed loads nothing: it can do nothing here (fail closed).
setRoleLoader(async (role) => {
  await Promise.all((MODULES[role] || []).map((m) => import(`/static/staff-${m}.js`)));
});

wireSignIn();
const saved = sessionStorage.getItem("staffToken");
if (saved) startRole(saved, JSON.parse(sessionStorage.getItem("staffUser")));
