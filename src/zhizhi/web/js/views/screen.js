// The big screen (一屏掌控): map with drill-down, live cases and alarms, indicator tiles and charts.
// Numbers come from the indicators API when it is installed, otherwise they are computed here from the cases.
import { api, allCases, optional } from "../api.js";
import { t, fmtTime, localName } from "../i18n.js";
import { CityMap, mapShell } from "../map.js";
import { loadECharts, STATE_COLORS, DARK } from "../charts.js";
import { store, normalise } from "../store.js";
import { onLive } from "../live.js";
import { navigate } from "../app.js";

const CLOSED = ["closed", "evaluated"];
const LEVELS = ["city", "district", "street", "community", "grid"];

export async function render(el) {
  el.innerHTML = `
  <div class="screen">
    <div class="col">
      <div class="panel"><h3>${t("screen.tiles")}</h3><div class="tiles" id="tiles" data-testid="tiles"></div>
        <div class="muted small" id="tiles-source"></div></div>
      <div class="panel"><h3>${t("screen.byCategory")}</h3><div class="chart" id="c-category"></div></div>
      <div class="panel"><h3>${t("screen.byLevel")}</h3><div class="chart" id="c-level"></div></div>
    </div>
    <div class="col">
      <div class="panel map-panel" id="map-panel">${mapShell()}
        <div class="small muted" id="children" data-testid="children"></div></div>
      <div class="panel"><h3>${t("screen.trend")}</h3><div class="chart" id="c-trend"></div></div>
    </div>
    <div class="col">
      <div class="panel"><h3>${t("screen.live")}</h3><ul class="feed" id="feed" data-testid="feed"></ul></div>
      <div class="panel"><h3>${t("screen.overdue")}</h3><ul class="feed" id="overdue" data-testid="overdue-list"></ul></div>
      <div class="panel"><h3>${t("screen.ontime")}</h3><div class="chart" id="c-gauge"></div></div>
      <div class="panel"><h3>${t("screen.alarmsByScene")}</h3><div class="chart" id="c-alarms"></div>
        <div class="muted small" id="alarms-note"></div></div>
    </div>
  </div>`;
  const echarts = await loadECharts();
  const charts = {};
  for (const id of ["category", "level", "trend", "gauge", "alarms"]) charts[id] = echarts.init(el.querySelector(`#c-${id}`));
  let cases = []; let alarms = null; let area = null; let alive = true;
  const map = new CityMap(el.querySelector("#map-panel"), {
    onArea: (a) => { area = a; redraw(); },
    onCase: (id) => navigate(`#/case/${id}`),
  });
  window.__zz = { map }; // lets the browser tests find a region's pixel on the canvas

  async function load() {
    const [res, al] = await Promise.all([allCases(), optional("/api/v1/alarms?limit=500", null)]);
    if (!alive) return;
    cases = res.items.map(normalise);
    alarms = al === null ? null : (Array.isArray(al) ? al : al.items || []);
    await map.ready;
    map.setData({ cases, alarms: alarms || [] });
    redraw();
    renderFeed(res.items.slice(0, 15).map(normalise));
  }

  function scoped() {
    if (!area || area.level === "city") return cases;
    return cases.filter((c) => c.codes.includes(area.code));
  }

  async function redraw() {
    if (!alive) return;
    const list = scoped();
    await renderTiles(list);
    renderCharts(list);
    renderOverdue(list);
    renderChildren();
  }

  function renderChildren() {
    const box = el.querySelector("#children");
    box.innerHTML = (map.features || []).map((f) =>
      `<a data-child="${f.properties.code}">${f.properties.name}</a>`).join(" · ");
    box.querySelectorAll("a").forEach((a) => a.addEventListener("click", () => map.drill(a.dataset.child)));
  }

  async function renderTiles(list) {
    const box = el.querySelector("#tiles");
    const code = area?.code;
    const ind = code ? await optional(`/api/v1/indicators?area=${encodeURIComponent(code)}`, null) : null;
    const items = ind ? indicatorItems(ind) : null;
    if (items && items.length) {
      box.innerHTML = items.slice(0, 9).map((i) => tile(i.label, i.value, i.unit, "")).join("");
      el.querySelector("#tiles-source").textContent = t("screen.fromIndicators");
      return;
    }
    const s = stats(list);
    box.innerHTML = [
      tile(t("tile.reported24h"), s.reported24h), tile(t("tile.open"), s.open),
      tile(t("tile.overdue"), s.overdue, "", s.overdue ? "bad" : "ok"),
      tile(t("tile.ontime"), s.ontime == null ? "–" : (100 * s.ontime).toFixed(1), "%"),
      tile(t("tile.satisfaction"), s.satisfaction == null ? "–" : s.satisfaction.toFixed(2), "/5"),
      tile(t("tile.alarms"), alarms === null ? "–" : alarms.filter((a) => a.state === "raised").length),
    ].join("");
    el.querySelector("#tiles-source").textContent = t("screen.fromCases", { n: list.length });
  }

  function renderCharts(list) {
    const s = stats(list);
    const cats = Object.entries(s.byCategory).sort((a, b) => b[1] - a[1]).slice(0, 8);
    charts.category.setOption({ ...DARK, grid: { left: 90, right: 16, top: 8, bottom: 20 },
      xAxis: { type: "value", axisLabel: { color: "#7f9cc7" }, splitLine: { lineStyle: { color: "#143a70" } } },
      yAxis: { type: "category", inverse: true, data: cats.map(([c]) => catName(c)), axisLabel: { color: "#d6e6ff", width: 80, overflow: "truncate" } },
      series: [{ type: "bar", data: cats.map(([, n]) => n), itemStyle: { color: "#2fc4ff" }, label: { show: true, position: "right", color: "#fff" } }],
    }, true);
    charts.level.setOption({ ...DARK, tooltip: { trigger: "item" },
      series: [{ type: "pie", radius: ["35%", "65%"], label: { color: "#d6e6ff" },
        data: LEVELS.filter((l) => s.byLevel[l]).map((l) => ({ name: t(`level.${l}`), value: s.byLevel[l] })) }],
    }, true);
    charts.trend.setOption({ ...DARK, tooltip: { trigger: "axis" },
      legend: { data: [t("chart.reported"), t("chart.closed")], textStyle: { color: "#d6e6ff" } },
      xAxis: { type: "category", data: s.hours, axisLabel: { color: "#7f9cc7" } },
      yAxis: { type: "value", axisLabel: { color: "#7f9cc7" }, splitLine: { lineStyle: { color: "#143a70" } } },
      series: [{ name: t("chart.reported"), type: "line", smooth: true, data: s.reportedPerHour, areaStyle: { opacity: 0.2 } },
        { name: t("chart.closed"), type: "line", smooth: true, data: s.closedPerHour }],
    }, true);
    charts.gauge.setOption({ ...DARK, series: [
      { type: "gauge", center: ["28%", "60%"], radius: "85%", min: 0, max: 100, progress: { show: true },
        detail: { formatter: "{value}%", color: "#fff", fontSize: 16 }, title: { color: "#7f9cc7", offsetCenter: [0, "80%"] },
        axisLabel: { show: false }, splitLine: { show: false }, axisTick: { show: false },
        data: [{ value: s.ontime == null ? 0 : +(100 * s.ontime).toFixed(1), name: t("tile.ontime") }] },
      { type: "gauge", center: ["75%", "60%"], radius: "85%", min: 0, max: 5, progress: { show: true, itemStyle: { color: "#3ad29f" } },
        detail: { formatter: (v) => v.toFixed(2), color: "#fff", fontSize: 16 }, title: { color: "#7f9cc7", offsetCenter: [0, "80%"] },
        axisLabel: { show: false }, splitLine: { show: false }, axisTick: { show: false },
        data: [{ value: s.satisfaction == null ? 0 : +s.satisfaction.toFixed(2), name: t("tile.satisfaction") }] },
    ] }, true);
    const note = el.querySelector("#alarms-note");
    if (alarms === null) {
      note.textContent = t("alarms.none"); charts.alarms.clear();
    } else {
      note.textContent = alarms.length ? "" : t("alarms.empty");
      const by = {}; for (const a of alarms) by[a.scene || "?"] = (by[a.scene || "?"] || 0) + 1;
      charts.alarms.setOption({ ...DARK, xAxis: { type: "category", data: Object.keys(by), axisLabel: { color: "#d6e6ff" } },
        yAxis: { type: "value", axisLabel: { color: "#7f9cc7" }, splitLine: { lineStyle: { color: "#143a70" } } },
        series: [{ type: "bar", data: Object.values(by), itemStyle: { color: "#ff5a5f" } }] }, true);
    }
  }

  function renderOverdue(list) {
    const box = el.querySelector("#overdue");
    const late = list.filter((c) => c.overdue).sort((a, b) => (a.due_at || "").localeCompare(b.due_at || "")).slice(0, 10);
    box.innerHTML = late.length ? late.map((c) => `<li><a href="#/case/${c.id}">#${c.id} ${esc(c.title || "")}</a>
      <span class="muted small">${esc(store.byDept[c.department_code] ? localName(store.byDept[c.department_code]) : "")} · ${t("case.due")} ${fmtTime(c.due_at)}</span></li>`).join("")
      : `<li class="muted">${t("screen.noOverdue")}</li>`;
  }

  function renderFeed(items) {
    const box = el.querySelector("#feed");
    box.innerHTML = items.map(feedItem).join("");
  }

  function feedItem(c, fresh = false) {
    return `<li class="${fresh ? "new" : ""}" data-case="${c.id}"><span class="pill state-${c.state}">${t(`state.${c.state}`)}</span>
      <a href="#/case/${c.id}">#${c.id} ${esc(c.title || "")}</a> <span class="muted small">${fmtTime(c.reported_at)}</span></li>`;
  }

  let timer = null;
  const off = onLive((kind, ev) => {
    if (kind === "case" && ev.case) {
      const c = normalise(ev.case);
      const i = cases.findIndex((x) => x.id === c.id);
      if (i >= 0) cases[i] = { ...cases[i], ...c }; else cases.unshift(c);
      const feed = el.querySelector("#feed");
      feed.querySelector(`[data-case="${c.id}"]`)?.remove();
      feed.insertAdjacentHTML("afterbegin", feedItem(c, true));
      map.setData({ cases });
    } else if (kind === "alarm") {
      alarms = alarms || [];
      const i = alarms.findIndex((a) => a.id === ev.alarm_id);
      const a = { id: ev.alarm_id, scene: ev.scene, severity: ev.severity, lon: ev.lon, lat: ev.lat,
        state: ev.type === "AlarmRaised" ? "raised" : ev.type === "AlarmAcknowledged" ? "acknowledged" : "cleared" };
      if (i >= 0) alarms[i] = { ...alarms[i], ...a }; else alarms.unshift(a);
      map.setData({ alarms });
    }
    clearTimeout(timer); timer = setTimeout(redraw, 300);
  });
  const refresh = setInterval(load, 300000); // a safety net for changes made by other processes (CLI imports)
  await load();
  return () => { alive = false; off(); clearInterval(refresh); clearTimeout(timer); map.dispose(); Object.values(charts).forEach((c) => c.dispose()); };
}

