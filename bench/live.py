"""New case → every open screen: latency of the live stream (server-sent events) over real HTTP.

A zhizhi server runs on 127.0.0.1 (uvicorn, SQLite, the tests' tiny city). `--screens` clients hold
`GET /api/v1/stream` open, as open consoles do; the bench reports cases one after the other and
measures, for every screen, the time from sending the report to receiving that case's `CaseReported`
event. Goal: every screen within a second (issue 6). Usage: python bench/live.py [--help]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, load_city, make_app, workdir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--screens", type=int, default=20, help="open screens (default: %(default)s)")
    ap.add_argument("-n", "--reports", type=int, default=100, help="timed reports (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed reports first (default: %(default)s)")
    args = ap.parse_args(argv)

    import uvicorn

    from zhizhi.adapters.places_store import save_hierarchy
    from zhizhi.api.app import create_app

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
        sent: dict[str, float] = {}  # title → when its report was sent
        received: list[float] = []
        lock = threading.Lock()
        ready = threading.Barrier(args.screens + 1)
        stop = threading.Event()

        def screen() -> None:
            with httpx.stream("GET", f"{base}/api/v1/stream", timeout=None) as r:
                ready.wait()
                for line in r.iter_lines():
                    if stop.is_set():
                        return
                    if line.startswith("data: "):
                        ev = json.loads(line[6:])
                        if ev.get("type") == "CaseReported":
                            now = time.perf_counter()
                            with lock:
                                if not ev["case"]["title"].startswith("井盖缺失 -"):  # warm-up reports
                                    received.append(now - sent[ev["case"]["title"]])

        threads = [threading.Thread(target=screen, daemon=True) for _ in range(args.screens)]
        for t in threads:
            t.start()
        ready.wait()
        with httpx.Client(base_url=base) as client:
            for i in range(-args.warmup, args.reports):
                title = f"井盖缺失 {i}"
                with lock:
                    sent[title] = time.perf_counter()
                r = client.post("/api/v1/cases", json={"source": "citizen", "source_id": f"live-{i}", "title": title,
                                                       "category_code": "C0101", "lon": 106.52, "lat": 29.52})
                r.raise_for_status()
                time.sleep(0.02)
        deadline = time.monotonic() + 10
        while len(received) < args.reports * args.screens and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        server.should_exit = True
        ms = sorted(1000 * x for x in received)
        emit("live_city", label)
        emit("live_screens", args.screens)
        emit("live_events_delivered", f"{len(ms)}/{args.reports * args.screens}")
        if ms:
            emit("live_case_to_screen_p50", ms[len(ms) // 2], "ms")
            emit("live_case_to_screen_p99", ms[min(len(ms) - 1, int(len(ms) * 0.99))], "ms")
            emit("live_case_to_screen_max", ms[-1], "ms")
        zz.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
