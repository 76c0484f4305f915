// Live updates: server-sent events from /api/v1/stream, read with fetch so the bearer token can be sent
// (EventSource cannot send headers). Reconnects with Last-Event-ID so nothing announced is missed.
import { getToken } from "./api.js";

const listeners = new Set();
let lastId = "";
let connected = false;
let controller = null;

export function onLive(fn) { listeners.add(fn); return () => listeners.delete(fn); }
export function isLive() { return connected; }

function setStatus(on) {
  connected = on;
  const el = document.getElementById("live-status");
  if (el) { el.classList.toggle("on", on); el.classList.toggle("off", !on); el.dataset.connected = on ? "1" : "0"; }
}

export function startLive() {
  if (controller) controller.abort();
  controller = new AbortController();
  run(controller.signal);
}

async function run(signal) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const headers = { accept: "text/event-stream" };
      if (getToken()) headers.Authorization = `Bearer ${getToken()}`;
      if (lastId) headers["Last-Event-ID"] = lastId;
      const res = await fetch("/api/v1/stream", { headers, signal, cache: "no-store" });
      if (!res.ok || !res.body) throw new Error(`stream ${res.status}`);
      setStatus(true); delay = 1000;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, cut)); buffer = buffer.slice(cut + 2);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    setStatus(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

function dispatch(block) {
  let event = "message", data = "", id = "";
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":"); const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") event = value; else if (field === "data") data += (data ? "\n" : "") + value;
    else if (field === "id") id = value;
  }
  if (id) lastId = id;
  if (!data) return;
  let payload; try { payload = JSON.parse(data); } catch { return; }
  for (const fn of listeners) { try { fn(event, payload); } catch (e) { console.error(e); } }
}

/** Run `fn` once after a burst of live events of `kind` (one action sends a few events). */
export function onLiveQuiet(kind, fn, ms = 250, filter = () => true) {
  let timer = null;
  const off = onLive((k, ev) => {
    if (k !== kind || !filter(ev)) return;
    clearTimeout(timer); timer = setTimeout(fn, ms);
  });
  return () => { clearTimeout(timer); off(); };
}
