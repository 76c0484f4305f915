// The city map with its boundaries at every level, drawn by ECharts from zhizhi's own GeoJSON (no tiles, no
// internet). Click a region to drill down city → district → street → community → grid; the breadcrumb goes back.
// Generated boundaries (streets and below in the demo city) carry `approximate: true` and are drawn dashed.
import { api } from "./api.js";
import { t } from "./i18n.js";
import { loadECharts, STATE_COLORS, SEVERITY_COLORS } from "./charts.js";

export class CityMap {
  constructor(el, { onArea = () => {}, onCase = () => {} } = {}) {
    this.el = el; this.onArea = onArea; this.onCase = onCase;
    this.path = []; // [{code, name, level}] from the city down
    this.cases = []; this.alarms = []; this.names = {}; this.approximate = false; this.features = [];
    this.ready = this.init();
  }

  async init() {
    this.echarts = await loadECharts();
    this.chart = this.echarts.init(this.el.querySelector(".map"), null, { renderer: "canvas" });
    this.chart.on("click", (p) => {
      if (p.componentType === "series" && p.data && p.data.caseId) this.onCase(p.data.caseId);
      else if (p.componentType === "series" && p.data && p.data.alarmId) { /* alarms list handles it */ }
      else if (p.componentType === "geo" && p.name) this.drill(p.name);
    });
    this.resize = () => this.chart.resize();
    window.addEventListener("resize", this.resize);
    const city = await api("/api/v1/places?level=city&simplify_m=5000");
    const c = city.features[0];
    if (c) this.path = [{ code: c.properties.code, name: c.properties.name, level: "city" }];
    await this.show(c ? c.properties.code : null);
  }

  dispose() { window.removeEventListener("resize", this.resize); if (this.chart) this.chart.dispose(); }

  area() { return this.path[this.path.length - 1] || null; }

  async drill(code) {
    const f = this.features.find((x) => x.properties.code === code);
    if (!f) return;
    const children = await api(`/api/v1/places?parent=${encodeURIComponent(code)}`);
    if (!children.features.length || f.properties.level === "grid") {
      // a grid: nothing below; select it and keep its siblings on screen
      this.selected = code; this.draw(); this.onArea({ code, name: f.properties.name, level: f.properties.level });
      return;
    }
    this.path.push({ code, name: f.properties.name, level: f.properties.level });
    await this.show(code, children);
  }

  async up(index) {
    this.path = this.path.slice(0, index + 1);
    await this.show(this.area()?.code);
  }

  async show(code, fc = null) {
    fc = fc || (code ? await api(`/api/v1/places?parent=${encodeURIComponent(code)}${this.path.length <= 1 ? "&simplify_m=200" : ""}`)
      : await api("/api/v1/places?level=district&simplify_m=200"));
    this.features = fc.features.filter((f) => f.geometry);
    this.mapName = `zz-${code || "all"}`;
    this.echarts.registerMap(this.mapName, { type: "FeatureCollection", features: this.features });
    this.names = Object.fromEntries(this.features.map((f) => [f.properties.code, f.properties.name]));
    this.approximate = this.features.some((f) => f.properties.approximate);
    this.selected = null;
    this.el.dataset.level = this.features[0]?.properties.level || "";
    this.el.dataset.area = code || "";
    this.renderCrumbs();
    this.draw(true);
    const a = this.area();
    if (a) this.onArea(a);
  }

  renderCrumbs() {
    const box = this.el.querySelector(".crumbs");
    box.innerHTML = "";
    this.path.forEach((p, i) => {
      if (i) { const s = document.createElement("span"); s.className = "sep"; s.textContent = "›"; box.appendChild(s); }
      const a = document.createElement("a");
      a.textContent = p.name; a.dataset.code = p.code; a.dataset.testid = "crumb";
      a.addEventListener("click", () => this.up(i));
      box.appendChild(a);
    });
    const level = this.features[0]?.properties.level;
    if (level) {
      const s = document.createElement("span"); s.className = "muted small";
      s.textContent = ` (${t(`level.${level}`)} · ${this.features.length})`; box.appendChild(s);
    }
    const ap = this.el.querySelector(".approx");
    ap.classList.toggle("hidden", !this.approximate);
    ap.textContent = t("map.approximate");
  }

