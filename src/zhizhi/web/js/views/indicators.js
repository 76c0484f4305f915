// The indicator tree (体征指标) from the indicators capability; without it, a note and the case-based figures.
import { optional } from "../api.js";
import { t, localName } from "../i18n.js";
import { esc } from "./screen.js";

export async function render(el) {
  const tree = await optional("/api/v1/indicators/tree", null);
  if (tree === null) {
    el.innerHTML = `<div class="panel"><h2>${t("nav.indicators")}</h2><p class="muted" data-testid="no-indicators">${t("indicators.none")}</p>
      <p><a href="#/screen">${t("nav.screen")}</a></p></div>`;
    return;
  }
  const roots = Array.isArray(tree) ? tree : tree.children || tree.items || tree.nodes || [tree];
  el.innerHTML = `<div class="panel tree" data-testid="indicator-tree"><h2>${t("nav.indicators")}</h2>
    <p><a class="btn small ghost" href="/api/v1/indicators.csv" download>CSV</a></p><ul>${roots.map(node).join("")}</ul></div>`;
}

function node(n) {
  const kids = n.children || [];
  const name = localName(n) || n.label || n.code || "";
  const value = n.value != null ? ` <b>${esc(typeof n.value === "number" && !Number.isInteger(n.value) ? n.value.toFixed(2) : n.value)}</b>${esc(n.unit || "")}` : "";
  return `<li data-code="${esc(n.code || "")}">${esc(name)}${value}${n.description ? ` <span class="muted small">${esc(n.description)}</span>` : ""}
    ${kids.length ? `<ul>${kids.map(node).join("")}</ul>` : ""}</li>`;
}
