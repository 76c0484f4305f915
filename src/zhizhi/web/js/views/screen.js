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
      <div class="panel"><h3 id="trend-title">${t("screen.trend")}</h3><div class="chart" id="c-trend"></div></div>
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
    // Cases that arrived live while the list was loading are kept.
    const fresh = res.items.map(normalise);
    const known = new Set(fresh.map((c) => c.id));
    cases = [...cases.filter((c) => !known.has(c.id)), ...fresh];
    alarms = al === null ? null : (Array.isArray(al) ? al : al.items || []);
    await map.ready;
    if (!alive) return;
    map.setData({ cases, alarms: alarms || [] });
    redraw();
    renderFeed([...cases].sort((a, b) => b.id - a.id).slice(0, 15));
    el.dataset.loaded = "1";
  }

  function scoped() {
    if (!area || area.level === "city") return cases;
    return cases.filter((c) => c.codes.includes(area.code));
  }

  let summaryAt = 0; let summaryKey = ""; let summary = null; let drawing = 0;
  async function redraw() {
    if (!alive) return;
    const mine = ++drawing;
    // The indicators capability's summary when installed (refetched at most every 10 s), else the case list.
    const key = area?.code || "";
    if (key && (key !== summaryKey || Date.now() - summaryAt > 10000)) {
      const fetched = await optional(`/api/v1/indicators/summary?area=${encodeURIComponent(key)}&days=30`, null);
      if (!alive || mine !== drawing) return; // a newer redraw started meanwhile: it draws
      summary = fetched; summaryKey = key; summaryAt = Date.now();
    }
    const list = scoped();
    const fig = summary ? fromSummary(summary, alarms) : fromCases(list, alarms);
    el.querySelector("#tiles").innerHTML = fig.tiles.map((x) => tile(x.label, x.value, x.unit, x.cls)).join("");
    el.querySelector("#tiles-source").textContent = summary ? t("screen.fromIndicators") : t("screen.fromCases", { n: list.length });
    renderCharts(fig);
    renderOverdue(fig.overdue);
    renderChildren();
  }

  function renderChildren() {
    const box = el.querySelector("#children");
    box.innerHTML = (map.features || []).map((f) =>
      `<a data-child="${f.properties.code}">${esc(f.properties.name)}</a>`).join(" · ");
    box.querySelectorAll("a").forEach((a) => a.addEventListener("click", () => map.drill(a.dataset.child)));
  }

  function renderCharts(fig) {
    el.querySelector("#trend-title").textContent = fig.trend.title;
    charts.category.setOption({ ...DARK, grid: { left: 90, right: 24, top: 8, bottom: 20 },
      xAxis: { type: "value", axisLabel: { color: "#7f9cc7" }, splitLine: { lineStyle: { color: "#143a70" } } },
      yAxis: { type: "category", inverse: true, data: fig.byCategory.map(([c]) => c), axisLabel: { color: "#d6e6ff", width: 80, overflow: "truncate" } },
      series: [{ type: "bar", data: fig.byCategory.map(([, n]) => n), itemStyle: { color: "#2fc4ff" }, label: { show: true, position: "right", color: "#fff" } }],
    }, true);
    charts.level.setOption({ ...DARK, tooltip: { trigger: "item" },
      series: [{ type: "pie", radius: ["35%", "65%"], label: { color: "#d6e6ff" },
        data: fig.byLevel.map(([name, value]) => ({ name, value })) }],
    }, true);
    charts.trend.setOption({ ...DARK, tooltip: { trigger: "axis" },
      legend: { data: [t("chart.reported"), t("chart.closed")], textStyle: { color: "#d6e6ff" } },
      xAxis: { type: "category", data: fig.trend.labels, axisLabel: { color: "#7f9cc7" } },
      yAxis: { type: "value", axisLabel: { color: "#7f9cc7" }, splitLine: { lineStyle: { color: "#143a70" } } },
      series: [{ name: t("chart.reported"), type: "line", smooth: true, data: fig.trend.reported, areaStyle: { opacity: 0.2 } },
        { name: t("chart.closed"), type: "line", smooth: true, data: fig.trend.closed }],
    }, true);
    const gauge = (center, max, value, name, fmt, color) => ({ type: "gauge", center, radius: "85%", min: 0, max,
      progress: { show: true, itemStyle: color ? { color } : undefined },
      detail: { formatter: fmt, color: "#fff", fontSize: 16 }, title: { color: "#7f9cc7", offsetCenter: [0, "80%"] },
      axisLabel: { show: false }, splitLine: { show: false }, axisTick: { show: false },
      data: [{ value: value == null ? 0 : value, name }] });
    charts.gauge.setOption({ ...DARK, series: [
      gauge(["28%", "60%"], 100, fig.ontime == null ? null : +fig.ontime.toFixed(1), t("tile.ontime"), (v) => `${v}%`),
      gauge(["75%", "60%"], 5, fig.satisfaction == null ? null : +fig.satisfaction.toFixed(2), t("tile.satisfaction"), (v) => v.toFixed(2), "#3ad29f"),
    ] }, true);
    const note = el.querySelector("#alarms-note");
    if (fig.alarmsByScene === null) {
      note.textContent = t("alarms.none"); charts.alarms.clear();
    } else {
      const by = fig.alarmsByScene;
      note.textContent = Object.keys(by).length ? "" : t("alarms.empty");
      charts.alarms.setOption({ ...DARK, xAxis: { type: "category", data: Object.keys(by), axisLabel: { color: "#d6e6ff" } },
        yAxis: { type: "value", axisLabel: { color: "#7f9cc7" }, splitLine: { lineStyle: { color: "#143a70" } } },
        series: [{ type: "bar", data: Object.values(by), itemStyle: { color: "#ff5a5f" } }] }, true);
    }
  }

  function renderOverdue(late) {
    const box = el.querySelector("#overdue");
    box.innerHTML = late.length ? late.map((c) => `<li><a href="#/case/${c.id}">#${c.id} ${esc(c.title || "")}</a>
      <span class="muted small">${esc(store.byDept[c.department_code] ? localName(store.byDept[c.department_code]) : c.department_code || "")}
      ${c.place ? " · " + esc(c.place) : ""} · ${t("case.due")} ${fmtTime(c.due_at)}</span></li>`).join("")
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

const pct = (v) => (v == null ? "–" : v.toFixed(1));

/** The figures from the indicators capability's summary (`/api/v1/indicators/summary`, last 30 days). */
export function fromSummary(s, alarms) {
  const reported = s.trend.reduce((n, d) => n + d.reported, 0);
  const scenes = s.alarms_by_scene ? Object.fromEntries(s.alarms_by_scene.map((a) => [a.scene, a.count])) : alarmScenes(alarms);
  return {
    tiles: [
      { label: t("tile.reported30d"), value: reported }, { label: t("tile.open"), value: s.open },
      { label: t("tile.overdue"), value: s.overdue.count, cls: s.overdue.count ? "bad" : "ok" },
      { label: t("tile.ontime"), value: pct(s.on_time.rate), unit: "%" },
      { label: t("tile.closure"), value: pct(s.closure.rate), unit: "%" },
      { label: t("tile.satisfaction"), value: s.satisfaction.mean == null ? "–" : s.satisfaction.mean.toFixed(2), unit: "/5" },
    ],
    byCategory: s.by_category.slice(0, 8).map((c) => [c.code ? catName(c.code) : c.name_zh, c.count]),
    byLevel: s.by_level.map((l) => [l.level ? t(`level.${l.level}`) : t("level.none"), l.count]),
    trend: { title: t("screen.trend30"), labels: s.trend.map((d) => d.day.slice(5)), reported: s.trend.map((d) => d.reported),
      closed: s.trend.map((d) => d.closed) },
    ontime: s.on_time.rate, satisfaction: s.satisfaction.mean,
    overdue: s.overdue.cases.map((c) => ({ id: c.id, title: catName(c.category_code || ""), department_code: c.department_code,
      due_at: c.due_at, place: c.place_name })),
    alarmsByScene: scenes,
  };
}

function alarmScenes(alarms) {
  if (alarms === null) return null;
  const by = {}; for (const a of alarms) by[a.scene || "?"] = (by[a.scene || "?"] || 0) + 1;
  return by;
}

/** The same figures computed here from the cases (until the indicators capability answers): an estimate. */
export function fromCases(list, alarms) {
  const s = stats(list);
  return {
    tiles: [
      { label: t("tile.reported24h"), value: s.reported24h }, { label: t("tile.open"), value: s.open },
      { label: t("tile.overdue"), value: s.overdue, cls: s.overdue ? "bad" : "ok" },
      { label: t("tile.ontime"), value: s.ontime == null ? "–" : (100 * s.ontime).toFixed(1), unit: "%" },
      { label: t("tile.satisfaction"), value: s.satisfaction == null ? "–" : s.satisfaction.toFixed(2), unit: "/5" },
      { label: t("tile.alarms"), value: alarms === null ? "–" : alarms.filter((a) => a.state === "raised").length },
    ],
    byCategory: Object.entries(s.byCategory).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([c, n]) => [catName(c), n]),
    byLevel: LEVELS.filter((l) => s.byLevel[l]).map((l) => [t(`level.${l}`), s.byLevel[l]]),
    trend: { title: t("screen.trend"), labels: s.hours, reported: s.reportedPerHour, closed: s.closedPerHour },
    ontime: s.ontime == null ? null : 100 * s.ontime, satisfaction: s.satisfaction,
    overdue: list.filter((c) => c.overdue).sort((a, b) => (a.due_at || "").localeCompare(b.due_at || "")).slice(0, 10),
    alarmsByScene: alarmScenes(alarms),
  };
}

export function stats(list) {
  const now = Date.now();
  const byCategory = {}; const byLevel = {};
  const hours = []; const reportedPerHour = new Array(24).fill(0); const closedPerHour = new Array(24).fill(0);
  const start = now - 24 * 3600e3;
  const hourOf = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour: "2-digit", hour12: false, timeZone: "Asia/Shanghai" });
  for (let i = 0; i < 24; i++) hours.push(`${hourOf(start + (i + 1) * 3600e3)}:00`);
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
