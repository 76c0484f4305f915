"""The console in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download).

A zhizhi server runs in a thread on 127.0.0.1 over the tiny city (SQLite, automatic dispatch off so that
reports wait for a dispatcher). Every page is watched: a request to any host other than 127.0.0.1 is aborted
and fails the test, and so does an uncaught script error. Screenshots of each main view are written to
`var/artefacts/screenshots/` (kept by CI as artefacts).

When Chromium or the npm packages are missing the tests FAIL under CI (CI=true) with a message naming the
setup step; a local run without them skips, loudly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_kit import serving

from browser.browser_kit import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    LiveServer,
    Watch,
    create_accounts,
    login_headers,
    new_context,
)
from zhizhi.config import Settings
from zhizhi.geo.hierarchy import PlaceHierarchy


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"!!! BROWSER TESTS NOT RUN: {reason}")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing; `make test` installs it (scripts/ensure-browser.sh: "
                 "apt-get install chromium chromium-driver fonts-noto-cjk)")
    from zhizhi.api.console import find_vendor_file

    if find_vendor_file("echarts.esm.min.mjs", REPO / "var") is None:
        _missing("node_modules/echarts is missing; `make test` runs `npm ci`")
    return CHROMIUM


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, tiny_hierarchy: PlaceHierarchy) -> Iterator[LiveServer]:

    from zhizhi.adapters.gazetteer import GeoGazetteer
    from zhizhi.adapters.places_store import save_hierarchy
    from zhizhi.api.app import create_app
    from zhizhi.service.bootstrap import bootstrap

    tmp = tmp_path_factory.mktemp("console")
    settings = Settings(database_url=f"sqlite:///{tmp / 'zhizhi.db'}", data_dir=tmp / "var", auto_dispatch=False)
    zz = bootstrap(settings, gazetteer=GeoGazetteer(tiny_hierarchy))
    save_hierarchy(zz.engine, tiny_hierarchy)
    create_accounts(zz)
    with serving(create_app(zz)) as (base, server):
        yield LiveServer(base, zz, server, login_headers(base))
    zz.engine.dispose()


@pytest.fixture(scope="session")
def browser(chromium_path: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
def context(browser: Any, watch: Watch) -> Iterator[Any]:
    ctx = new_context(browser, watch)
    yield ctx
    ctx.close()
    assert not watch.outside, f"requests left 127.0.0.1: {watch.outside}"
    assert not watch.errors, f"script errors in the page: {watch.errors}"
