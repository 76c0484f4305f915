"""Observation ingest: readings/s through validation + durable indexed storage + rule evaluation.

Paths measured, on a fresh SQLite file and (when a server answers) a fresh PostgreSQL database:

- bulk: JSON batch bodies (what `POST /api/v1/observations` receives) through `SensingService.ingest_body`,
  in one process, then split by device over two worker processes;
- the same bulk work as a plain per-reading Python loop (parse, validate, INSERT, rule), as a ratio;
- MQTT: a publisher process sends batched messages (QoS 1) to the real broker; one consumer ingests them;
  every reading is counted (lost must be 0); p50/p99 latency from a reading's timestamp (set when it
  is published) to its alarm's commit and to its case's commit.

Usage: python bench/ingest.py [--readings 1000000] [--devices 100000] [--only sqlite|postgresql] [--no-mqtt]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import backends, database, emit, load_city, make_app, pg_base_url, workdir

BATCH = 50_000
MQTT_MSG = 1_000


def now_ms() -> int:
    return int(time.time() * 1000)


def payloads(codes: list[str], n: int, t0: int, hot: set[int], batch: int = BATCH,
             stamp_now: bool = False) -> list[bytes]:
    """n readings, round-robin over devices (one per device per simulated minute); devices in `hot`
    read 40 %LEL (above the methane limit) on their second reading, so each raises exactly one alarm."""
    import orjson

    out = []
    d = len(codes)
    items: list[dict[str, Any]] = []
    for j in range(n):
        k = j % d
        minute = j // d
        value = 40.0 if (k in hot and minute == 1) else 1.0 + (j * 7919 % 300) / 100.0
        items.append({"device": codes[k], "quantity": "methane", "value": value,
                      "time": t0 + minute * 60_000 + k % 997})
        if len(items) == batch:
            out.append(orjson.dumps(items))
            items = []
    if items:
        out.append(orjson.dumps(items))
    return out


def _worker(url: str, data_dir: str, part: int, parts: int, n: int, t0: int, ready: Any, go: Any,
            result: Any) -> None:
    """One process: its own service over the shared database, ingesting the devices of its hash share."""
    from zhizhi.geo.hierarchy import PlaceHierarchy  # noqa: F401  (imported before timing)

    hierarchy, _ = load_city("tiny", Path(data_dir))
    zz = make_app(url, hierarchy, Path(data_dir))
    codes = [d.code for i, d in enumerate(zz.sensing.devices) if i % parts == part]
    bodies = payloads(codes, n, t0, set())
    ready.set()
    go.wait()
    start = time.perf_counter()
    accepted = 0
    for body in bodies:
        accepted += zz.sensing.ingest_body(body).accepted
    result.put((part, accepted, start, time.perf_counter()))
    zz.engine.dispose()


def loop_baseline(codes: list[str], bodies: list[bytes], path: Path) -> tuple[int, float]:
    """The same work, one reading at a time in plain Python, into an indexed SQLite table."""
    import json
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE obs (datastream_id INTEGER, phenomenon_time INTEGER, result REAL, "
                 "PRIMARY KEY (datastream_id, phenomenon_time)) WITHOUT ROWID")
    ds = {c: i for i, c in enumerate(codes)}
    active: dict[str, bool] = {}
    alarms = 0
    stored = 0
    start = time.perf_counter()
    for body in bodies:
        now = now_ms()
        cur = conn.cursor()
        seen = set()
        for it in json.loads(body):
            d = ds.get(it.get("device"))
            v = it.get("value")
            t = it.get("time")
            if d is None or it.get("quantity") != "methane" or not isinstance(v, int | float):
                continue
            if not (0 <= v <= 100) or t > now + 300_000 or t < now - 7 * 86_400_000 or (d, t) in seen:
                continue
            seen.add((d, t))
            cur.execute("INSERT INTO obs VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (d, t, v))
            stored += 1
            was = active.get(it["device"], False)
            if v >= 25 and not was:
                active[it["device"]] = True
                alarms += 1
            elif v < 20 and was:
                active[it["device"]] = False
        conn.commit()
    elapsed = time.perf_counter() - start
    conn.close()
    return stored, elapsed


def _publisher(codes: list[str], n: int, hot: list[int], ready: Any, done: Any, rate: float = 0.0) -> None:
    """Sends n readings in messages of MQTT_MSG, timestamps taken when each message is built;
    at `rate` readings/s when given (latency at a sustained load), else as fast as it can."""
    import orjson
    import paho.mqtt.client as mqtt

    from zhizhi.sensing.mqtt import batch_topic

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    ready.wait()
    d = len(codes)
    hotset = set(hot)
    infos = []
    began = time.perf_counter()
    for start in range(0, n, MQTT_MSG):
        if rate:
            ahead = start / rate - (time.perf_counter() - began)
            if ahead > 0:
                time.sleep(ahead)
        t = now_ms()
        items = []
        for j in range(start, min(start + MQTT_MSG, n)):
            k = j % d
            minute = j // d
            v = 40.0 if (k in hotset and minute == 1) else 2.0
            items.append({"device": codes[k], "quantity": "methane", "value": v, "time": t - (j % 50)})
        infos.append(client.publish(batch_topic("bench"), orjson.dumps(items), qos=1))
    for info in infos:
        info.wait_for_publish(120)
    done.set()
    client.disconnect()
    client.loop_stop()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))] if s else float("nan")


def run_backend(backend: str, url: str, args: argparse.Namespace, tmp: Path) -> None:
    from zhizhi.sensing.simulator import make_devices

    hierarchy, _ = load_city("tiny", tmp)
    zz = make_app(url, hierarchy, tmp)
    devices = make_devices(args.devices, (106.505, 29.505, 106.695, 29.595), seed=1, prefix="B")
    for d in devices:
        d.type, d.scene = "methane_detector", "septic_tank"
    t = time.perf_counter()
    zz.sensing.register(devices)
    emit(f"ingest.{backend}.register_devices", args.devices / (time.perf_counter() - t), "devices/s")
    codes = [d.code for d in devices]
    n = args.readings
    span_min = -(-n // args.devices)
    t0 = now_ms() - (3 * span_min + 30) * 60_000
    hot = set(range(0, args.devices, max(1, args.devices // args.incidents)))

    # 1. bulk path, one process
    bodies = payloads(codes, n, t0, hot)
    start = time.perf_counter()
    accepted = 0
    for body in bodies:
        accepted += zz.sensing.ingest_body(body).accepted
    bulk = time.perf_counter() - start
    assert accepted == n, (accepted, n)
    emit(f"ingest.{backend}.bulk_1proc", n / bulk, "readings/s")
    alarms = zz.sensing.alarms(limit=1)[1]
    emit(f"ingest.{backend}.bulk_alarms_raised", alarms, "alarms")

    # 2. the same work, per reading in plain Python (always SQLite: it is the baseline design)
    if backend == "sqlite":
        stored, loop = loop_baseline(codes, bodies, tmp / "loop.db")
        emit("ingest.per_reading_loop", stored / loop, "readings/s")
        emit("ingest.bulk_vs_loop", (n / bulk) / (stored / loop), "x")
    del bodies

    # 3. two worker processes, devices split by hash, each its own service on the same database
    ctx = mp.get_context("spawn")
    ready = [ctx.Event() for _ in range(2)]
    go = ctx.Event()
    result = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, str(tmp), p, 2, n // 2, t0 + (span_min + 5) * 60_000, ready[p],
                                                go, result)) for p in range(2)]
    for p in procs:
        p.start()
    for r in ready:
        r.wait(300)
    go.set()
    outs = [result.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    total = sum(o[1] for o in outs)
    wall = max(o[3] for o in outs) - min(o[2] for o in outs)
    emit(f"ingest.{backend}.bulk_2proc", total / wall, "readings/s")

    # 4. MQTT: batched messages through Mosquitto into one consumer; latency reading → alarm → case
    if not args.no_mqtt:
        from zhizhi.sensing.mqtt import Consumer

        zz.sensing.timings.clear()
        mqtt_hot = sorted(set(range(1, args.devices, max(1, args.devices // args.incidents))) - hot)
        consumer = Consumer(zz.sensing, group=f"bench{int(time.time())}", max_messages=50)
        consumer.start()
        consumer.ready.wait(10)
        m = args.mqtt_readings
        ready_pub, done = ctx.Event(), ctx.Event()
        pub = ctx.Process(target=_publisher, args=(codes, m, mqtt_hot, ready_pub, done, args.mqtt_rate))
        pub.start()
        time.sleep(2.0)  # publisher connected
        start = time.perf_counter()
        ready_pub.set()
        deadline = time.monotonic() + 300
        while consumer.stats.accepted + consumer.stats.refused < m and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        time.sleep(1.0)
        consumer.stop()
        pub.join()
        got = consumer.stats.accepted
        label = f"mqtt_paced_{int(args.mqtt_rate)}" if args.mqtt_rate else "mqtt_1proc"
        emit(f"ingest.{backend}.{label}", got / elapsed, "readings/s")
        emit(f"ingest.{backend}.mqtt_lost", m - got - consumer.stats.refused, "readings")
        emit(f"ingest.{backend}.mqtt_refused", consumer.stats.refused, "readings")
        tm = list(zz.sensing.timings)
        alarm_ms = [x.alarm_ms - x.reading_ms for x in tm if x.case_ms is None]
        case_ms = [x.case_ms - x.reading_ms for x in tm if x.case_ms is not None]
        emit(f"ingest.{backend}.alarms_measured", len(alarm_ms), "alarms")
        emit(f"ingest.{backend}.reading_to_alarm_p50", pct(alarm_ms, 50), "ms")
        emit(f"ingest.{backend}.reading_to_alarm_p99", pct(alarm_ms, 99), "ms")
        emit(f"ingest.{backend}.reading_to_case_p50", pct(case_ms, 50), "ms")
        emit(f"ingest.{backend}.reading_to_case_p99", pct(case_ms, 99), "ms")
    emit(f"ingest.{backend}.stored_total", zz.sensing.store.count(), "readings")
    zz.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--incidents", type=int, default=100, help="devices that cross the methane limit per path")
    ap.add_argument("--mqtt-readings", type=int, default=500_000, help="readings for the MQTT path")
    ap.add_argument("--mqtt-rate", type=float, default=0.0,
                    help="publish at this many readings/s (latency at a sustained load; 0 = flood)")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--pg", help="PostgreSQL server URL")
    ap.add_argument("--no-mqtt", action="store_true")
    args = ap.parse_args(argv)
    pg = pg_base_url(args.pg)
    emit("ingest.readings", args.readings, "readings")
    emit("ingest.devices", args.devices, "devices")
    with workdir() as w:
        for backend in backends(pg, args.only):
            with database(backend, pg, Path(w)) as url:
                run_backend(backend, url, args, Path(w))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
