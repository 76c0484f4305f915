"""Helpers for the browser tests: the watched browser context, screenshots, paths (fixtures in conftest.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = Path(os.environ.get("ZHIZHI_CHROMIUM", "/usr/bin/chromium"))
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "var" / "artefacts" / "screenshots"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-domain-reliability", "--no-pings", "--disable-breakpad"]


#: One account per role, created by the fixture when the access capability is installed:
#: (username, password, roles, places, departments). The handler works for 城市管理, where C01 cases go.
ACCOUNTS = {
    "grid_worker": ("t-grid", "Zhizhi#Console1-2026", ("grid_worker",), ("500000",), ()),
    "dispatcher": ("t-dispatcher", "Zhizhi#Console2-2026", ("dispatcher",), ("500000",), ()),
    "handler": ("t-handler", "Zhizhi#Console3-2026", ("handler",), ("500000",), ("chengguan",)),
    "leader": ("t-leader", "Zhizhi#Console4-2026", ("leader",), ("500000",), ()),
    "admin": ("t-admin", "Zhizhi#Console5-2026", ("admin",), (), ()),
}


@dataclass
class LiveServer:
    base: str
    zz: Any
    server: Any
    headers: dict[str, str] = field(default_factory=dict)  # what API calls from the test send (a bearer token)


def create_accounts(zz: Any) -> bool:
    """The test accounts, when accounts exist in this build (False: dev mode, every call is the system)."""
    try:
        from zhizhi.service.accounts import create_user  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    for username, password, roles, places, departments in ACCOUNTS.values():
        create_user(zz, username=username, password=password, roles=roles, places=places, departments=departments,
                    display_name=username)
    return True


def login_headers(base: str, role: str = "admin") -> dict[str, str]:
    """A bearer token for `role` when the server has logins, else no header (dev mode)."""
    import httpx

    username, password = ACCOUNTS[role][:2]
    r = httpx.post(f"{base}/api/v1/auth/login", json={"username": username, "password": password}, timeout=10)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@dataclass
class Watch:
    """What a browser context tried to reach outside 127.0.0.1, and the script errors it raised."""

    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


def new_context(browser: Any, watch: Watch, **kwargs: Any) -> Any:
    options = {"locale": "zh-CN", "timezone_id": "Asia/Shanghai", "viewport": {"width": 1600, "height": 900},
               "geolocation": {"longitude": 106.555, "latitude": 29.525}, "permissions": ["geolocation"],
               "service_workers": "block",
               # Playwright's own string predicates (wait_for_function) need eval, which the console's CSP forbids;
               # test_console_runs_under_its_content_security_policy runs the page with the policy applied.
               "bypass_csp": True, **kwargs}
    ctx = browser.new_context(**options)

    def guard(route: Any) -> None:
        url = route.request.url
        watch.seen.append(url)
        host = urlsplit(url).hostname
        if url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:
            watch.outside.append(url)
            route.abort()

    ctx.route("**/*", guard)
    ctx.on("weberror", lambda err: watch.errors.append(str(err.error)))
    return ctx


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
