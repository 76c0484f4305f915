"""The real server: `zhizhi serve` in its own process, spoken to over TCP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_over_http(tmp_path: Path, tiny_city: dict[str, Any]) -> None:
    city = tmp_path / "city.geojson"
    city.write_text(json.dumps(tiny_city, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "ZHIZHI_DATA_DIR": str(tmp_path / "var"), "ZHIZHI_OUTBOX_INTERVAL_S": "0.2"}
    env.pop("ZHIZHI_DATABASE_URL", None)
    cli = [sys.executable, "-m", "zhizhi"]
    subprocess.run([*cli, "init", "--places", str(city)], env=env, check=True, capture_output=True, timeout=120)
    password = "Server-test-2026!"
    subprocess.run([*cli, "users", "create-admin", "--username", "root1"], env={**env, "ZHIZHI_NEW_PASSWORD": password},
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    proc = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "server died"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        assert httpx.get(f"{base}/api/v1/cases").status_code == 401
        login = httpx.post(f"{base}/api/v1/auth/login", json={"username": "root1", "password": password})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        r = httpx.post(f"{base}/api/v1/cases", headers=auth, json={"source": "grid_worker", "source_id": "gw-1",
                                                      "title": "暴露垃圾", "category_code": "I0101",
                                                      "lon": 106.61, "lat": 29.51})
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
        bad = httpx.post(f"{base}/api/v1/cases", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{base}/docs").status_code == 200
        assert "/api/v1/cases" in httpx.get(f"{base}/openapi.json").json()["paths"]
        # The outbox worker runs in the server: the dispatch notice reaches the log file.
        log = tmp_path / "var" / "notifications.jsonl"
        for _ in range(50):
            if log.exists() and f'"case_id": {cid}' in log.read_text(encoding="utf-8"):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("dispatch notice was not delivered by the server's outbox worker")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
