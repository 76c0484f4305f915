// Catalogue look-ups shared by every view, loaded once.
import { api } from "./api.js";

export const store = { categories: [], departments: [], rules: [], actions: [], byCategory: {}, byDept: {} };

export async function loadCatalogue() {
  if (store.categories.length) return store;
  const [categories, departments, rules, actions] = await Promise.all([
    api("/api/v1/catalogue/categories"), api("/api/v1/catalogue/departments"),
    api("/api/v1/catalogue/rules"), api("/api/v1/catalogue/actions")]);
  Object.assign(store, { categories, departments, rules, actions });
  store.byCategory = Object.fromEntries(categories.map((c) => [c.code, c]));
  store.byDept = Object.fromEntries(departments.map((d) => [d.code, d]));
  return store;
}

/** A case as the views use it, from the API's CaseOut or from a live summary. */
export function normalise(c) {
  if (c.location) {
    const l = c.location;
    return { id: c.id, title: c.title, state: c.state, category_code: c.category_code,
      department_code: c.department_code, level: c.level, lon: l.lon, lat: l.lat,
      codes: [l.district?.code, l.street?.code, l.community?.code, l.grid?.code].filter(Boolean),
      grid_name: l.grid?.name, reported_at: c.reported_at, due_at: c.due_at, closed_at: c.closed_at,
      overdue: c.overdue, satisfaction: c.satisfaction, source: c.source };
  }
  return { id: c.id, title: c.title, state: c.state, category_code: c.category_code,
    department_code: c.department_code, level: c.level, lon: c.lon, lat: c.lat,
    codes: [c.district, c.street, c.community, c.grid].filter(Boolean), reported_at: c.reported_at,
    due_at: c.due_at, closed_at: c.closed_at ?? null, overdue: c.overdue, satisfaction: c.satisfaction ?? null,
    source: c.source };
}

/** The most specific responsibility rule for a case: the dispatcher's suggestion when no model is installed. */
export function ruleSuggestion(c) {
  if (!c.category_code) return null;
  const cat = store.byCategory[c.category_code];
  const codes = new Set(c.codes || []);
  let best = null; let bestScore = -1;
  for (const r of store.rules) {
    let score;
    if (r.category === c.category_code) score = 20;
    else if (cat && r.category === cat.parent_code) score = 10;
    else if (r.category === "*") score = 0;
    else continue;
    if (r.area === "*") score += 0;
    else if (codes.has(r.area)) score += 5 + r.area.length / 100;
    else continue;
    if (score > bestScore) { best = r; bestScore = score; }
  }
  if (!best) return null;
  return { department_code: best.department, department_name: store.byDept[best.department]?.name_zh || best.department,
    level: best.level, category_code: c.category_code, confidence: null, source: "rule" };
}
