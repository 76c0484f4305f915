"""The fast ingest path on SQLite and PostgreSQL: typed decoding, sorted multi-row storage, duplicates, a crash.

The fast path must be an optimisation only: the same columns as the general decoder, every
accepted reading stored once in the (datastream, time) index, duplicates refused, and a
batch either wholly committed (then acknowledged) or not stored at all — also when the
process dies in the middle of writing it.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from typing import Any

import numpy as np
import orjson
import pytest

from zhizhi.adapters import observations_store as store_mod
from zhizhi.domain.errors import ValidationFailed
from zhizhi.sensing import ingest as ing
from zhizhi.sensing.simulator import make_devices

BBOX = (106.51, 29.51, 106.69, 29.59)


def _methane_devices(app: Any, n: int, prefix: str) -> list[str]:
    devices = make_devices(n, BBOX, seed=2, prefix=prefix)
    for d in devices:
        d.type, d.scene = "methane_detector", "septic_tank"
    assert all(not isinstance(r, Exception) for r in app.sensing.register(devices))
    return [d.code for d in devices]


@pytest.mark.parametrize("body", [
    b'[{"device": "A", "quantity": "methane", "value": 1.5, "time": 1795399200000},'
    b' {"device": "B", "quantity": "fall", "value": true, "time": "2026-11-23T10:00:00"}]',
    b'{"device": "A", "quantity": "methane", "value": 2}',
    b'{"device": "A", "quantity": "methane", "value": 2, "time": 5}\n{"device": "B", "quantity": "x", "value": 3}\n',
    # the general path: a `values` item, a wrong type, a missing key, an item that is not an object
    b'[{"device": "A", "time": 7, "values": {"methane": 1, "temperature": 20}}, {"device": "B", "quantity": "q", '
    b'"value": "high"}, {"device": "C", "value": 1}, 5]',
    b'[{"device": 7, "quantity": "methane", "value": 1}]',
    b'[]',
])
def test_fast_decoding_gives_the_same_columns_as_the_general_path(body: bytes) -> None:
    fast, n_fast = ing.decode_columns(body)
    items = ing.decode_body(body)
    slow = ing.flatten(items)
    assert n_fast == len(items)
    assert (fast.device, fast.quantity, fast.time, fast.value, fast.malformed) == \
        (slow.device, slow.quantity, slow.time, slow.value, slow.malformed)
    assert fast.item.tolist() == slow.item.tolist()
    gz, _ = ing.decode_columns(gzip.compress(body))
    assert gz.device == fast.device


@pytest.mark.parametrize("body", [
    b'[{"device": "A", "quantity": "methane", "value": 1.5, "time": 1795399200000},'
    b' {"device": "B", "quantity": "fall", "value": true, "time": "2026-11-23T10:00:00"}]',
    b'{"device": "A", "quantity": "methane", "value": 2}\n{"device": "B", "quantity": "methane", "value": 3}\n',
    # not compiled in: a new device, an unknown quantity, a code of another type, a `values` item, not JSON
    b'[{"device": "A", "quantity": "methane", "value": 1}, {"device": "NEW", "quantity": "methane", "value": 2}]',
    b'[{"device": "A", "quantity": "weight", "value": 1}]',
    b'[{"device": 7, "quantity": "methane", "value": 1}]',
    b'[{"device": "A", "time": 7, "values": {"methane": 1}}]',
    b'[{"device": "A", "quantity": "methane", "value": 1}',
])
def test_the_known_codes_decoder_gives_the_same_columns_and_the_index_s_own_strings(body: bytes) -> None:
    index = {code: i for i, code in enumerate("".join([c, ""]) for c in ("A", "B", "C"))}
    known = ing.KnownCodes(list(index), ["methane", "fall"])
    assert known.size == 3
    try:
        plain, n_plain = ing.decode_columns(body)
    except ValidationFailed:  # not JSON: the known decoder must fail the same way
        with pytest.raises(ValidationFailed):
            ing.decode_columns(body, known=known)
        return
    cols, n = ing.decode_columns(body, known=known)
    assert n == n_plain
    assert (cols.device, cols.quantity, cols.time, cols.value, cols.malformed) == \
        (plain.device, plain.quantity, plain.time, plain.value, plain.malformed)
    compiled = b'"values"' not in body and all(d in index for d in cols.device if isinstance(d, str)) and \
        all(isinstance(d, str) for d in cols.device) and set(cols.quantity) <= {"methane", "fall"}
    keys = {id(k) for k in index}
    assert all(id(d) in keys for d in cols.device) == compiled  # the very objects, found by identity
    assert compiled == (body.count(b"NEW") + body.count(b"weight") + body.count(b"values") + body.count(b": 7") == 0)


def test_readings_of_devices_registered_since_the_decoder_was_built_are_accepted(app: Any) -> None:
    sensing = app.sensing
    first = _methane_devices(app, 3, "KN")
    known = sensing.known_codes()
    assert known is not None and known.size == len(sensing.devices)
    late = _methane_devices(app, 2, "KL")  # a small registration: not rebuilt at once
    assert sensing.known_codes() is known
    now = app.clock.now()
    t = int((now - timedelta(minutes=1)).timestamp() * 1000)
    body = orjson.dumps([{"device": c, "quantity": "methane", "value": 1.0, "time": t} for c in first + late]
                        + [{"device": "KX-none", "quantity": "methane", "value": 1.0, "time": t}])
    rep = sensing.ingest_body(body, now=now)
    assert rep.accepted == 5 and rep.reasons == {"unknown-device": 1}
    assert [e["device"] for e in rep.errors] == ["KX-none"]
    rebuilt = sensing.known_codes(rebuild=True)
    assert rebuilt is not known and rebuilt is not None and rebuilt.size == len(sensing.devices)
    cols, _ = ing.decode_columns(body, known=rebuilt)
    assert cols.device[:5] == first + late  # still decoded (the last code is not known: plain decoder)
    big = make_devices(1000, BBOX, seed=3, prefix="KB")
    for d in big:
        d.type, d.scene = "methane_detector", "septic_tank"
    sensing.register(big)  # an import rebuilds it
    assert sensing.known_codes() is not rebuilt and sensing.known_codes().size == len(sensing.devices)


def test_a_shuffled_batch_is_stored_whole_in_key_order_and_duplicates_are_refused(app: Any) -> None:
    codes = _methane_devices(app, 30, "ST")
    now = app.clock.now()
    t0 = int((now - timedelta(hours=2)).timestamp() * 1000)
    # 30 devices x 40 minutes = 1,200 readings: more than two of SQLite's 500-row statements and a remainder
    items = [{"device": c, "quantity": "methane", "value": float(m % 7 + i % 3), "time": t0 + m * 60_000}
             for m in range(40) for i, c in enumerate(codes)]
    rng = np.random.default_rng(4)
    shuffled = [items[i] for i in rng.permutation(len(items))]
    body = orjson.dumps([*shuffled, shuffled[0], shuffled[5]])  # two repeats inside the batch
    rep = app.sensing.ingest_body(body, now=now)
    assert rep.accepted == len(items) and rep.reasons == {"duplicate": 2}
    assert app.sensing.store.count() == len(items)
    ds = int(app.sensing.ds[app.sensing.index[codes[3]], app.sensing.qindex["methane"]])
    series = app.sensing.store.series(ds, newest_first=False)
    assert series == [(t0 + m * 60_000, float(m % 7 + 3 % 3)) for m in range(40)]
    # the same readings again, older than the latest values held: found in the store and refused
    again = app.sensing.ingest_body(orjson.dumps(items[:50]), now=now)
    assert again.accepted == 0 and again.reasons == {"duplicate": 50}
    assert app.sensing.store.count() == len(items)


def test_store_insert_sorts_what_it_is_given_and_keeps_one_of_each_key(app: Any) -> None:
    codes = _methane_devices(app, 3, "SI")
    ds = np.array([app.sensing.ds[app.sensing.index[c], app.sensing.qindex["methane"]] for c in codes])
    n = 2 * store_mod.SQLITE_ROWS + 7
    rng = np.random.default_rng(1)
    d = ds[rng.integers(0, 3, n)]
    t = 1_795_000_000_000 + rng.permutation(n).astype(np.int64) * 1000
    v = rng.uniform(0, 50, n)
    app.sensing.store.insert(d, t, v)
    assert app.sensing.store.count() == n
    got = app.sensing.store.series(int(ds[0]), limit=n, newest_first=False)
    want = sorted(zip(t[d == ds[0]].tolist(), v[d == ds[0]].tolist(), strict=True))
    assert got == want


def test_the_tick_merges_the_small_blocks_of_slow_devices(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices that report once an hour, compacted each hour, leave a small block an hour; the tick merges
    them (and says how many readings it rewrote), and the duplicate check still finds them."""
    monkeypatch.setattr(store_mod, "BLOCK_MAX", 64)  # candidates under 16 readings, merged from 32
    codes = _methane_devices(app, 5, "SM")
    now = app.clock.now()
    t0 = int((now - timedelta(hours=12)).timestamp() * 1000)
    items = []
    for h in range(10):
        hour = [{"device": c, "quantity": "methane", "value": float(h), "time": t0 + h * 3_600_000 + i}
                for i, c in enumerate(codes)]
        assert app.sensing.ingest_body(orjson.dumps(hour), now=now).accepted == 5
        app.sensing.store.compact()
        items += hour
    assert app.sensing.tick(now)["merged"] == 50
    assert app.sensing.tick(now)["merged"] == 0
    assert app.sensing.store.count() == 50
    again = app.sensing.ingest_body(orjson.dumps(items[:20]), now=now)
    assert again.accepted == 0 and again.reasons == {"duplicate": 20}


