"""The console's server side: bus listeners, the live hub, the SSE stream over real HTTP, uploads, offline assets."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from zhizhi.api.app import create_app
from zhizhi.api.console import WEB_DIR, LiveHub, find_vendor_file, visible_to
from zhizhi.domain import events as ev
from zhizhi.domain.access import Principal
from zhizhi.service.commands import ActOnCase, ReportCase, ReportCases

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c63f8cfc0f01f0005050200")


def admin_headers(zz: Any, post: Any) -> dict[str, str]:
    """A bearer token when this build has accounts (the access capability), else nothing: dev mode."""
    try:
        from zhizhi.service.accounts import create_user  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return {}
    create_user(zz, username="t-console", password="Console-api-test-2026!", roles=("admin",))
    r = post("/api/v1/auth/login", json={"username": "t-console", "password": "Console-api-test-2026!"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def report(sid: str, **kw: Any) -> ReportCase:
    return ReportCase(source="citizen", source_id=sid, title=kw.pop("title", "井盖缺失"),
                      category_code=kw.pop("category_code", "C0101"), lon=kw.pop("lon", 106.52),
                      lat=kw.pop("lat", 29.52), **kw)


def test_bus_listeners_see_every_event_after_it_is_handled(app: Any) -> None:
    seen: list[ev.Event] = []
    stop = app.bus.listen(seen.append)
    result = app.handle(report("l-1"))
    names = [type(e).__name__ for e in seen if not isinstance(e, ev.CaseChanged)]
    assert names[0] == "CaseReported" and "CaseDispatched" in names, names  # triage and dispatch ran first
    assert all(getattr(e, "case_id", result.case_id) == result.case_id for e in seen)
    # a batch: the batch handler gets all reports at once, the listener still sees each one
    seen.clear()
    app.handle(ReportCases(tuple(report(f"l-b{i}") for i in range(3))))
    assert [type(e).__name__ for e in seen].count("CaseReported") == 3
    # a failing listener is logged, never undoes or blocks the command
    stop()
    app.bus.listen(lambda e: 1 / 0)
    again = app.handle(report("l-2"))
    with app.uow() as uow:
        assert uow.cases.get(again.case_id) is not None


def test_hub_sends_a_case_summary_to_each_subscriber(app: Any) -> None:
    hub = LiveHub(app)
    app.bus.listen(hub.publish)

    async def scenario() -> list[tuple[int, str, str]]:
        queues = [hub.subscribe(), hub.subscribe()]
        await asyncio.to_thread(app.handle, report("h-1", title="观音桥路灯不亮", lon=106.65, lat=29.55))
        got = [await asyncio.wait_for(q.get(), timeout=5) for q in queues]
        for q in queues:
            hub.unsubscribe(q)
        return got

    try:  # in a thread of its own: the browser tests' Playwright may own this thread's event loop
        with ThreadPoolExecutor(1) as pool:
            got = pool.submit(asyncio.run, scenario()).result(timeout=30)
    finally:
        hub.close()
    assert got[0] == got[1]
    seq, kind, data = got[0]
    payload = json.loads(data)
    assert kind == "case" and payload["type"] in {"CaseReported", "CaseChanged"}
    assert payload["case"]["title"] == "观音桥路灯不亮" and payload["case_id"] > 0
    assert payload["case"]["district"] == "500105" and payload["case"]["lon"] == pytest.approx(106.65)
    assert hub.since(seq - 1)[0] == got[0], "kept for a screen that reconnects"


def test_hub_costs_nothing_without_screens(app: Any) -> None:
    hub = LiveHub(app)
    app.bus.listen(hub.publish)
    app.handle(report("n-1"))
    assert hub._feed is None and not hub._wake.is_set() and hub.since(0) == []
    assert hub._thread is None, "no thread reads the store while nobody watches"


def test_hub_keeps_events_for_a_screen_that_reconnects(app: Any) -> None:
    """A reload leaves no screen for a moment: what happens meanwhile is replayed (Last-Event-ID)."""
    hub = LiveHub(app)
    app.bus.listen(hub.publish)

    async def leave() -> None:
        hub.unsubscribe(hub.subscribe())

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, leave()).result(timeout=10)
    cid = app.handle(report("r-1")).case_id
    deadline = time.monotonic() + 5
    while not hub.since(0) and time.monotonic() < deadline:
        time.sleep(0.02)
    hub.close()
    assert {json.loads(m[2])["case_id"] for m in hub.since(0)} == {cid}


def test_screens_see_only_events_in_their_scope() -> None:
    case = json.dumps({"type": "CaseReported", "case_id": 1,
                       "case": {"city": "500000", "district": "500103", "street": "500103001", "community": None,
                                "grid": None, "department_code": "chengguan"}})
    alarm = json.dumps({"type": "AlarmRaised", "alarm_id": 1, "grid_code": "500105001001001",
                        "area_codes": ["500000", "500105", "500105001", "500105001001", "500105001001001"]})
    city = Principal(1, "leader", frozenset({"leader"}))
    street = Principal(2, "s", frozenset({"dispatcher"}), places=("500103001",))
    other = Principal(3, "o", frozenset({"dispatcher"}), places=("500105",))
    dept = Principal(4, "h", frozenset({"handler"}), places=("500105",), departments=("chengguan",))
    assert visible_to(city, "case", case) and visible_to(street, "case", case)
    assert not visible_to(other, "case", case)
    assert visible_to(dept, "case", case), "the department's own case, wherever it is"
    assert visible_to(city, "alarm", alarm) and visible_to(other, "alarm", alarm)
    assert not visible_to(street, "alarm", alarm)
    # a department's screen: alarms of the devices its department owns (in its places), not of others' devices
    owned = alarm.replace('"alarm_id": 1,', '"alarm_id": 1, "department_code": "chengguan",')
    assert visible_to(dept, "alarm", owned) and not visible_to(dept, "alarm", alarm)
    only_dept = Principal(7, "d", frozenset({"handler"}), departments=("chengguan",))
    assert visible_to(only_dept, "alarm", owned) and not visible_to(only_dept, "alarm", alarm)
    # no places and no departments is the whole city only for roles that read cases or perception at all
    citizen = Principal(5, "c", frozenset({"citizen"}))
    assert not visible_to(citizen, "case", case) and not visible_to(citizen, "alarm", alarm)
    integrator = Principal(6, "i", frozenset({"integrator"}), places=("500105",))
    assert not visible_to(integrator, "case", case.replace("500103", "500105"))


ANOTHER_PROCESS = """
import sys
from datetime import UTC, datetime
from zhizhi.config import Settings
from zhizhi.service.bootstrap import bootstrap
from zhizhi.service.commands import ReportCase
from zhizhi.domain.devices import Device

