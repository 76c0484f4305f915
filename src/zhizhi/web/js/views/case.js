// One case: details, timeline, a map of its grid, and exactly the actions this user may take now.
import { api, ApiError } from "../api.js";
import { t, fmtTime, localName, currentLang } from "../i18n.js";
import { store } from "../store.js";
import { actionsFor, actor } from "../session.js";
import { loadECharts } from "../charts.js";
import { onLiveQuiet } from "../live.js";
import { esc } from "./screen.js";
import { toast } from "../app.js";
import { uploadPhotos } from "./report.js";

const NEEDS_REASON = ["reject", "return"];
const LEVELS = ["city", "district", "street", "community", "grid"];

export async function render(el, { args }) {
  const id = Number(args[0]);
  let chart = null; let alive = true;

  async function draw() {
    const c = await api(`/api/v1/cases/${id}`);
    if (!alive) return;
    const actions = actionsFor(c, store.actions);
    const loc = c.location || {};
    const places = ["district", "street", "community", "grid"].map((k) => loc[k]).filter(Boolean);
    el.innerHTML = `
    <div class="grid2" data-testid="case-page" data-case-id="${c.id}" data-state="${c.state}">
      <div>
        <div class="panel">
          <h2>#${c.id} ${esc(c.title || t("case.untitled"))} <span class="pill state-${c.state}" data-testid="case-state">${stateLabel(c)}</span>
            ${c.overdue ? `<span class="pill sev-high">${t("case.overdue")}</span>` : ""}</h2>
          <dl class="kv">
            <dt>${t("case.description")}</dt><dd>${esc(c.description || "–")}</dd>
            <dt>${t("case.category")}</dt><dd>${esc(c.category_code ? `${catName(c.category_code, c.category_name)} (${c.category_code})` : "–")}</dd>
            <dt>${t("case.department")}</dt><dd data-testid="case-department">${esc(c.department_code ? deptName(c.department_code, c.department_name) : "–")}</dd>
            <dt>${t("case.level")}</dt><dd>${c.level ? t(`level.${c.level}`) : "–"}</dd>
            <dt>${t("case.place")}</dt><dd>${places.map((p) => esc(p.name) + (p.approximate ? "*" : "")).join(" › ") || "–"}</dd>
            <dt>${t("case.address")}</dt><dd>${esc(c.address || "–")}</dd>
            <dt>${t("case.source")}</dt><dd>${esc(t(`source.${c.source}`))} · ${esc(c.source_id)}</dd>
            <dt>${t("case.reported")}</dt><dd>${fmtTime(c.reported_at)}</dd>
            <dt>${t("case.due")}</dt><dd>${fmtTime(c.due_at) || "–"}</dd>
            ${c.satisfaction ? `<dt>${t("case.satisfaction")}</dt><dd>${c.satisfaction}/5</dd>` : ""}
          </dl>
          <div class="photos">${(c.photos || []).map((p) => `<img src="${esc(p)}" alt="photo">`).join("")}</div>
        </div>
        <div class="panel"><h3>${t("case.actions")}</h3>
          <div class="actions" data-testid="actions">${actions.length ? actions.map((a) =>
            `<button class="btn small" data-action="${a}">${actionLabel(a)}</button>`).join("") : `<span class="muted">${t("case.noActions")}</span>`}</div>
          <div id="action-form"></div>
        </div>
      </div>
      <div>
        <div class="panel"><h3>${t("case.map")}</h3><div class="chart" id="case-map" style="height:260px"></div>
          <div class="approx small">${places.some((p) => p.approximate) ? t("map.approximate") : ""}</div></div>
        <div class="panel"><h3>${t("case.timeline")}</h3><ol class="timeline" data-testid="timeline">${(c.timeline || []).map((e) => `
          <li data-action="${e.action}"><b>${actionLabel(e.action, e.action_label)}</b> · ${esc(e.actor)} <span class="muted">(${esc(t(`role.${e.role}`))})</span>
            <span class="muted small">${fmtTime(e.at)}</span>
            ${e.note ? `<div>${esc(e.note)}</div>` : ""}
            <div class="muted small">${e.from_state ? t(`state.${e.from_state}`) + " → " : ""}${t(`state.${e.to_state}`)}</div>
            ${(e.attachments || []).map((p) => `<img src="${esc(p)}" alt="" style="max-width:90px">`).join("")}</li>`).join("")}</ol></div>
      </div>
    </div>`;
    el.querySelectorAll("[data-action]").forEach((b) => b.tagName === "BUTTON" && b.addEventListener("click", () => openForm(c, b.dataset.action)));
    await drawMap(c);
  }

  async function drawMap(c) {
    const loc = c.location || {};
    const parent = loc.community?.code || loc.street?.code || loc.district?.code;
    if (!parent) return;
    const echarts = await loadECharts();
    const fc = await api(`/api/v1/places?parent=${encodeURIComponent(parent)}`);
    const features = fc.features.filter((f) => f.geometry);
    if (!features.length) return;
    echarts.registerMap(`case-${parent}`, { type: "FeatureCollection", features });
    const names = Object.fromEntries(features.map((f) => [f.properties.code, f.properties.name]));
    if (chart) chart.dispose();
    chart = echarts.init(el.querySelector("#case-map"));
    chart.setOption({
      geo: { map: `case-${parent}`, nameProperty: "code", roam: true,
        label: { show: true, color: "#cfe3ff", formatter: (p) => names[p.name] || p.name },
        regions: features.map((f) => ({ name: f.properties.code, itemStyle: {
          borderType: f.properties.approximate ? "dashed" : "solid",
          areaColor: f.properties.code === loc.grid?.code ? "#1f5fb0" : "#0c2d5c" } })),
        itemStyle: { borderColor: "#4fa3ff", areaColor: "#0c2d5c" } },
      series: c.location.lon == null ? [] : [{ type: "effectScatter", coordinateSystem: "geo", symbolSize: 12,
        data: [{ value: [c.location.lon, c.location.lat] }], itemStyle: { color: "#ffb547" } }],
    });
  }

  async function openForm(c, action) {
    const box = el.querySelector("#action-form");
    const fields = [];
    if (["dispatch", "reassign"].includes(action)) {
      let sug = null;
      try { const s = await api(`/api/v1/cases/${c.id}/suggestions`); sug = Array.isArray(s) ? s[0] : null; } catch { sug = null; }
      fields.push(`<label>${t("case.department")}</label><select name="department" required>${store.departments.map((d) =>
        `<option value="${d.code}" ${(sug?.department_code || c.department_code) === d.code ? "selected" : ""}>${esc(localName(d))}</option>`).join("")}</select>
        <label>${t("case.level")}</label><select name="level">${LEVELS.map((l) => `<option value="${l}" ${(sug?.level || c.level || "district") === l ? "selected" : ""}>${t(`level.${l}`)}</option>`).join("")}</select>`);
    }
    if (action === "verify") fields.push(`<label>${t("form.verifyResult")}</label>
      <select name="passed"><option value="true">${t("form.passed")}</option><option value="false">${t("form.failed")}</option></select>`);
    if (action === "evaluate") fields.push(`<label>${t("case.satisfaction")}</label><select name="satisfaction">${[5, 4, 3, 2, 1].map((n) => `<option>${n}</option>`).join("")}</select>`);
    if (action === "locate") fields.push(`<label>${t("form.placeCode")}</label><input name="place_code" required>`);
    if (action === "categorise") fields.push(`<label>${t("case.category")}</label><select name="category_code">${store.categories.filter((x) => x.parent_code).map((x) =>
      `<option value="${x.code}">${esc(localName(x))} (${x.code})</option>`).join("")}</select>`);
    if (action === "handle") fields.push(`<label>${t("form.photos")}</label><input type="file" name="photos" accept="image/*" multiple>`);
    box.innerHTML = `<form class="action-form" data-testid="action-form" data-form="${action}">
      <b>${actionLabel(action)}</b>${fields.join("")}
      <label>${t("form.note")}${NEEDS_REASON.includes(action) ? " *" : ""}</label>
      <textarea name="note" ${NEEDS_REASON.includes(action) || action === "handle" ? "required" : ""}></textarea>
      <div style="margin-top:8px"><button class="btn" type="submit" data-testid="action-submit">${t("form.submit")}</button>
      <button class="btn ghost" type="button" data-cancel>${t("form.cancel")}</button> <span class="error" data-error></span></div></form>`;
    const form = box.querySelector("form");
    form.querySelector("[data-cancel]").addEventListener("click", () => { box.innerHTML = ""; });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const fd = new FormData(form);
      const body = { action, actor: actor(), note: fd.get("note") || "" };
      if (fd.get("department")) body.department = fd.get("department");
      if (fd.get("level")) body.level = fd.get("level");
      if (fd.get("passed")) body.passed = fd.get("passed") === "true";
      if (fd.get("satisfaction")) body.satisfaction = Number(fd.get("satisfaction"));
      if (fd.get("place_code")) body.place_code = fd.get("place_code");
      if (fd.get("category_code")) body.category_code = fd.get("category_code");
      form.querySelector("button[type=submit]").disabled = true;
      try {
        const files = form.querySelector("input[type=file]")?.files;
        if (files && files.length) body.photos = await uploadPhotos(files);
        await api(`/api/v1/cases/${c.id}/actions`, { method: "POST", body });
        toast(t("case.done", { action: actionLabel(action), id: c.id }));
        await draw();
      } catch (err) {
        form.querySelector("[data-error]").textContent = err instanceof ApiError ? err.message : String(err);
        form.querySelector("button[type=submit]").disabled = false;
      }
    });
  }

  const off = onLiveQuiet("case", () => { if (alive && !el.querySelector("form")) draw(); }, 250, (ev) => ev.case_id === id);
  await draw();
  return () => { alive = false; off(); if (chart) chart.dispose(); };
}

export function actionLabel(code, zh) {
  const key = `action.${code}`; const s = t(key);
  return s === key ? (zh || code) : s;
}
function stateLabel(c) { return currentLang() === "zh-CN" ? c.state_label : t(`state.${c.state}`); }
function catName(code, zh) { const c = store.byCategory[code]; return c ? localName(c) : zh || code; }
function deptName(code, zh) { const d = store.byDept[code]; return d ? localName(d) : zh || code; }
