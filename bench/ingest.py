"""Observation ingest: readings/s through validation + durable indexed storage + rule evaluation.

Paths measured, on a fresh SQLite file and (when a server answers) a fresh PostgreSQL database:

- bulk: JSON batch bodies (what `POST /api/v1/observations` receives) through `SensingService.ingest_body`,
  in one process, then over two worker processes, each owning one of two device partitions
  (`partition_of`, the same split as the MQTT partition topics);
- the same bulk work as a plain per-reading Python loop (parse with orjson, the same checks, one INSERT per
  reading into the same indexed table layout, the same two methane rules), as a ratio;
- MQTT: a publisher process sends batched messages (QoS 1) to the real broker; one consumer ingests them;
  every reading is counted (lost must be 0); p50/p99 latency from a reading's timestamp (set when it
  is published) to its alarm's commit and to its case's commit;
- MQTT into two consumer processes, each owning half of four partition topics (`zhizhi/v1/part/{n}`,
  under a root of its own), the publisher splitting each message by device partition.

Storage is the observation log plus its compaction into blocks (adapters/observations_store.py): every
measured path ends by compacting all it stored, inside the timed span and the CPU counted, so the figures
include building the (datastream, time) index, not only appending the log.

Every rate is given twice: per wall-clock second, and per CPU-second of the processes doing the work
(`time.process_time` of the ingesting process; on PostgreSQL plus the CPU of this database's server
backends, read from /proc), because on a shared machine the wall clock measures the neighbours too.
The load average at the start is printed with the figures.

Usage: python bench/ingest.py [--readings 1000000] [--devices 100000] [--only sqlite|postgresql] [--no-mqtt]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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


def named(url: str, role: str) -> str:
    """The database URL with a PostgreSQL application_name of this process's own, so that `server_cpu`
    counts the server backends of this process only (not those of the other processes on the database)."""
    if not url.startswith("postgresql"):
        return url
    return f"{url}{'&' if '?' in url else '?'}application_name=zz-bench-{role}-{os.getpid()}"


def server_cpu(engine: Any) -> float:
    """CPU-seconds used so far by this process's PostgreSQL backends (0 on SQLite: it runs in-process)."""
    if engine.dialect.name != "postgresql":
        return 0.0
    with engine.connect() as conn:
        pids = [r[0] for r in conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = current_setting('application_name')").fetchall()]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _worker(url: str, data_dir: str, part: int, parts: int, n: int, t0: int, ready: Any, go: Any,
            result: Any) -> None:
    """One process: its own service over the shared database, ingesting the devices of its partition."""
    from zhizhi.geo.hierarchy import PlaceHierarchy  # noqa: F401  (imported before timing)
    from zhizhi.sensing.mqtt import partition_of

    hierarchy, _ = load_city("tiny", Path(data_dir))
    zz = make_app(named(url, f"worker{part}"), hierarchy, Path(data_dir))
    codes = [d.code for d in zz.sensing.devices if partition_of(d.code, parts) == part]
    bodies = payloads(codes, n, t0, set())
    ready.set()
    go.wait()
    srv0 = server_cpu(zz.engine)
    start, cpu0 = time.perf_counter(), time.process_time()
    accepted = 0
    for body in bodies:
        accepted += zz.sensing.ingest_body(body).accepted
    zz.sensing.compact()  # the blocks (the index) are part of the work measured
    end, cpu = time.perf_counter(), time.process_time() - cpu0
    result.put((part, accepted, start, end, cpu, server_cpu(zz.engine) - srv0))
    zz.engine.dispose()


