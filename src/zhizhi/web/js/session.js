// Who is using the console. With the access capability installed, the user logs in and the server decides
// (roles, scope, `allowed_actions`). Without it (/api/v1/auth/me answers 404) the console runs in dev mode:
// the user picks a role so that the role-aware views can be tried; the server enforces nothing then.
import { api, ApiError, setToken, getToken } from "./api.js";

export const ROLES = ["grid_worker", "dispatcher", "handler", "leader", "citizen", "auditor", "admin"];

/** Dev mode only: which actions each role's people do. With auth, `allowed_actions` from the server rules. */
export const ROLE_ACTIONS = {
  grid_worker: [],
  citizen: ["evaluate"],
  dispatcher: ["register", "reject", "dispatch", "reassign", "verify", "supervise", "locate", "categorise",
    "escalate", "reopen", "suspend", "resume"],
  handler: ["accept", "return", "handle", "escalate", "suspend", "resume"],
  leader: ["supervise"],
  auditor: [],
  admin: null, // every action
};

export const session = { mode: "unknown", user: null };

export async function detectSession() {
  try {
    const me = await api("/api/v1/auth/me");
    session.mode = "auth"; session.user = me.user || me;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      session.mode = "dev";
      const role = localStorage.getItem("zz.devRole") || "admin";
      const dept = localStorage.getItem("zz.devDept") || "";
      session.user = { id: null, username: `dev-${role}`, display_name: "", roles: [role], places: [],
        departments: dept ? [dept] : [] };
    } else if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      session.mode = "auth"; session.user = null; setToken("");
    } else throw e;
  }
  return session;
}

export async function login(username, password) {
  const res = await api("/api/v1/auth/login", { method: "POST", body: { username, password } });
  setToken(res.access_token);
  session.mode = "auth"; session.user = res.user;
  return res.user;
}

export function devLogin(role, department) {
  localStorage.setItem("zz.devRole", role);
  if (department) localStorage.setItem("zz.devDept", department); else localStorage.removeItem("zz.devDept");
  session.user = { id: null, username: `dev-${role}`, display_name: "", roles: [role], places: [],
    departments: department ? [department] : [] };
}

export async function logout() {
  if (session.mode === "auth" && getToken()) {
    try { await api("/api/v1/auth/logout", { method: "POST" }); } catch { /* already gone */ }
  }
  setToken("");
  localStorage.removeItem("zz.devRole"); localStorage.removeItem("zz.devDept");
  session.user = null;
}

export function roles() { return session.user ? session.user.roles || [] : []; }
export function hasRole(...wanted) { return roles().includes("admin") || wanted.some((r) => roles().includes(r)); }
export function mainRole() { return roles()[0] || "citizen"; }

/** Who the timeline records for an action done from the console. */
export function actor() {
  const u = session.user || {};
  return { name: (u.display_name || u.username || "console").slice(0, 100), role: mainRole().slice(0, 32),
    department: (u.departments || [])[0] || null };
}

/** The actions to offer on a case: the server's list; in dev mode narrowed to what the chosen role does. */
export function actionsFor(caseJson, catalogueActions) {
  let allowed = caseJson.allowed_actions;
  if (!Array.isArray(allowed)) allowed = catalogueActions.map((a) => a.code);
  if (session.mode === "dev") {
    const sets = roles().map((r) => ROLE_ACTIONS[r]);
    if (!sets.includes(null)) allowed = allowed.filter((a) => sets.some((s) => s && s.includes(a)));
  }
  return allowed;
}
