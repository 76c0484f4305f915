// Every call to zhizhi: bearer token when logged in, problem+json errors turned into Error(title/detail).
let token = localStorage.getItem("zz.token") || "";

export function setToken(value) {
  token = value || "";
  if (token) localStorage.setItem("zz.token", token); else localStorage.removeItem("zz.token");
}
export function getToken() { return token; }

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status; this.body = body;
  }
}

export async function api(path, { method = "GET", body, form, raw = false } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (form) payload = form;
  else if (body !== undefined) { headers["content-type"] = "application/json"; payload = JSON.stringify(body); }
  const res = await fetch(path, { method, headers, body: payload });
  if (raw) return res;
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (res.status === 401 && token && !path.startsWith("/api/v1/auth/")) {
    setToken(""); // the session ended (expired or logged out elsewhere): log in again
    location.hash = `#/login?next=${encodeURIComponent(location.hash)}`;
  }
  if (!res.ok) throw new ApiError(res.status, typeof data === "object" ? data : { detail: data });
  return data;
}

/** The answer, or `fallback` when the route does not exist (404/405): for capabilities not installed yet. */
export async function optional(path, fallback = null) {
  try { return await api(path); } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) return fallback;
    throw e;
  }
}

/** Every case matching `query`, page by page (up to `cap`), newest first as the API lists them. */
export async function allCases(query = "", cap = 3000) {
  const items = []; let total = 0;
  for (let offset = 0; offset < cap; offset += 500) {
    const page = await api(`/api/v1/cases?limit=500&offset=${offset}${query ? "&" + query : ""}`);
    total = page.total; items.push(...page.items);
    if (items.length >= total || !page.items.length) break;
  }
  return { items, total };
}