zz = bootstrap(Settings(database_url=sys.argv[1], data_dir=sys.argv[2], dispatch_merge_duplicates=False))
zz.handle(ReportCase(source="hotline", source_id="other-1", title="另一进程上报的积水", category_code="C0101",
                     lon=106.56, lat=29.56))
out = zz.sensing.register([Device(code="M-other", type="methane_detector", scene="septic_tank",
                                  lon=106.55, lat=29.55)])
assert not isinstance(out[0], Exception), out
rep = zz.sensing.ingest([{"device": "M-other", "quantity": "methane", "value": 30.0,
                          "time": datetime.now(UTC).isoformat()}])
assert rep.alarms_raised, rep
"""


def test_changes_made_by_another_process_reach_open_screens(app: Any, tmp_path: Path) -> None:
    """The MQTT consumer, a CLI import or a second worker write in processes whose bus the server never sees."""
    hub = LiveHub(app, poll_s=0.1)
    app.bus.listen(hub.publish)

    async def scenario() -> list[dict[str, Any]]:
        q = hub.subscribe()
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", ANOTHER_PROCESS, app.settings.database_url,
                             str(tmp_path / "other-var")], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        got: list[dict[str, Any]] = []
        while not ({"CaseReported", "AlarmRaised"} <= {m["type"] for m in got}):
            _, kind, data = await asyncio.wait_for(q.get(), timeout=10)
            got.append({"kind": kind, **json.loads(data)})
        hub.unsubscribe(q)
        return got

    try:
        with ThreadPoolExecutor(1) as pool:
            got = pool.submit(asyncio.run, scenario()).result(timeout=180)
    finally:
        hub.close()
    reported = next(m for m in got if m["type"] == "CaseReported")
    assert reported["kind"] == "case" and reported["case"]["title"] == "另一进程上报的积水"
    raised = next(m for m in got if m["type"] == "AlarmRaised")
    assert raised["kind"] == "alarm" and raised["device_code"] == "M-other" and raised["scene"] == "septic_tank"
    assert raised["grid_code"] in raised["area_codes"] and "500000" in raised["area_codes"]


def _read_events(response: httpx.Response, want: int, until: str = "") -> list[dict[str, str]]:
    """Server-sent events from the response: `want` of them, or up to the first whose data contains `until`."""
    events: list[dict[str, str]] = []
    block: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in block:
                events.append(block)
                if len(events) >= want or (until and until in block["data"]):
                    return events
            block = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            block[key] = value.lstrip(" ")
    return events


def test_stream_delivers_new_cases_over_http_and_replays_after_reconnect(http_server: str, app: Any) -> None:
    server = http_server
    headers = admin_headers(app, lambda path, **kw: httpx.post(server + path, **kw))
    got: list[dict[str, str]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{server}/api/v1/stream", headers=headers, timeout=10) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            ready.set()
            got.extend(_read_events(r, 10, until='"type": "CaseDispatched"'))

    t = threading.Thread(target=listen)
    t.start()
    assert ready.wait(10)  # the screen is subscribed before the answer's headers are sent
    r = httpx.post(f"{server}/api/v1/cases", json={"source": "citizen", "source_id": "s-1", "title": "占道经营",
                                                   "category_code": "C0101", "lon": 106.61, "lat": 29.51},
                   headers=headers)
    assert r.status_code == 201, r.text
    case_id = r.json()["id"]
    t.join(15)
    assert not t.is_alive(), "no event arrived"
    kinds = [(e["event"], json.loads(e["data"])["type"]) for e in got]
    assert kinds[0] == ("case", "CaseReported") and ("case", "CaseRegistered") in kinds, kinds
    assert [json.loads(e["data"])["action"] for e in got][:1] == ["report"]  # one message per timeline entry
    assert {json.loads(e["data"])["case_id"] for e in got} == {case_id}
    assert kinds[-1] == ("case", "CaseDispatched")
    assert json.loads(got[-1]["data"])["case"]["state"] == "dispatched"
    # A screen that reconnects with Last-Event-ID gets what it missed.
    first = int(got[0]["id"])
    with httpx.stream("GET", f"{server}/api/v1/stream", headers={**headers, "Last-Event-ID": str(first)},
                      timeout=10) as r2:
        replay = _read_events(r2, len(got) - 1)
    assert [e["id"] for e in replay] == [e["id"] for e in got[1:]]


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        c.headers.update(admin_headers(app, c.post))
        yield c


def test_uploads_store_images_by_content(client: TestClient) -> None:
    r = client.post("/api/v1/uploads", files={"file": ("a.png", PNG, "image/png")})
    assert r.status_code == 201, r.text
    url = r.json()["url"]
    assert client.post("/api/v1/uploads", files={"file": ("b.png", PNG, "image/png")}).json()["url"] == url
    assert client.get(url).content == PNG
    zz = client.app.state.zz  # type: ignore[attr-defined]
    with zz.engine.connect() as conn:  # each upload is audited (a photo may show people)
        rows = conn.execute(text("SELECT username, target FROM audit_log WHERE action = 'upload.create'")).all()
    assert [tuple(r) for r in rows] == [("t-console", "upload:" + url.rsplit("/", 1)[-1])] * 2
    bad = client.post("/api/v1/uploads", files={"file": ("x.txt", b"hello", "text/plain")})
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert client.get("/api/v1/uploads/..%2Fzhizhi.db").status_code == 404
    assert client.get("/api/v1/uploads/nothing.png").status_code == 404


def test_console_is_served_with_its_libraries(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200 and "/console/js/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/console/js/app.js").status_code == 200
    if find_vendor_file("echarts.esm.min.mjs", Path("var")) is None:
        pytest.fail("node_modules/echarts is missing: run `npm ci` (make test does)")
    lib = client.get("/console/vendor/echarts.esm.min.mjs")
    assert lib.status_code == 200 and "javascript" in lib.headers["content-type"] and len(lib.content) > 100_000
    assert client.get("/console/vendor/left-pad.js").status_code == 404


def test_console_files_reach_nothing_outside_and_speak_both_languages() -> None:
    url = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`]*")
    assert url.search('<script src="https://cdn.example.com/echarts.js">')  # the check itself can fail
    outside = []
    for path in WEB_DIR.rglob("*"):
        if path.suffix in {".html", ".js", ".css", ".json"}:
            text = path.read_text(encoding="utf-8")
            outside += [f"{path.name}: {m}" for m in url.findall(text)]
    assert not outside, outside
    zh = json.loads((WEB_DIR / "i18n" / "zh-CN.json").read_text(encoding="utf-8"))
    en = json.loads((WEB_DIR / "i18n" / "en.json").read_text(encoding="utf-8"))
    assert zh.keys() == en.keys()
    used = set()
    for js in (WEB_DIR / "js").rglob("*.js"):
        used |= set(re.findall(r"\bt\(\"([a-zA-Z]+\.[a-zA-Z0-9.]+)\"", js.read_text(encoding="utf-8")))
    assert used - zh.keys() == set(), "strings used but not translated"


def test_every_action_reaches_listeners_even_those_without_their_own_event(app: Any) -> None:
    """Accepting has no event of its own; CaseChanged (one per timeline entry) still tells open screens."""
    from zhizhi.domain.case import Actor

    seen: list[ev.Event] = []
    cid = app.handle(report("o-1")).case_id
    app.bus.listen(seen.append)
    app.handle(ActOnCase(case_id=cid, action="accept", actor=Actor("处置员", "handler")))
    app.handle(ActOnCase(case_id=cid, action="supervise", actor=Actor("领导", "leader"), note="尽快"))
    changes = [(e.case_id, e.action, e.state) for e in seen if isinstance(e, ev.CaseChanged)]
    assert changes == [(cid, "accept", "handling"), (cid, "supervise", "handling")]
    assert any(isinstance(e, ev.CaseSupervised) for e in seen)
