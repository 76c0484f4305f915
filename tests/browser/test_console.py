"""The console clicked through in Chromium: drill-down, live updates, the whole loop by role, language switch.

Every test runs in a context that fails it when any request leaves 127.0.0.1 (see conftest.py).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest

from browser.browser_kit import ACCOUNTS, LiveServer, Watch, new_context, screenshot

# A 1×1 PNG: the "photo" a grid worker takes.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJ"
                       "RU5ErkJggg==")


def open_console(page: Any, server: LiveServer, route: str = "#/screen") -> None:
    page.goto(f"{server.base}/console/{route}")
    page.wait_for_selector("body[data-ready='1']", timeout=20000)


def as_role(page: Any, server: LiveServer, role: str, department: str | None = None, then: str | None = None) -> None:
    """Log in as a person with `role`: with accounts through the login form, in dev mode by picking the role."""
    open_console(page, server, "#/login")
    form = page.wait_for_selector("[data-testid=login-form]")
    if form.get_attribute("data-mode") == "auth":
        username, password = ACCOUNTS[role][:2]
        page.fill("#login-username", username)
        page.fill("#login-password", password)
    else:
        page.select_option("#dev-role", role)
        if department:
            page.select_option("#dev-dept", department)
    page.click("#login-submit")
    page.wait_for_function("!location.hash.startsWith('#/login')")
    if then:
        page.goto(f"{server.base}/console/{then}")
        page.wait_for_selector("body[data-ready='1']")


def api_case(server: LiveServer, case_id: int) -> dict[str, Any]:
    r = httpx.get(f"{server.base}/api/v1/cases/{case_id}", headers=server.headers, timeout=10)
    r.raise_for_status()
    return r.json()


def region_pixel(page: Any, code: str) -> tuple[float, float]:
    """Where the region `code` is on the map canvas (the centre of its bounding box, through ECharts)."""
    xy = page.evaluate("""(code) => {
        const m = window.__zz.map; const f = m.features.find((x) => x.properties.code === code);
        const pts = f.geometry.coordinates.flat(f.geometry.type === 'Polygon' ? 1 : 2);
        const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
        const c = [(Math.min(...xs) + Math.max(...xs)) / 2, (Math.min(...ys) + Math.max(...ys)) / 2];
        const px = m.chart.convertToPixel({ geoIndex: 0 }, c);
        const r = m.chart.getDom().getBoundingClientRect();
        return [r.left + px[0], r.top + px[1]];
    }""", code)
    return float(xy[0]), float(xy[1])


def map_level(page: Any) -> str:
    return str(page.get_attribute("#map-panel", "data-level"))


def test_big_screen_map_drills_down_from_city_to_grid(live_server: LiveServer, context: Any,
                                                       watch: Watch) -> None:
    page = context.new_page()
    as_role(page, live_server, "leader", then="#/screen")
    page.wait_for_function("document.querySelector('#map-panel').dataset.level === 'district'", timeout=20000)
    assert page.locator("[data-testid=crumb]").count() == 1
    assert not page.is_visible("[data-testid=approximate]"), "district boundaries are real, not approximate"
    screenshot(page, "01-big-screen")
    # City → district → street → community → grid, each by a click on the region in the map.
    for code, level in (("500103", "street"), ("500103001", "community"), ("500103001001", "grid")):
        x, y = region_pixel(page, code)
        page.mouse.click(x, y)
        page.wait_for_function(f"document.querySelector('#map-panel').dataset.level === '{level}'", timeout=10000)
        assert page.get_attribute("#map-panel", "data-area") == code
    assert page.locator("[data-testid=crumb]").count() == 4
    assert page.is_visible("[data-testid=approximate]"), "generated boundaries must be marked approximate"
    assert "示意" in page.inner_text("[data-testid=approximate]")
    screenshot(page, "02-map-grid-level")
    page.locator("[data-testid=crumb]").first.click()
    page.wait_for_function("document.querySelector('#map-panel').dataset.level === 'district'")
    assert all(u.startswith(live_server.base) or u.startswith("data:") for u in watch.seen)
    assert any("/console/vendor/echarts" in u for u in watch.seen), "ECharts must be served by zhizhi itself"


def test_new_case_appears_on_every_open_screen(live_server: LiveServer, browser: Any, watch: Watch) -> None:
    screens = []
    contexts = [new_context(browser, watch) for _ in range(2)]
    try:
        for ctx in contexts:
            page = ctx.new_page()
            as_role(page, live_server, "leader", then="#/screen")
            page.wait_for_selector("#live-status[data-connected='1']", timeout=10000)
            page.wait_for_selector("#view [data-loaded='1']", timeout=10000)
            page.wait_for_function("document.querySelector('#map-panel').dataset.level === 'district'")
            screens.append(page)
        before = [int(p.get_attribute("#map-panel", "data-points") or 0) for p in screens]
        r = httpx.post(f"{live_server.base}/api/v1/cases", json={
            "source": "citizen", "source_id": f"live-{time.time_ns()}", "title": "解放碑路口井盖缺失",
            "category_code": "C0101", "lon": 106.52, "lat": 29.52}, headers=live_server.headers, timeout=10)
        assert r.status_code == 201, r.text
        case_id = r.json()["id"]
        for page, n in zip(screens, before, strict=True):
            page.wait_for_selector(f"#feed [data-case='{case_id}']", timeout=3000)
            page.wait_for_function(f"Number(document.querySelector('#map-panel').dataset.points) > {n}", timeout=3000)
            assert "解放碑路口井盖缺失" in page.inner_text("#feed")
        # A later action on the case (here a dispatch through the API) shows too: its state on every screen.
        r = httpx.post(f"{live_server.base}/api/v1/cases/{case_id}/actions", json={
            "action": "dispatch", "department": "chengguan", "level": "district"},
            headers=live_server.headers, timeout=10)
        assert r.status_code == 200, r.text
        for page in screens:
            page.wait_for_function(f"""document.querySelector("#feed [data-case='{case_id}'] .pill")
                                       .textContent === '待接收'""", timeout=3000)
        # A real alarm: a methane detector registered and a reading over its limit posted through the API.
        r = httpx.post(f"{live_server.base}/api/v1/devices", json={
            "code": "M-live", "type": "methane_detector", "scene": "septic_tank", "lon": 106.55, "lat": 29.55},
            headers=live_server.headers, timeout=10)
        assert r.status_code == 201, r.text
        r = httpx.post(f"{live_server.base}/api/v1/observations", json=[{
            "device": "M-live", "quantity": "methane", "value": 30.0,
            "time": live_server.zz.clock.now().isoformat()}], headers=live_server.headers, timeout=10)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        for page in screens:
            page.wait_for_function("document.querySelector('#map-panel').dataset.alarms === '1'", timeout=3000)
            page.wait_for_selector(".toast.alarm", timeout=3000)
        for page in screens:  # tiles computed from the cases count it at once (the indicators' own refresh lags)
            if "计算" in page.inner_text("#tiles-source"):
                page.wait_for_function("document.querySelector('#tiles').innerText.includes('1')", timeout=3000)
        screenshot(screens[0], "03-live-update")
    finally:
        for ctx in contexts:
            ctx.close()
    assert not watch.outside, f"requests left 127.0.0.1: {watch.outside}"
    assert not watch.errors, watch.errors


def test_whole_loop_clicked_through_by_each_role(live_server: LiveServer, browser: Any, watch: Watch) -> None:
    # 1. A grid worker on a phone reports with GPS position and a photo.
    phone = new_context(browser, watch, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                        geolocation={"longitude": 106.585, "latitude": 29.575})
    try:
        page = phone.new_page()
        as_role(page, live_server, "grid_worker", then="#/report")
        page.fill("#r-title", "朝天门井盖缺失")
        page.select_option("#r-category", "C0101")
        page.click("[data-testid=gps]")
        page.wait_for_function("document.querySelector('[data-testid=located]').textContent.includes('网格')")
        page.set_input_files("#r-photo", files=[{"name": "lamp.png", "mimeType": "image/png", "buffer": PNG}])
        page.wait_for_selector("[data-testid=photo]")
        screenshot(page, "04-grid-worker-report")
        page.click("[data-testid=report-submit]")
        result = page.wait_for_selector("[data-testid=report-result]:not(.hidden)")
        case_id = int(result.get_attribute("data-case-id") or 0)
        screenshot(page, "05-grid-worker-reported")
    finally:
        phone.close()
    case = api_case(live_server, case_id)
    assert case["state"] == "registered", "located and categorised: registered, waiting for the dispatcher"
    assert case["location"]["grid"]["code"] == "500103002002002"
    assert len(case["photos"]) == 1
    assert httpx.get(live_server.base + case["photos"][0], headers=live_server.headers).content == PNG

    ctx = new_context(browser, watch)
    try:
        page = ctx.new_page()
        # 2. The dispatcher dispatches it from the queue with one click on the suggestion.
        as_role(page, live_server, "dispatcher", then="#/queue")
        row = page.wait_for_selector(f"[data-testid=queue] tr[data-case='{case_id}']")
        assert "城市管理" in row.inner_text() or row.query_selector(f"[data-testid=dispatch-{case_id}]")
        screenshot(page, "06-dispatcher-queue")
        page.click(f"[data-testid=dispatch-{case_id}]")
        page.wait_for_selector(f"[data-testid=queue] tr[data-case='{case_id}']", state="detached")
        case = api_case(live_server, case_id)
        assert case["state"] == "dispatched"
        department = case["department_code"]

        # 3. The department's handler sees it in the inbox with a countdown, accepts and handles it.
        as_role(page, live_server, "handler", department=department, then=f"#/inbox?department={department}")
        row = page.wait_for_selector(f"[data-testid=inbox] tr[data-case='{case_id}']")
        countdown = f"tr[data-case='{case_id}'] .countdown"
        page.wait_for_function(f"""document.querySelector("{countdown}").textContent.includes(':')""")
        screenshot(page, "07-department-inbox")
        row.query_selector("[data-accept]").click()
        pill = f"tr[data-case='{case_id}'] .pill"
        page.wait_for_function(f"""document.querySelector("{pill}").textContent === '处置中'""")
        page.goto(f"{live_server.base}/console/#/case/{case_id}")
        page.wait_for_selector("[data-testid=case-page][data-state='handling']")
        buttons = page.eval_on_selector_all("[data-testid=actions] button", "bs => bs.map((b) => b.dataset.action)")
        assert "handle" in buttons and "verify" not in buttons and "dispatch" not in buttons, buttons
        page.click("[data-testid=actions] button[data-action='handle']")
        page.fill("[data-testid=action-form] textarea[name=note]", "已补装井盖，恢复通行")
        page.set_input_files("[data-testid=action-form] input[type=file]",
                             files=[{"name": "fixed.png", "mimeType": "image/png", "buffer": PNG}])
        page.click("[data-testid=action-submit]")
        page.wait_for_selector("[data-testid=case-page][data-state='feedback']")

        # 4. The dispatcher verifies on the case page and closes the case.
        as_role(page, live_server, "dispatcher", then=f"#/case/{case_id}")
        page.wait_for_selector("[data-testid=case-page][data-state='feedback']")
        page.click("[data-testid=actions] button[data-action='verify']")
        page.select_option("[data-testid=action-form] select[name=passed]", "true")
        page.fill("[data-testid=action-form] textarea[name=note]", "现场核查通过")
        page.click("[data-testid=action-submit]")
        page.wait_for_selector("[data-testid=case-page][data-state='closed']")
        timeline = page.eval_on_selector_all("[data-testid=timeline] li", "ls => ls.map((l) => l.dataset.action)")
        assert timeline == ["report", "register", "dispatch", "accept", "handle", "verify"], timeline
        screenshot(page, "08-case-closed")
    finally:
        ctx.close()
    case = api_case(live_server, case_id)
    assert case["state"] == "closed"
    roles = [e["role"] for e in case["timeline"]]
    assert roles[2:] == ["dispatcher", "handler", "handler", "dispatcher"], roles
    assert not watch.outside, f"requests left 127.0.0.1: {watch.outside}"
    assert not watch.errors, watch.errors


def test_language_switch(live_server: LiveServer, context: Any) -> None:
    page = context.new_page()
    as_role(page, live_server, "admin", then="#/screen")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.inner_text("[data-nav=screen]") == "一屏掌控"
    page.wait_for_function("document.querySelector('#map-panel').dataset.level === 'district'")
    page.click("[data-testid=lang-switch]")
    page.wait_for_function("document.documentElement.lang === 'en'")
    page.wait_for_function("document.querySelector('[data-nav=screen]').textContent === 'Big screen'")
    assert "Key figures" in page.inner_text("#view")
    page.wait_for_function("document.querySelector('#map-panel').dataset.level === 'district'")
    screenshot(page, "09-big-screen-english")
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert page.inner_text("[data-nav=queue]") == "Dispatch", "the choice survives a reload"
    page.click("[data-testid=lang-switch]")
    page.wait_for_function("document.querySelector('[data-nav=screen]').textContent === '一屏掌控'")


@pytest.mark.parametrize("view", ["alarms", "indicators", "cases"])
def test_other_views_render(live_server: LiveServer, context: Any, view: str) -> None:
    page = context.new_page()
    as_role(page, live_server, "admin", then=f"#/{view}")
    page.wait_for_function("!document.querySelector('#view').textContent.includes('加载中')")
    text = page.inner_text("#view")
    assert "出错了" not in text, text
    if view == "alarms":
        installed = httpx.get(f"{live_server.base}/api/v1/alarms", headers=live_server.headers).status_code != 404
        assert page.is_visible("[data-testid=no-sensing]") != installed
    if view == "indicators":
        installed = httpx.get(f"{live_server.base}/api/v1/indicators/tree",
                              headers=live_server.headers).status_code != 404
        assert page.is_visible("[data-testid=indicator-tree]") == installed
    screenshot(page, f"10-{view}")


def test_console_runs_under_its_content_security_policy(live_server: LiveServer, browser: Any, watch: Watch) -> None:
    """With the policy applied (default-src 'self', no eval), the console and ECharts still work."""
    ctx = new_context(browser, watch, bypass_csp=False)
    violations: list[str] = []
    try:
        page = ctx.new_page()
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{live_server.base}/console/#/login")
        page.wait_for_selector("[data-testid=login-form]")
        if page.get_attribute("[data-testid=login-form]", "data-mode") == "auth":
            page.fill("#login-username", ACCOUNTS["admin"][0])
            page.fill("#login-password", ACCOUNTS["admin"][1])
        else:
            page.select_option("#dev-role", "admin")
        page.click("#login-submit")
        page.wait_for_url("**/console/#/screen")
        page.wait_for_selector("#map-panel[data-level='district']", timeout=20000)
        page.wait_for_selector("#view [data-loaded='1']")
        assert page.locator("#map-panel canvas").count() >= 1, "ECharts drew the map"
    finally:
        ctx.close()
    assert not violations, violations
    assert not watch.outside and not watch.errors, (watch.outside, watch.errors)
