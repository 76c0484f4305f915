// The indicator tree (体征指标) from the indicators capability, with the current values for the city or an area;
// without that capability installed the page says so (the big screen then computes its figures from the cases).
import { optional } from "../api.js";
import { t, localName } from "../i18n.js";
import { esc } from "./screen.js";

const STATUS = { green: "#3ad29f", yellow: "#ffb547", red: "#ff5a5f" };

export async function render(el, { query }) {
  const tree = await optional("/api/v1/indicators/tree", null);
  if (tree === null) {
    el.innerHTML = `<div class="panel"><h2>${t("nav.indicators")}</h2><p class="muted" data-testid="no-indicators">${t("indicators.none")}</p>
      <p><a href="#/screen">${t("nav.screen")}</a></p></div>`;
    return;
  }
  const area = query.get("area");
  const reading = await optional(`/api/v1/indicators${area ? `?area=${encodeURIComponent(area)}` : ""}`, null);
  const values = {};
  for (const v of (reading && reading.values) || []) values[v.indicator] = v;
  const roots = Array.isArray(tree) ? tree : tree.sectors || tree.children || [];
  el.innerHTML = `<div class="panel tree" data-testid="indicator-tree"><h2>${t("nav.indicators")}
    ${reading ? `<span class="muted small">${esc(reading.area.name)}</span>` : ""}</h2>
    <p><a class="btn small ghost" href="/api/v1/indicators.csv${area ? `?area=${encodeURIComponent(area)}` : ""}" download>CSV</a></p>
    <ul>${roots.map((n) => node(n, values)).join("")}</ul></div>`;
}

function node(n, values) {
  const kids = n.children || [];
  const inds = n.indicators || [];
  return `<li data-code="${esc(n.code || "")}"><b>${esc(localName(n) || n.code || "")}</b>
    ${inds.length || kids.length ? `<ul>${inds.map((i) => indicator(i, values[i.code])).join("")}${kids.map((k) => node(k, values)).join("")}</ul>` : ""}</li>`;
}

function indicator(i, v) {
  const value = v && v.value != null ? (typeof v.value === "number" && !Number.isInteger(v.value) ? v.value.toFixed(2) : v.value) : "–";
  const color = v && STATUS[v.status] ? STATUS[v.status] : "#7f9cc7";
  return `<li data-indicator="${esc(i.code)}"><i style="display:inline-block;width:8px;height:8px;border-radius:50%;background:${color}"></i>
    ${esc(localName(i))} <b>${esc(value)}</b>${esc(i.unit || "")}
    ${v && v.period ? `<span class="muted small">${esc(v.period)}</span>` : ""}
    ${i.description ? `<div class="muted small">${esc(i.description)}</div>` : ""}</li>`;
}
