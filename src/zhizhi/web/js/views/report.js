// The grid worker's page (mobile first): what, where (GPS), a photo; the report is stored before it is acknowledged.
import { api, ApiError } from "../api.js";
import { t, localName } from "../i18n.js";
import { store } from "../store.js";
import { mainRole } from "../session.js";
import { esc } from "./screen.js";

export async function uploadPhotos(files) {
  const urls = [];
  for (const f of files) {
    const form = new FormData(); form.append("file", f, f.name);
    const res = await api("/api/v1/uploads", { method: "POST", form });
    urls.push(res.url);
  }
  return urls;
}

function newId() {
  return (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`);
}

export async function render(el) {
  const groups = store.categories.filter((c) => !c.parent_code);
  el.innerHTML = `
  <div class="report" style="max-width:560px;margin:0 auto">
    <form class="panel" id="report-form" data-testid="report-form">
      <h2>${t("report.title")}</h2>
      <label for="r-title">${t("report.what")} *</label><input id="r-title" name="title" required maxlength="500" style="width:100%">
      <label for="r-category">${t("case.category")}</label>
      <select id="r-category" name="category_code" style="width:100%"><option value="">${t("report.autoCategory")}</option>
        ${groups.map((g) => `<optgroup label="${esc(localName(g))}">${store.categories.filter((c) => c.parent_code === g.code)
          .map((c) => `<option value="${c.code}">${esc(localName(c))}</option>`).join("")}</optgroup>`).join("")}</select>
      <label for="r-desc">${t("case.description")}</label><textarea id="r-desc" name="description" maxlength="4000"></textarea>
      <label>${t("report.where")}</label>
      <button class="btn" type="button" id="r-gps" data-testid="gps">${t("report.gps")}</button>
      <span id="r-pos" class="small" data-testid="position"></span>
      <div id="r-place" class="small muted" data-testid="located"></div>
      <label for="r-address">${t("case.address")}</label><input id="r-address" name="address" maxlength="500" style="width:100%">
      <label for="r-photo">${t("form.photos")}</label><input id="r-photo" type="file" accept="image/*" capture="environment" multiple>
      <div class="photos" id="r-photos"></div>
      <div style="margin-top:12px"><button class="btn" type="submit" data-testid="report-submit">${t("report.submit")}</button></div>
      <div class="error" id="r-error"></div>
    </form>
    <div id="r-result" class="panel hidden" data-testid="report-result"></div>
  </div>`;
  const form = el.querySelector("#report-form");
  let pos = null; let photos = [];

  el.querySelector("#r-gps").addEventListener("click", () => {
    const out = el.querySelector("#r-pos");
    if (!navigator.geolocation) { out.textContent = t("report.noGps"); return; }
    out.textContent = t("common.loading");
    navigator.geolocation.getCurrentPosition(async (p) => {
      pos = { lon: +p.coords.longitude.toFixed(6), lat: +p.coords.latitude.toFixed(6) };
      out.textContent = `${pos.lon}, ${pos.lat} (±${Math.round(p.coords.accuracy)} m)`;
      try {
        const loc = await api(`/api/v1/locate?lon=${pos.lon}&lat=${pos.lat}`);
        el.querySelector("#r-place").textContent = ["district", "street", "community", "grid"].map((k) => loc[k]?.name).filter(Boolean).join(" › ");
      } catch (e) { el.querySelector("#r-place").textContent = e.message; }
    }, (err) => { out.textContent = `${t("report.noGps")}: ${err.message}`; }, { enableHighAccuracy: true, timeout: 10000 });
  });

  el.querySelector("#r-photo").addEventListener("change", async (e) => {
    try {
      photos = photos.concat(await uploadPhotos(e.target.files));
      el.querySelector("#r-photos").innerHTML = photos.map((u) => `<img src="${esc(u)}" alt="photo" data-testid="photo">`).join("");
    } catch (err) { el.querySelector("#r-error").textContent = err.message; }
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const body = { source: mainRole() === "citizen" ? "citizen" : "grid_worker", source_id: `console-${newId()}`,
      title: fd.get("title"), description: fd.get("description") || "", photos };
    if (fd.get("category_code")) body.category_code = fd.get("category_code");
    if (fd.get("address")) body.address = fd.get("address");
    if (pos) Object.assign(body, pos);
    if (!pos && !body.address) { el.querySelector("#r-error").textContent = t("report.needPlace"); return; }
    form.querySelector("[type=submit]").disabled = true;
    try {
      const res = await api("/api/v1/cases", { method: "POST", body });
      const out = el.querySelector("#r-result");
      out.classList.remove("hidden");
      out.dataset.caseId = res.id;
      out.innerHTML = `<h3>${t("report.done")}</h3><p><a href="#/case/${res.id}" data-testid="report-case-link">#${res.id}</a>
        <span class="pill state-${res.state}">${t(`state.${res.state}`)}</span></p>
        <p class="muted">${esc([res.case.location.grid?.name, res.case.department_name].filter(Boolean).join(" · "))}</p>
        <button class="btn ghost" type="button" id="r-again">${t("report.again")}</button>`;
      form.classList.add("hidden");
      out.querySelector("#r-again").addEventListener("click", () => render(el));
    } catch (err) {
      el.querySelector("#r-error").textContent = err instanceof ApiError ? err.message : String(err);
      form.querySelector("[type=submit]").disabled = false;
    }
  });
}
