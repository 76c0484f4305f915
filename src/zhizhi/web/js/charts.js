// ECharts, served by zhizhi from node_modules (installed by `npm ci` at setup): never from a CDN.
let echartsPromise = null;

export function loadECharts() {
  if (!echartsPromise) echartsPromise = import("/console/vendor/echarts.esm.min.mjs");
  return echartsPromise;
}

export const STATE_COLORS = {
  reported: "#e0b43a", registered: "#ffb547", dispatched: "#3d8bfd", handling: "#2fc4ff", suspended: "#9aa4b2",
  feedback: "#a47bff", closed: "#3ad29f", evaluated: "#25a876", rejected: "#6b7280",
};
export const SEVERITY_COLORS = { critical: "#ff2d55", high: "#ff5a5f", medium: "#ffb547", warning: "#ffb547",
  low: "#6aa8ff", info: "#6aa8ff" };

export const DARK = {
  animationDuration: 300, animationDurationUpdate: 300,
  textStyle: { color: "#d6e6ff", fontFamily: "Noto Sans CJK SC, sans-serif" },
  grid: { left: 40, right: 12, top: 24, bottom: 28 },
};