def loop_baseline(codes: list[str], bodies: list[bytes], path: Path, catalogue: Any) -> tuple[int, float, float]:
    """The same work one reading at a time in plain Python: a fair, sensible per-reading design.

    It parses with orjson (the same parser the general path uses), makes the same checks (known device,
    quantity measured by it, physical range, time window, duplicate in the batch and in the table),
    inserts each reading into a table of the same layout (primary key (datastream, time), WITHOUT ROWID,
    WAL, synchronous=NORMAL, the same page cache, one commit per batch) and evaluates the device's two
    methane rules (threshold with hysteresis, rate of change against the previous reading) with per-device
    state in dicts. It does not
    store alarms or open cases (the bulk path does). Returns (stored, wall seconds, CPU seconds).
    """
    import sqlite3

    import orjson

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-131072")
    conn.execute("CREATE TABLE obs (datastream_id INTEGER NOT NULL, phenomenon_time INTEGER NOT NULL, "
                 "result REAL NOT NULL, PRIMARY KEY (datastream_id, phenomenon_time)) WITHOUT ROWID")
    ds = {c: i for i, c in enumerate(codes)}
    measured = {"methane"}
    qmin, qmax = catalogue.quantities["methane"].min, catalogue.quantities["methane"].max
    rules = {r.code: r for r in catalogue.rules}
    high, rising = rules["methane_high"], rules["methane_rising"]
    active_high: dict[int, bool] = {}
    active_rise: dict[int, bool] = {}
    prev: dict[int, tuple[int, float]] = {}
    last_seen: dict[int, int] = {}
    alarms = stored = 0
    start, cpu0 = time.perf_counter(), time.process_time()
    for body in bodies:
        now = now_ms()
        cur = conn.cursor()
        seen: set[tuple[int, int]] = set()
        for it in orjson.loads(body):
            if type(it) is not dict:
                continue
            d = ds.get(it.get("device"))
            v, t = it.get("value"), it.get("time")
            if d is None or it.get("quantity") not in measured or type(v) not in (int, float) or type(t) is not int:
                continue
            if not (qmin <= v <= qmax) or t > now + 300_000 or t < now - 7 * 86_400_000 or (d, t) in seen:
                continue
            seen.add((d, t))
            cur.execute("INSERT INTO obs VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (d, t, v))
            if not cur.rowcount:
                continue  # already stored: a duplicate
            stored += 1
            last_seen[d] = max(last_seen.get(d, 0), t)
            if v >= high.value and not active_high.get(d):
                active_high[d] = True
                alarms += 1
            elif v < (high.clear or high.value) and active_high.get(d):
                active_high[d] = False
            p = prev.get(d)
            if p is not None and t > p[0]:
                rate = (v - p[1]) / ((t - p[0]) / 60_000)
                if rate > rising.value and not active_rise.get(d):
                    active_rise[d] = True
                    alarms += 1
                elif rate <= rising.value and active_rise.get(d):
                    active_rise[d] = False
            prev[d] = (t, v)
        conn.commit()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    conn.close()
    return stored, elapsed, cpu


_STAMP = b'"time":1111111111111'  # a placeholder of a timestamp's width in prebuilt messages


def _messages(codes: list[str], n: int, hot: set[int], partitions: int, root: str) -> list[tuple[str, bytes]]:
    """The n readings as (topic, body) messages of MQTT_MSG readings, built before anything is timed, each
    body's times left as `_STAMP` (filled at send). Devices in `hot` read 40 %LEL on their second reading.
    With `partitions`, readings are split by device partition as a gateway would: one buffer per partition,
    sent when it holds MQTT_MSG readings."""
    import orjson

    from zhizhi.sensing.mqtt import partition_of, partition_topic

    d = len(codes)
    part_of = [partition_of(c, partitions) for c in codes] if partitions else [0] * d
    buffers: dict[int, list[dict[str, Any]]] = {}
    out: list[tuple[str, bytes]] = []

    def send(p: int, items: list[dict[str, Any]]) -> None:
        topic = partition_topic(p, root) if partitions else f"{root}/batch/bench"
        out.append((topic, orjson.dumps(items)))  # each time is 1111111111111: `_STAMP` in the body

    for j in range(n):
        k = j % d
        v = 40.0 if (k in hot and j // d == 1) else 2.0
        buf = buffers.setdefault(part_of[k], [])
        buf.append({"device": codes[k], "quantity": "methane", "value": v, "time": 1111111111111})
        if len(buf) >= MQTT_MSG:
            send(part_of[k], buf)
            buffers[part_of[k]] = []
    for p, buf in buffers.items():
        if buf:
            send(p, buf)
    return out


def _publisher(codes: list[str], n: int, hot: list[int], ready: Any, done: Any, rate: float = 0.0,
               partitions: int = 0, root: str = "zhizhi/v1") -> None:
    """Sends n readings in messages of MQTT_MSG (QoS 1), each message's readings stamped with the time it is
    sent; at `rate` readings/s when given (latency at a sustained load), else as fast as it can.

    The messages are built before the clock starts and only their timestamps are filled in at send (one bytes
    replace): encoding each message while sending cost the publisher about 1 µs a reading, a third of the two
    cores that the consumers are measured on, and a city's devices do not run on the operations centre's
    machine."""
    import paho.mqtt.client as mqtt

    messages = _messages(codes, n, set(hot), partitions, root)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    ready.wait()
    infos = []
    began = time.perf_counter()
    sent = 0
    for topic, body in messages:
        if rate:
            ahead = sent / rate - (time.perf_counter() - began)
            if ahead > 0:
                time.sleep(ahead)
        stamp = b'"time":%d' % now_ms()
        infos.append(client.publish(topic, body.replace(_STAMP, stamp), qos=1))
        sent += body.count(b'"device"')
    for info in infos:
        info.wait_for_publish(120)
    done.set()
    client.disconnect()
    client.loop_stop()


def _consumer(url: str, data_dir: str, parts: list[int], root: str, batch: int, counter: Any, ready: Any,
              stop: Any, result: Any) -> None:
    """One consumer process owning `parts` of the partition topics, with its own service on the shared database."""
    from zhizhi.sensing.mqtt import Consumer
    from zhizhi.sensing.simulator import make_devices

    hierarchy, _ = load_city("tiny", Path(data_dir))
    zz = make_app(named(url, f"consumer{parts[0]}"), hierarchy, Path(data_dir))
    # Warm-up outside the measurement: one device of its own raises one alarm that opens one case, so the
    # first measured case does not pay for this fresh process's first use of the locator and the case loop.
    warm = make_devices(1, (106.505, 29.505, 106.695, 29.595), seed=9, prefix=f"WARM{parts[0]}")
    warm[0].type, warm[0].scene = "methane_detector", "septic_tank"
    zz.sensing.register(warm)
    t = now_ms()
    zz.sensing.ingest([{"device": warm[0].code, "quantity": "methane", "value": 2.0, "time": t - 120_000},
                       {"device": warm[0].code, "quantity": "methane", "value": 40.0, "time": t - 60_000}])
    zz.sensing.timings.clear()
    c = Consumer(zz.sensing, partitions=parts, root=root, max_messages=50, max_readings=batch)
    c.start()
    c.ready.wait(10)
    ready.set()
    srv0, cpu0 = server_cpu(zz.engine), time.process_time()
    while not stop.is_set():
        counter.value = c.stats.accepted + c.stats.refused
        time.sleep(0.01)
    c.stop()
    zz.sensing.compact()  # the blocks (the index) are part of the work measured
    end = time.perf_counter()
    cpu, srv = time.process_time() - cpu0, server_cpu(zz.engine) - srv0
    tm = list(zz.sensing.timings)
    result.put((c.stats.accepted, c.stats.refused, cpu, srv, c.stats.batches, end,
                [x.alarm_ms - x.reading_ms for x in tm if x.case_ms is None],
                [x.case_ms - x.reading_ms for x in tm if x.case_ms is not None]))
    zz.engine.dispose()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))] if s else float("nan")


