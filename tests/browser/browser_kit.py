"""Helpers for the browser tests: the watched browser context, screenshots, paths (fixtures in conftest.py)."""

from __future__ import annotations

import os
import threading
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


@dataclass
class LiveServer:
    base: str
    zz: Any
    server: Any
    thread: threading.Thread


@dataclass
class Watch:
    """What a browser context tried to reach outside 127.0.0.1, and the script errors it raised."""

    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)


def new_context(browser: Any, watch: Watch, **kwargs: Any) -> Any:
    options = {"locale": "zh-CN", "timezone_id": "Asia/Shanghai", "viewport": {"width": 1600, "height": 900},
               "geolocation": {"longitude": 106.555, "latitude": 29.525}, "permissions": ["geolocation"],
               "service_workers": "block", **kwargs}
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
