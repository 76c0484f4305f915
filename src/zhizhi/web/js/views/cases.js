// All cases, filtered and paged: the list behind every other view.
import { api } from "../api.js";
import { t, fmtTime, localName } from "../i18n.js";
import { store } from "../store.js";
import { esc } from "./screen.js";

const STATES = ["reported", "registered", "dispatched", "handling", "suspended", "feedback", "closed", "evaluated", "rejected"];

export async function render(el, { query }) {
  let offset = Number(query.get("offset") || 0);
  el.innerHTML = `<div class="panel"><h2>${t("nav.cases")}</h2>
    <form id="f" style="display:flex;gap:8px;flex-wrap:wrap;align-items:end">
      <select name="state"><option value="">${t("cases.anyState")}</option>${STATES.map((s) => `<option value="${s}">${t(`state.${s}`)}</option>`).join("")}</select>
      <input name="q" placeholder="${t("cases.search")}"> <label style="margin:0"><input type="checkbox" name="overdue"> ${t("case.overdue")}</label>
      <button class="btn small">${t("cases.filter")}</button></form>
    <table data-testid="case-list"><thead><tr><th>#</th><th>${t("case.title")}</th><th>${t("case.state")}</th><th>${t("case.category")}</th>
    <th>${t("case.department")}</th><th>${t("case.reported")}</th><th>${t("case.due")}</th></tr></thead><tbody id="b"></tbody></table>
    <div style="margin-top:8px"><button class="btn small ghost" id="prev">‹</button> <span id="pg" class="muted"></span> <button class="btn small ghost" id="next">›</button></div></div>`;
  const f = el.querySelector("#f");
  async function load() {
    const fd = new FormData(f); const p = new URLSearchParams({ limit: "50", offset: String(offset) });
    if (fd.get("state")) p.append("state", fd.get("state"));
    if (fd.get("q")) p.append("q", fd.get("q"));
    if (fd.get("overdue")) p.append("overdue", "true");
    const page = await api(`/api/v1/cases?${p}`);
    el.querySelector("#b").innerHTML = page.items.map((c) => `<tr><td><a href="#/case/${c.id}">${c.id}</a></td><td>${esc(c.title || "")}</td>
      <td><span class="pill state-${c.state}">${t(`state.${c.state}`)}</span></td>
      <td>${esc(store.byCategory[c.category_code] ? localName(store.byCategory[c.category_code]) : c.category_code || "")}</td>
      <td>${esc(store.byDept[c.department_code] ? localName(store.byDept[c.department_code]) : c.department_code || "")}</td>
      <td>${fmtTime(c.reported_at)}</td><td class="${c.overdue ? "overdue" : ""}">${fmtTime(c.due_at)}</td></tr>`).join("");
    el.querySelector("#pg").textContent = `${page.total ? offset + 1 : 0}–${offset + page.items.length} / ${page.total}`;
    el.querySelector("#prev").disabled = offset === 0;
    el.querySelector("#next").disabled = offset + page.items.length >= page.total;
  }
  f.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
  el.querySelector("#prev").addEventListener("click", () => { offset = Math.max(0, offset - 50); load(); });
  el.querySelector("#next").addEventListener("click", () => { offset += 50; load(); });
  await load();
}