function catName(code) {
  const c = store.byCategory[code];
  return c ? localName(c) : code;
}

function tile(label, value, unit = "", cls = "") {
  return `<div class="tile ${cls}"><div class="v">${value}<span class="small">${unit}</span></div><div class="k">${label}</div></div>`;
}

/** Indicators API answers: a list of {name|label, value, unit} or {items: [...]}, or {code: value}. */
function indicatorItems(ind) {
  const list = Array.isArray(ind) ? ind : ind.items || ind.indicators || null;
  if (list) return list.filter((i) => i && i.value !== undefined && typeof i.value !== "object")
    .map((i) => ({ label: localName(i) || i.label || i.code, value: fmtNum(i.value), unit: i.unit || "" }));
  return Object.entries(ind).filter(([, v]) => typeof v === "number").map(([k, v]) => ({ label: k, value: fmtNum(v), unit: "" }));
}
function fmtNum(v) { return typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : v ?? "–"; }

export function stats(list) {
  const now = Date.now();
  const byCategory = {}; const byLevel = {};
  const hours = []; const reportedPerHour = new Array(24).fill(0); const closedPerHour = new Array(24).fill(0);
  const start = now - 24 * 3600e3;
  for (let i = 0; i < 24; i++) hours.push(new Date(start + (i + 1) * 3600e3).toLocaleTimeString("zh-CN", { hour: "2-digit", hour12: false, timeZone: "Asia/Shanghai" }));
  let open = 0, overdue = 0, closed = 0, onTime = 0, satSum = 0, satN = 0, reported24h = 0;
  for (const c of list) {
    const big = (store.byCategory[c.category_code]?.parent_code) || c.category_code || "?";
    byCategory[big] = (byCategory[big] || 0) + 1;
    if (c.level) byLevel[c.level] = (byLevel[c.level] || 0) + 1;
    if (!CLOSED.includes(c.state) && c.state !== "rejected") open++;
    if (c.overdue) overdue++;
    const r = Date.parse(c.reported_at);
    if (r >= start) { reported24h++; reportedPerHour[Math.min(23, Math.floor((r - start) / 3600e3))]++; }
    if (CLOSED.includes(c.state)) {
      closed++;
      if (!c.due_at || !c.closed_at || Date.parse(c.closed_at) <= Date.parse(c.due_at)) onTime++;
      const cl = c.closed_at ? Date.parse(c.closed_at) : NaN;
      if (cl >= start) closedPerHour[Math.min(23, Math.floor((cl - start) / 3600e3))]++;
    }
    if (c.satisfaction) { satSum += c.satisfaction; satN++; }
  }
  return { byCategory, byLevel, hours, reportedPerHour, closedPerHour, open, overdue, reported24h,
    ontime: closed ? onTime / closed : null, satisfaction: satN ? satSum / satN : null };
}

export function esc(s) {
  return String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]);
}
