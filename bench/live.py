"""New case → every open screen: latency of the live stream (server-sent events) over real HTTP.

A zhizhi server runs on 127.0.0.1 (uvicorn, SQLite, the tests' tiny city). `--screens` clients hold
`GET /api/v1/stream` open, as open consoles do; the bench reports cases one after the other and
measures, for every screen, the time from sending the report to receiving that case's `CaseReported`
event. Goal: every screen within a second (issue 6). Usage: python bench/live.py [--help]

`--writer process` has another process (as the MQTT consumer or a CLI import would be) write the reports straight
into the store; the server only learns of them through the store's live feed. Each report carries its wall-clock
send time in its title, so the latency is measured across the two processes.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, load_city, make_app, workdir

PASSWORD = "Screens-watch-2026!"
OTHER_WRITER = """
import sys, time
from zhizhi.config import Settings
from zhizhi.service.bootstrap import bootstrap
from zhizhi.service.commands import ReportCase
zz = bootstrap(Settings(database_url=sys.argv[1], data_dir=sys.argv[2], dispatch_merge_duplicates=False))
for i in range(-int(sys.argv[3]), int(sys.argv[4])):
    zz.handle(ReportCase(source="hotline", source_id=f"other-{i}", title=f"井盖缺失 {i} @{time.time():.6f}",
                         category_code="C0101", lon=106.52, lat=29.52))
    time.sleep(0.02)
"""


SCREENS = """
import json, sys, threading, time
import httpx
base, headers, n, want = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
received, lock, connected, done = [], threading.Lock(), threading.Semaphore(0), threading.Event()

def screen():
    with httpx.stream("GET", base + "/api/v1/stream", headers=headers, timeout=None) as r:
        connected.release()
        for line in r.iter_lines():
            if line.startswith("data: "):
                ev = json.loads(line[6:])
                if ev.get("type") == "CaseReported":
                    now, title = time.time(), ev["case"]["title"]
                    if not title.startswith("井盖缺失 -"):  # warm-up reports
                        with lock:
                            received.append(now - float(title.rpartition("@")[2]))
                            if len(received) >= want:
                                done.set()

for _ in range(n):
    threading.Thread(target=screen, daemon=True).start()
for _ in range(n):
    connected.acquire()
print("ready", flush=True)
done.wait(30)
with lock:
    print(json.dumps(received), flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--screens", type=int, default=20, help="open screens (default: %(default)s)")
    ap.add_argument("-n", "--reports", type=int, default=100, help="timed reports (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed reports first (default: %(default)s)")
    ap.add_argument("--writer", choices=("api", "process"), default="api",
                    help="who reports: this process over HTTP, or another process into the store")
    args = ap.parse_args(argv)

    import uvicorn

    from zhizhi.adapters.places_store import save_hierarchy
    from zhizhi.api.app import create_app
    from zhizhi.service import accounts

    hierarchy, label = load_city("tiny", Path("var/cache"))
    with workdir() as tmp:
        zz = make_app(f"sqlite:///{tmp}/zhizhi.db", hierarchy, Path(tmp) / "var")
        save_hierarchy(zz.engine, hierarchy)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(zz), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        accounts.create_user(zz, "bench-live", PASSWORD, ("admin",))
        token = httpx.post(f"{base}/api/v1/auth/login", json={"username": "bench-live", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        # The screens live in a process of their own, as browsers would: they must not share the server's GIL.
        screens = subprocess.Popen([sys.executable, "-c", SCREENS, base, json.dumps(headers), str(args.screens),
                                    str(args.reports * args.screens)], stdout=subprocess.PIPE, text=True)
        assert screens.stdout is not None
        assert screens.stdout.readline().strip() == "ready", "the screens did not connect"
        if args.writer == "api":
            with httpx.Client(base_url=base, headers=headers) as client:
                for i in range(-args.warmup, args.reports):
                    r = client.post("/api/v1/cases", json={
                        "source": "citizen", "source_id": f"live-{i}", "title": f"井盖缺失 {i} @{time.time():.6f}",
                        "category_code": "C0101", "lon": 106.52, "lat": 29.52})
                    r.raise_for_status()
                    time.sleep(0.02)
        else:
            subprocess.run([sys.executable, "-c", OTHER_WRITER, zz.settings.database_url, str(Path(tmp) / "other"),
                            str(args.warmup), str(args.reports)], check=True)
        received = json.loads(screens.communicate(timeout=60)[0])
        server.should_exit = True
        ms = sorted(1000 * x for x in received)
        emit("live_city", label)
        emit("live_screens", args.screens)
        emit("live_writer", "this server over HTTP" if args.writer == "api" else "another process, into the store")
        emit("live_events_delivered", f"{len(ms)}/{args.reports * args.screens}")
        if ms:
            emit("live_case_to_screen_p50", ms[len(ms) // 2], "ms")
            emit("live_case_to_screen_p99", ms[min(len(ms) - 1, int(len(ms) * 0.99))], "ms")
            emit("live_case_to_screen_max", ms[-1], "ms")
        zz.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