_CHILD = textwrap.dedent("""
    import os, sys
    from datetime import datetime
    import orjson
    from zhizhi.adapters import observations_store as st
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap

    url, data_dir, now_iso, first, second = sys.argv[1:6]
    zz = bootstrap(Settings(database_url=url, data_dir=data_dir))
    now = datetime.fromisoformat(now_iso)
    rep = zz.sensing.ingest_body(open(first, "rb").read(), now=now)
    print("acknowledged", rep.accepted, flush=True)

    class Dying:
        '''A connection that does all the writing of a batch and dies at the commit.'''
        def __init__(self, real):
            self.real = real
        def __getattr__(self, name):
            return getattr(self.real, name)
        @property
        def driver_connection(self):
            return Dying(self.real.driver_connection)
        def commit(self):
            os._exit(3)

    real = st.ObservationStore.insert
    def insert(self, ds, t, v):
        raw_conn = self.engine.raw_connection
        self.engine.raw_connection = lambda: Dying(raw_conn())
        return real(self, ds, t, v)
    st.ObservationStore.insert = insert
    zz.sensing.ingest_body(open(second, "rb").read(), now=now)
    print("not reached", flush=True)
""")


def test_a_crash_mid_batch_keeps_the_acknowledged_readings_and_none_of_the_unfinished_batch(
        app: Any, tmp_path: Any) -> None:
    codes = _methane_devices(app, 20, "CR")
    now = app.clock.now()
    t0 = int((now - timedelta(hours=1)).timestamp() * 1000)

    def batch(minutes: range) -> list[dict[str, Any]]:
        return [{"device": c, "quantity": "methane", "value": 2.0, "time": t0 + m * 60_000}
                for m in minutes for c in codes]

    first, second = batch(range(0, 10)), batch(range(10, 50))  # 200 acknowledged; 800 in flight at the crash
    (tmp_path / "first.json").write_bytes(orjson.dumps(first))
    (tmp_path / "second.json").write_bytes(orjson.dumps(second))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(app.settings.database_url), str(tmp_path / "child"),
                           now.isoformat(), str(tmp_path / "first.json"), str(tmp_path / "second.json")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"acknowledged {len(first)}" in proc.stdout and "not reached" not in proc.stdout
    assert app.sensing.store.count() == len(first)  # every acknowledged reading, nothing of the dead batch
    # the gateway sends the unacknowledged batch again: all of it is new, none of it a duplicate
    rep = app.sensing.ingest_body(orjson.dumps(second), now=now)
    assert rep.accepted == len(second) and not rep.reasons
    assert app.sensing.store.count() == len(first) + len(second)


def test_a_scoped_caller_s_readings_for_devices_outside_its_scope_are_refused_as_unknown(app: Any) -> None:
    codes = _methane_devices(app, 3, "SC")
    now = app.clock.now()
    t = int((now - timedelta(minutes=5)).timestamp() * 1000)
    outside = app.sensing.index[codes[1]]

    def admit() -> np.ndarray:
        mask = np.ones(len(app.sensing.devices), dtype=np.bool_)
        mask[outside] = False
        return mask

    body = orjson.dumps([{"device": c, "quantity": "methane", "value": 1.0, "time": t} for c in codes])
    rep = app.sensing.ingest_body(body, now=now, admit=admit)
    assert rep.accepted == 2 and rep.reasons == {"unknown-device": 1}
    assert [e["device"] for e in rep.errors] == [codes[1]]
