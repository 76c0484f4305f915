// A department's inbox: cases dispatched to it, the deadline counting down each second.
import { api, allCases } from "../api.js";
import { t, fmtTime, fmtDuration, localName } from "../i18n.js";
import { store } from "../store.js";
import { session, actor } from "../session.js";
import { onLiveQuiet } from "../live.js";
import { esc } from "./screen.js";
import { toast } from "../app.js";

export async function render(el, { query }) {
  const mine = session.user?.departments || [];
  const choices = mine.length ? store.departments.filter((d) => mine.includes(d.code)) : store.departments;
  let dept = query.get("department") || mine[0] || localStorage.getItem("zz.inboxDept") || choices[0]?.code;
  el.innerHTML = `<div class="panel"><h2>${t("inbox.title")}</h2>
    <label>${t("case.department")}</label><select id="i-dept" data-testid="inbox-department">${choices.map((d) =>
      `<option value="${d.code}" ${d.code === dept ? "selected" : ""}>${esc(localName(d))}</option>`).join("")}</select>
    <table data-testid="inbox"><thead><tr><th>#</th><th>${t("case.title")}</th><th>${t("case.state")}</th><th>${t("case.level")}</th>
    <th>${t("case.due")}</th><th>${t("inbox.left")}</th><th></th></tr></thead><tbody id="i-body"></tbody></table></div>`;
  el.querySelector("#i-dept").addEventListener("change", (e) => { dept = e.target.value; localStorage.setItem("zz.inboxDept", dept); load(); });

  let alive = true;
  async function load() {
    const q = `department=${encodeURIComponent(dept)}&state=dispatched&state=handling&state=suspended&state=feedback`;
    const { items } = await allCases(q, 1000);
    if (!alive) return; // the user moved on while the list was loading
    items.sort((a, b) => (a.due_at || "9").localeCompare(b.due_at || "9"));
    el.querySelector("#i-body").innerHTML = items.map((c) => `<tr data-case="${c.id}"><td><a href="#/case/${c.id}">${c.id}</a></td>
      <td>${esc(c.title || "")}<div class="muted small">${esc(c.location?.grid?.name || "")}</div></td>
      <td><span class="pill state-${c.state}">${t(`state.${c.state}`)}</span></td><td>${c.level ? t(`level.${c.level}`) : ""}</td>
      <td>${fmtTime(c.due_at)}</td><td><span class="countdown" data-due="${c.due_at || ""}" data-state="${c.state}"></span></td>
      <td>${c.state === "dispatched" ? `<button class="btn small" data-accept="${c.id}">${t("action.accept")}</button>` : ""}
        <a class="btn small ghost" href="#/case/${c.id}">${t("queue.open")}</a></td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">${t("inbox.empty")}</td></tr>`;
    el.querySelectorAll("[data-accept]").forEach((b) => b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await api(`/api/v1/cases/${b.dataset.accept}/actions`, { method: "POST", body: { action: "accept", actor: actor() } });
        toast(t("case.done", { action: t("action.accept"), id: b.dataset.accept })); await load();
      } catch (e) { b.disabled = false; toast(e.message, "alarm"); }
    }));
    tick();
  }

  function tick() {
    const now = Date.now();
    el.querySelectorAll(".countdown").forEach((s) => {
      if (!s.dataset.due) { s.textContent = "–"; return; }
      if (s.dataset.state === "suspended") { s.textContent = t("inbox.paused"); s.className = "countdown"; return; }
      const left = Date.parse(s.dataset.due) - now;
      s.textContent = left < 0 ? t("inbox.late", { d: fmtDuration(-left) }) : fmtDuration(left);
      s.className = `countdown ${left < 0 ? "late" : left < 4 * 3600e3 ? "soon" : "fine"}`;
    });
  }
  const timer = setInterval(tick, 1000);
  const off = onLiveQuiet("case", load);
  await load();
  return () => { alive = false; clearInterval(timer); off(); };
}