  setData({ cases, alarms }) {
    if (cases) this.cases = cases;
    if (alarms) this.alarms = alarms;
    if (this.chart) this.draw();
  }

  draw(reset = false) {
    const open = new Map();
    const childCodes = new Set(this.features.map((f) => f.properties.code));
    for (const c of this.cases) {
      if (["closed", "evaluated", "rejected"].includes(c.state)) continue;
      for (const code of c.codes) if (childCodes.has(code)) open.set(code, (open.get(code) || 0) + 1);
    }
    const max = Math.max(1, ...open.values());
    const regions = this.features.map((f) => {
      const code = f.properties.code; const n = open.get(code) || 0;
      const shade = Math.round(40 + 120 * (n / max));
      return { name: code, itemStyle: { areaColor: `rgb(12, ${shade / 2 + 40}, ${shade + 60})`,
        borderType: f.properties.approximate ? "dashed" : "solid",
        borderColor: code === this.selected ? "#ffe066" : "#4fa3ff", borderWidth: code === this.selected ? 3 : 1 } };
    });
    const area = this.area()?.code;
    const inArea = (c) => !area || this.path.length <= 1 || c.codes.includes(area);
    const points = this.cases.filter((c) => c.lon != null && inArea(c)).map((c) => ({
      value: [c.lon, c.lat], caseId: c.id, name: `#${c.id} ${c.title || ""}`,
      itemStyle: { color: STATE_COLORS[c.state] || "#fff", borderColor: c.overdue ? "#ff2d55" : "transparent", borderWidth: 2 },
      state: c.state }));
    const alarmPoints = this.alarms.filter((a) => a.lon != null && a.state !== "cleared").map((a) => ({
      value: [a.lon, a.lat], alarmId: a.id, name: `${a.scene || ""} ${a.message || ""}`,
      itemStyle: { color: SEVERITY_COLORS[a.severity] || "#ff5a5f" } }));
    const option = {
      tooltip: { trigger: "item", formatter: (p) => p.componentType === "geo"
        ? `${this.names[p.name] || p.name} · ${t("map.openCases")}: ${open.get(p.name) || 0}` : p.name },
      geo: { map: this.mapName, nameProperty: "code", roam: true, regions, selectedMode: false,
        layoutCenter: ["50%", "50%"], layoutSize: "96%",
        label: { show: this.features.length <= 60, color: "#cfe3ff", fontSize: 11,
          formatter: (p) => this.names[p.name] || p.name },
        emphasis: { label: { show: true, color: "#fff" }, itemStyle: { areaColor: "#1f5fb0" } },
        itemStyle: { borderColor: "#4fa3ff", areaColor: "#0c2d5c" } },
      series: [
        { id: "cases", name: "cases", type: "scatter", coordinateSystem: "geo", symbolSize: 7, data: points, zlevel: 2 },
        { id: "alarms", name: "alarms", type: "effectScatter", coordinateSystem: "geo", symbolSize: 11,
          rippleEffect: { scale: 3 }, data: alarmPoints, zlevel: 3 },
      ],
    };
    this.chart.setOption(option, reset ? { notMerge: true } : { replaceMerge: ["series"] });
    this.el.dataset.points = String(points.length);
    this.el.dataset.alarms = String(alarmPoints.length);
  }
}

export function mapShell() {
  return `<div class="crumbs" data-testid="crumbs"></div>
    <div class="legend">${Object.entries(STATE_COLORS).map(([s, c]) => `<span><i style="background:${c}"></i>${t(`state.${s}`)}</span>`).join("")}
      <span><i style="background:#ff5a5f"></i>${t("map.alarm")}</span></div>
    <div class="approx hidden" data-testid="approximate"></div>
    <div class="map" data-testid="map"></div>`;
}
