// Strings live in one JSON dictionary per language (/console/i18n/<lang>.json); Chinese is the default.
const LANGS = ["zh-CN", "en"];
let lang = localStorage.getItem("zz.lang") || "zh-CN";
if (!LANGS.includes(lang)) lang = "zh-CN";
let dict = {};
let fallback = {};

export async function loadLanguage(next = lang) {
  const get = async (l) => (await fetch(`/console/i18n/${l}.json`)).json();
  if (!Object.keys(fallback).length) fallback = await get("zh-CN");
  dict = next === "zh-CN" ? fallback : await get(next);
  lang = next;
  localStorage.setItem("zz.lang", lang);
  document.documentElement.lang = lang;
  translateDom(document);
}

export function currentLang() { return lang; }
export function otherLang() { return lang === "zh-CN" ? "en" : "zh-CN"; }

/** t("key", {n: 3}) → the string in the current language with {n} filled in; the key itself when missing. */
export function t(key, vars = {}) {
  let s = dict[key] ?? fallback[key] ?? key;
  for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, String(v));
  return s;
}

export function translateDom(root) {
  root.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  root.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
}

/** A name from the catalogue in the current language (objects carry name_zh and name_en). */
export function localName(obj) {
  if (!obj) return "";
  return lang === "en" ? (obj.name_en || obj.name_zh || obj.name || obj.code) : (obj.name_zh || obj.name || obj.code);
}

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(lang === "en" ? "en-GB" : "zh-CN", { hour12: false, timeZone: "Asia/Shanghai" });
}

export function fmtDuration(ms) {
  const neg = ms < 0; let s = Math.floor(Math.abs(ms) / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const pad = (x) => String(x).padStart(2, "0");
  const body = (d ? t("time.days", { n: d }) : "") + `${pad(h)}:${pad(m)}:${pad(s)}`;
  return neg ? `-${body}` : body;
}
