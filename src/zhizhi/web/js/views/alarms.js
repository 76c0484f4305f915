// Alarms from the sensing capability, with acknowledge; without it installed the page says there is no sensing data.
import { api, optional } from "../api.js";
import { t, fmtTime } from "../i18n.js";
import { onLiveQuiet } from "../live.js";
import { esc } from "./screen.js";
import { toast } from "../app.js";

export async function render(el) {
  el.innerHTML = `<div class="panel"><h2>${t("nav.alarms")}</h2><div id="a-body" data-testid="alarms"></div></div>`;
  let alive = true;
  async function load() {
    const res = await optional("/api/v1/alarms?limit=200", null);
    if (!alive) return;
    const box = el.querySelector("#a-body");
    if (res === null) { box.innerHTML = `<p class="muted" data-testid="no-sensing">${t("alarms.none")}</p>`; return; }
    const items = Array.isArray(res) ? res : res.items || [];
    box.innerHTML = items.length ? `<table><thead><tr><th>#</th><th>${t("alarms.scene")}</th><th>${t("alarms.severity")}</th>
      <th>${t("case.state")}</th><th>${t("alarms.message")}</th><th>${t("alarms.raised")}</th><th>${t("case.place")}</th><th></th></tr></thead><tbody>
      ${items.map((a) => `<tr data-alarm="${a.id}"><td>${a.id}</td><td>${esc(a.scene || "")}</td>
        <td><span class="pill sev-${esc(a.severity || "")}">${esc(t(`severity.${a.severity}`))}</span></td>
        <td>${esc(t(`alarmState.${a.state}`))}</td><td>${esc(a.message || "")} ${a.value != null ? `<span class="muted">(${esc(a.value)})</span>` : ""}</td>
        <td>${fmtTime(a.raised_at)}</td><td>${esc(a.grid_code || "")}${a.case_id ? ` · <a href="#/case/${a.case_id}">#${a.case_id}</a>` : ""}</td>
        <td>${a.state === "raised" ? `<button class="btn small" data-ack="${a.id}">${t("alarms.ack")}</button>` : ""}</td></tr>`).join("")}
      </tbody></table>` : `<p class="muted">${t("alarms.empty")}</p>`;
    box.querySelectorAll("[data-ack]").forEach((b) => b.addEventListener("click", async () => {
      b.disabled = true;
      try { await api(`/api/v1/alarms/${b.dataset.ack}/acknowledge`, { method: "POST", body: {} }); toast(t("alarms.acked")); await load(); }
      catch (e) { b.disabled = false; toast(e.message, "alarm"); }
    }));
  }
  const off = onLiveQuiet("alarm", load);
  await load();
  return () => { alive = false; off(); };
}
