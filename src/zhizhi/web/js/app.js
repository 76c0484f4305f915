// The console's shell: language, session, navigation by role, the live stream, toasts; each view in views/.
import { loadLanguage, t, otherLang, translateDom, currentLang } from "./i18n.js";
import { detectSession, session, hasRole, logout } from "./session.js";
import { loadCatalogue } from "./store.js";
import { startLive, onLive } from "./live.js";

const VIEWS = {
  screen: { module: "./views/screen.js", roles: null },
  queue: { module: "./views/queue.js", roles: ["dispatcher", "leader"] },
  inbox: { module: "./views/inbox.js", roles: ["handler", "dispatcher"] },
  report: { module: "./views/report.js", roles: ["grid_worker", "citizen", "dispatcher"] },
  cases: { module: "./views/cases.js", roles: ["dispatcher", "handler", "leader", "auditor", "grid_worker"] },
  alarms: { module: "./views/alarms.js", roles: ["dispatcher", "leader", "handler"] },
  indicators: { module: "./views/indicators.js", roles: ["leader", "dispatcher", "auditor"] },
  case: { module: "./views/case.js", roles: null, hidden: true },
  login: { module: "./views/login.js", roles: null, hidden: true, public: true },
};

let cleanup = null;

export function toast(text, kind = "") {
  const box = document.getElementById("toasts");
  const el = document.createElement("div");
  el.className = `toast ${kind}`; el.textContent = text; el.dataset.testid = "toast";
  box.appendChild(el);
  setTimeout(() => el.remove(), 6000);
}

export function banner(text) {
  const el = document.getElementById("banner");
  el.textContent = text || ""; el.classList.toggle("hidden", !text);
}

export function navigate(hash) { if (location.hash === hash) route(); else location.hash = hash; }

function parseHash() {
  const [path, query] = (location.hash.replace(/^#\/?/, "") || "screen").split("?");
  const [name, ...rest] = path.split("/");
  return { name: name || "screen", args: rest, query: new URLSearchParams(query || "") };
}

function renderChrome() {
  const nav = document.getElementById("nav");
  const { name } = parseHash();
  nav.innerHTML = "";
  if (session.user) {
    for (const [key, v] of Object.entries(VIEWS)) {
      if (v.hidden || (v.roles && !hasRole(...v.roles))) continue;
      const a = document.createElement("a");
      a.href = `#/${key}`; a.textContent = t(`nav.${key}`); a.dataset.nav = key;
      if (key === name) a.className = "active";
      nav.appendChild(a);
    }
  }
  const who = document.getElementById("who");
  const u = session.user;
  who.textContent = u ? `${u.display_name || u.username} · ${(u.roles || []).map((r) => t(`role.${r}`)).join("/")}`
    + (session.mode === "dev" ? ` · ${t("login.devmode")}` : "") : "";
  document.getElementById("lang-switch").textContent = otherLang() === "en" ? "EN" : "中文";
  document.getElementById("logout").classList.toggle("hidden", !u);
  translateDom(document.querySelector(".topbar"));
}

let generation = 0;

async function route() {
  const my = ++generation;
  const { name, args, query } = parseHash();
  const spec = VIEWS[name] || VIEWS.screen;
  if (!spec.public && !session.user) { location.hash = `#/login?next=${encodeURIComponent(location.hash)}`; return; }
  renderChrome();
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
  // Each route renders into its own element: a slower, older view finishing late writes into a detached one.
  const view = document.getElementById("view");
  const el = document.createElement("div");
  view.replaceChildren(el);
  view.dataset.view = name;
  el.innerHTML = `<p class="muted">${t("common.loading")}</p>`;
  try {
    const mod = await import(spec.module);
    const done = (await mod.render(el, { args, query })) || null;
    if (my !== generation) { if (done) done(); return; }
    cleanup = done;
    translateDom(el);
  } catch (e) {
    console.error(e);
    if (my === generation) el.innerHTML = `<div class="panel error">${t("common.error")}: ${e.message}</div>`;
  }
}

function tickClock() {
  const el = document.getElementById("clock");
  el.textContent = new Date().toLocaleString(currentLang() === "en" ? "en-GB" : "zh-CN",
    { hour12: false, timeZone: "Asia/Shanghai" });
}

async function main() {
  await loadLanguage();
  try {
    await detectSession();
    if (session.user) await loadCatalogue(); // with accounts, the catalogue is read after login
  } catch (e) {
    banner(`${t("common.error")}: ${e.message}`);
  }
  document.getElementById("lang-switch").addEventListener("click", async () => {
    await loadLanguage(otherLang()); await route();
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await logout(); navigate("#/login");
  });
  window.addEventListener("hashchange", route);
  tickClock(); setInterval(tickClock, 1000);
  onLive((kind, ev) => {
    if (kind === "case" && ev.type === "CaseReported") toast(t("live.newCase", { id: ev.case_id, title: ev.case?.title || "" }));
    if (kind === "alarm" && ev.type === "AlarmRaised") toast(t("live.newAlarm", { scene: ev.scene || "", severity: ev.severity || "" }), "alarm");
  });
  startLive();
  await route();
  document.body.dataset.ready = "1";
}

main();
