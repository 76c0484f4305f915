// Login. With the access capability: username and password. Without it (dev mode): pick a role to try the views.
import { t, localName } from "../i18n.js";
import { session, login, devLogin, ROLES } from "../session.js";
import { store, loadCatalogue } from "../store.js";
import { startLive } from "../live.js";
import { esc } from "./screen.js";

const HOME = { grid_worker: "#/report", citizen: "#/report", dispatcher: "#/queue", handler: "#/inbox" };

export async function render(el, { query }) {
  const next = query.get("next");
  const dev = session.mode === "dev";
  el.innerHTML = `<form class="panel login" id="login-form" data-testid="login-form" data-mode="${session.mode}">
    <h2>${t("login.title")}</h2>
    ${dev ? `<p class="muted">${t("login.devHint")}</p>
      <label for="dev-role">${t("login.role")}</label><select id="dev-role" style="width:100%">${ROLES.map((r) =>
        `<option value="${r}">${t(`role.${r}`)}</option>`).join("")}</select>
      <label for="dev-dept">${t("case.department")}</label><select id="dev-dept" style="width:100%"><option value=""></option>${store.departments.map((d) =>
        `<option value="${d.code}">${esc(localName(d))}</option>`).join("")}</select>`
    : `<label for="login-username">${t("login.username")}</label><input id="login-username" autocomplete="username" required style="width:100%">
      <label for="login-password">${t("login.password")}</label><input id="login-password" type="password" autocomplete="current-password" required style="width:100%">`}
    <div style="margin-top:12px"><button class="btn" id="login-submit" type="submit">${t("login.submit")}</button></div>
    <div class="error" id="login-error"></div></form>`;
  el.querySelector("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      if (dev) devLogin(el.querySelector("#dev-role").value, el.querySelector("#dev-dept").value);
      else await login(el.querySelector("#login-username").value, el.querySelector("#login-password").value);
      await loadCatalogue();
      startLive();
      const role = session.user.roles?.[0];
      location.hash = next && !next.includes("login") ? next : HOME[role] || "#/screen";
    } catch (err) { el.querySelector("#login-error").textContent = err.message; }
  });
}