def run_backend(backend: str, url: str, args: argparse.Namespace, tmp: Path) -> None:
    from zhizhi.sensing.simulator import make_devices

    hierarchy, _ = load_city("tiny", tmp)
    zz = make_app(named(url, "main"), hierarchy, tmp)
    devices = make_devices(args.devices, (106.505, 29.505, 106.695, 29.595), seed=1, prefix="B")
    for d in devices:
        d.type, d.scene = "methane_detector", "septic_tank"
    t = time.perf_counter()
    zz.sensing.register(devices)
    zz.sensing.store.checkpoint()  # registration's own writes leave the WAL before the ingest is timed
    emit(f"ingest.{backend}.register_devices", args.devices / (time.perf_counter() - t), "devices/s")
    codes = [d.code for d in devices]
    n = args.readings
    span_min = -(-n // args.devices)
    t0 = now_ms() - (3 * span_min + 30) * 60_000
    hot = set(range(0, args.devices, max(1, args.devices // args.incidents)))

    # 1. bulk path, one process
    bodies = payloads(codes, n, t0, hot)
    srv0 = server_cpu(zz.engine)
    start, cpu0 = time.perf_counter(), time.process_time()
    accepted = 0
    for body in bodies:
        accepted += zz.sensing.ingest_body(body).accepted
    log_done = time.perf_counter()
    zz.sensing.compact()  # the blocks (the index) are part of the work measured
    bulk, cpu = time.perf_counter() - start, time.process_time() - cpu0
    srv = server_cpu(zz.engine) - srv0
    assert accepted == n, (accepted, n)
    emit(f"ingest.{backend}.bulk_1proc", n / bulk, "readings/s")
    emit(f"ingest.{backend}.bulk_1proc_per_cpu", n / (cpu + srv), "readings/CPU-s")
    emit(f"ingest.{backend}.bulk_1proc_client_cpu", cpu / n * 1e9, "ns/reading")
    emit(f"ingest.{backend}.bulk_1proc_final_compaction", bulk - (log_done - start), "s")
    if backend == "postgresql":
        emit(f"ingest.{backend}.bulk_1proc_server_cpu", srv / n * 1e9, "ns/reading")
    alarms = zz.sensing.alarms(limit=1)[1]
    emit(f"ingest.{backend}.bulk_alarms_raised", alarms, "alarms")

    # 2. the same work, per reading in plain Python (always SQLite: it is the baseline design)
    bulk_rate = n / bulk
    if backend == "sqlite":
        stored, loop, loop_cpu = loop_baseline(codes, bodies, tmp / "loop.db", zz.sensing.catalogue)
        assert stored == n, (stored, n)
        emit("ingest.per_reading_loop", stored / loop, "readings/s")
        emit("ingest.per_reading_loop_per_cpu", stored / loop_cpu, "readings/CPU-s")
        emit("ingest.bulk_vs_loop", (n / bulk) / (stored / loop), "x")
        args.loop_rate = stored / loop  # the host's yardstick for the later figures (SQLite runs first)
        emit("ingest.bulk_vs_loop_cpu", loop_cpu / cpu, "x")
    del bodies

    # 3. two worker processes, each owning one of two device partitions, each its own service on one database
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
    cpu2 = sum(o[4] + o[5] for o in outs)
    emit(f"ingest.{backend}.bulk_2proc", total / wall, "readings/s")
    emit(f"ingest.{backend}.bulk_2proc_per_cpu", total / cpu2, "readings/CPU-s")
    loop_rate = getattr(args, "loop_rate", 0.0)
    if loop_rate:
        # The host's speed varies (shared machines): the per-reading loop, run on this host in this run, is
        # the yardstick. The goals were set where that loop reached about 200,000 readings/s, so
        # 1,000,000 readings/s with two processes there is 5× the loop, and 500,000 in one process 2.5×.
        emit(f"ingest.{backend}.bulk_1proc_vs_loop", bulk_rate / loop_rate, "x")
        emit(f"ingest.{backend}.bulk_2proc_vs_loop", total / wall / loop_rate, "x")

    # 4. MQTT: batched messages through Mosquitto into one consumer; latency reading → alarm → case
    if not args.no_mqtt:
        from zhizhi.sensing.mqtt import Consumer

        zz.sensing.timings.clear()
        mqtt_hot = sorted(set(range(1, args.devices, max(1, args.devices // args.incidents))) - hot)
        # topics under a root of this run's own: nothing else on the broker reaches these consumers
        root1 = f"zhizhi-bench-{os.getpid()}-{int(time.time())}/v1"
        consumer = Consumer(zz.sensing, group="bench", max_messages=50, max_readings=args.mqtt_batch, root=root1)
        consumer.start()
        consumer.ready.wait(10)
        m = args.mqtt_readings
        ready_pub, done = ctx.Event(), ctx.Event()
        pub = ctx.Process(target=_publisher, args=(codes, m, mqtt_hot, ready_pub, done, args.mqtt_rate, 0, root1))
        pub.start()
        time.sleep(2.0)  # publisher connected
        srv0 = server_cpu(zz.engine)
        start, cpu0 = time.perf_counter(), time.process_time()
        ready_pub.set()
        deadline = time.monotonic() + 300
        while consumer.stats.accepted + consumer.stats.refused < m and time.monotonic() < deadline:
            time.sleep(0.01)
        zz.sensing.compact()  # the blocks (the index) are part of the work measured
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
        srv = server_cpu(zz.engine) - srv0
        time.sleep(1.0)
        consumer.stop()
        pub.join()
        got = consumer.stats.accepted
        label = f"mqtt_paced_{int(args.mqtt_rate)}" if args.mqtt_rate else "mqtt_1proc"
        emit(f"ingest.{backend}.{label}", got / elapsed, "readings/s")
        emit(f"ingest.{backend}.{label}_per_cpu", got / (cpu + srv), "readings/CPU-s")
        emit(f"ingest.{backend}.{label}_batches", consumer.stats.batches, "batches")
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
    # 5. MQTT into two consumer processes, each owning half of the partition topics
    if not args.no_mqtt and not args.no_mqtt_2proc:
        root = f"zhizhi-bench-{os.getpid()}-{int(time.time())}-2/v1"
        n_parts = 4
        m = args.mqtt_readings
        counters = [ctx.Value("q", 0) for _ in range(2)]
        ready = [ctx.Event() for _ in range(2)]
        stop = ctx.Event()
        result = ctx.Queue()
        owned = [[0, 1], [2, 3]]
        procs = [ctx.Process(target=_consumer, args=(url, str(tmp), owned[i], root, args.mqtt_batch, counters[i],
                                                     ready[i], stop, result)) for i in range(2)]
        for p in procs:
            p.start()
        for r in ready:
            r.wait(300)
        hot2 = sorted(set(range(2, args.devices, max(1, args.devices // args.incidents))) - hot)
        ready_pub, done = ctx.Event(), ctx.Event()
        pub = ctx.Process(target=_publisher, args=(codes, m, hot2, ready_pub, done, args.mqtt_rate, n_parts, root))
        pub.start()
        time.sleep(2.0)
        start = time.perf_counter()
        ready_pub.set()
        deadline = time.monotonic() + 300
        while sum(c.value for c in counters) < m and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        outs = [result.get(timeout=120) for _ in procs]
        elapsed = max(o[5] for o in outs) - start  # until both consumers have compacted what they stored
        for p in procs:
            p.join()
        pub.join()
        got = sum(o[0] for o in outs)
        refused = sum(o[1] for o in outs)
        label = f"mqtt_2proc_paced_{int(args.mqtt_rate)}" if args.mqtt_rate else "mqtt_2proc"
        emit(f"ingest.{backend}.{label}", got / elapsed, "readings/s")
        emit(f"ingest.{backend}.{label}_per_cpu", got / sum(o[2] + o[3] for o in outs), "readings/CPU-s")
        emit(f"ingest.{backend}.{label}_lost", m - got - refused, "readings")
        alarm_ms = [x for o in outs for x in o[6]]
        case_ms = [x for o in outs for x in o[7]]
        emit(f"ingest.{backend}.{label}_alarms_measured", len(alarm_ms), "alarms")
        emit(f"ingest.{backend}.{label}_reading_to_alarm_p99", pct(alarm_ms, 99), "ms")
        emit(f"ingest.{backend}.{label}_reading_to_case_p50", pct(case_ms, 50), "ms")
        emit(f"ingest.{backend}.{label}_reading_to_case_p99", pct(case_ms, 99), "ms")
    emit(f"ingest.{backend}.stored_total", zz.sensing.store.count(), "readings")
    if not args.no_mqtt and not args.no_mqtt_2proc:
        print("# note: stored_total includes 2 warm-up readings of each of the two consumer processes", flush=True)
    zz.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--incidents", type=int, default=100, help="devices that cross the methane limit per path")
    ap.add_argument("--mqtt-readings", type=int, default=500_000, help="readings for the MQTT path")
    ap.add_argument("--mqtt-rate", type=float, default=0.0,
                    help="publish at this many readings/s (latency at a sustained load; 0 = flood)")
    ap.add_argument("--mqtt-batch", type=int, default=20_000,
                    help="readings per consumer batch at most (bounds the latency under a flood)")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--pg", help="PostgreSQL server URL")
    ap.add_argument("--no-mqtt", action="store_true")
    ap.add_argument("--no-mqtt-2proc", action="store_true", help="skip the two partition-owning consumer processes")
    args = ap.parse_args(argv)
    pg = pg_base_url(args.pg)
    load1, load5, _ = os.getloadavg()
    emit("ingest.load_average_1min", load1, "")
    emit("ingest.load_average_5min", load5, "")
    emit("ingest.cpu_cores", os.cpu_count() or 0, "cores")
    emit("ingest.readings", args.readings, "readings")
    emit("ingest.devices", args.devices, "devices")
    with workdir() as w:
        for backend in backends(pg, args.only):
            with database(backend, pg, Path(w)) as url:
                run_backend(backend, url, args, Path(w))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
