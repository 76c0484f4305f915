// The dispatcher's queue: reports to register and cases to dispatch, each with a suggestion and one-click dispatch.
// Suggestions come from the dispatch capability's routes when installed, otherwise from the responsibility table.
import { api, optional, allCases } from "../api.js";
import { t, fmtTime, localName } from "../i18n.js";
import { store, normalise, ruleSuggestion } from "../store.js";
import { actor } from "../session.js";
import { onLiveQuiet } from "../live.js";
import { esc } from "./screen.js";
import { toast } from "../app.js";

export async function render(el) {
  el.innerHTML = `<div class="panel"><h2>${t("queue.title")}</h2><div class="muted small" id="q-source"></div>
    <table data-testid="queue"><thead><tr><th>#</th><th>${t("case.title")}</th><th>${t("case.state")}</th><th>${t("case.place")}</th>
    <th>${t("queue.suggestion")}</th><th></th></tr></thead><tbody id="q-body"></tbody></table></div>`;

  let alive = true;
  async function load() {
    const queue = await optional("/api/v1/dispatch/queue", null);
    let items;
    if (queue) {
      // The dispatch capability's queue entries name the case by `case_id`.
      items = (Array.isArray(queue) ? queue : queue.items || []).map((q) => ({
        c: q.case || { ...q, id: q.case_id ?? q.id }, suggestions: q.suggestions || [] }));
      el.querySelector("#q-source").textContent = t("queue.fromDispatch");
    } else {
      const res = await allCases("state=reported&state=registered", 1000);
      items = res.items.map((c) => ({ c, suggestions: null }));
      el.querySelector("#q-source").textContent = t("queue.fromRules");
    }
    if (!alive) return; // the user moved on while the queue was loading
    const body = el.querySelector("#q-body");
    body.innerHTML = items.map(({ c, suggestions }) => {
      const n = normalise(c);
      const s = suggestions ? suggestions[0] : (c.state === "registered" ? ruleSuggestion(n) : null);
      const place = c.location ? [c.location.street?.name, c.location.grid?.name].filter(Boolean).join(" › ") : "";
      return `<tr data-case="${c.id}"><td><a href="#/case/${c.id}">${c.id}</a></td><td>${esc(c.title || "")}
        <div class="muted small">${fmtTime(c.reported_at)} · ${esc(t(`source.${c.source}`))}</div></td>
        <td><span class="pill state-${c.state}">${t(`state.${c.state}`)}</span>${c.overdue ? ` <span class="overdue">${t("case.overdue")}</span>` : ""}</td>
        <td>${esc(place || t("queue.noPlace"))}</td>
        <td>${s ? `${esc(store.byDept[s.department_code] ? localName(store.byDept[s.department_code]) : s.department_name || s.department_code)} · ${t(`level.${s.level}`)}
          ${s.confidence != null ? `<span class="muted small">(${Math.round(100 * s.confidence)}%)</span>` : ""}` : `<span class="muted">–</span>`}</td>
        <td>${(c.state === "registered" || (queue && c.state === "reported")) && s ? `<button class="btn small" data-dispatch="${c.id}" data-testid="dispatch-${c.id}"
          data-dept="${s.department_code}" data-level="${s.level}">${t("queue.dispatch")}</button>` : `<a class="btn small ghost" href="#/case/${c.id}">${t("queue.open")}</a>`}</td></tr>`;
    }).join("") || `<tr><td colspan="6" class="muted">${t("queue.empty")}</td></tr>`;
    body.querySelectorAll("[data-dispatch]").forEach((b) => b.addEventListener("click", () => dispatch(b, !!queue)));
  }

  async function dispatch(button, viaDecision) {
    const id = Number(button.dataset.dispatch);
    button.disabled = true;
    try {
      if (viaDecision) await api(`/api/v1/cases/${id}/dispatch-decision`, { method: "POST", body: { accept: true } });
      else await api(`/api/v1/cases/${id}/actions`, { method: "POST", body: { action: "dispatch", actor: actor(),
        department: button.dataset.dept, level: button.dataset.level, note: t("queue.oneClickNote") } });
      toast(t("queue.dispatched", { id }));
      await load();
    } catch (e) { button.disabled = false; toast(`${t("common.error")}: ${e.message}`, "alarm"); }
  }

  const off = onLiveQuiet("case", load);
  await load();
  return () => { alive = false; off(); };
}
