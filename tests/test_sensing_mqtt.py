"""Round trip through the real Mosquitto broker: simulator → MQTT → shared-subscription consumers → alarms → cases."""

from __future__ import annotations

import socket
import time
import uuid
import zlib
from datetime import timedelta
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest

from zhizhi.domain.errors import ValidationFailed
from zhizhi.sensing.ingest import dt_to_ms
from zhizhi.sensing.mqtt import Consumer, batch_topic, device_topic, parse_partitions, partition_of, partition_topic
from zhizhi.sensing.simulator import Simulator, make_devices


def _broker() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def publisher() -> Any:
    if not _broker():
        pytest.fail("Mosquitto is expected on 127.0.0.1:1883 (see docs/sensing.md)")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"zz-test-pub-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def wait_for(cond: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_simulated_incidents_become_alarms_and_cases_through_mosquitto(app: Any, publisher: Any) -> None:
    devices = make_devices(24, (106.51, 29.51, 106.69, 29.59), seed=3, prefix=f"S{uuid.uuid4().hex[:4]}")
    assert all(not isinstance(r, Exception) for r in app.sensing.register(devices))
    sim = Simulator(devices, seed=5)
    incidents = sim.inject(per_scene=1, start_minute=2)
    assert {i.scene for i in incidents} == {"septic_tank", "forest_fire", "waterlogging", "elderly", "high_throw",
                                            "kitchen_waste"}
    group = f"g{uuid.uuid4().hex[:6]}"
    consumers = [Consumer(app.sensing, group=group, max_messages=20)]
    for c in consumers:
        c.start()
    try:
        for c in consumers:
            assert c.ready.wait(10)
        start = dt_to_ms(app.clock.now() - timedelta(minutes=135))
        producer = f"test-{group}"
        sent = 0
        infos = []
        for batch in sim.minutes(start, 135, batch_size=40):
            infos.append(publisher.publish(batch_topic(producer), orjson.dumps(batch), qos=1))
            sent += sum(len(b["values"]) for b in batch)
        for info in infos:
            info.wait_for_publish(10)
        # one reading on a device topic (device named by the topic), and one message that is not JSON
        d0 = devices[0]
        publisher.publish(device_topic(d0.scene, d0.code),
                          orjson.dumps({"quantity": "methane" if d0.type == "methane_detector" else "temperature",
                                        "value": 1.0, "time": dt_to_ms(app.clock.now())}), qos=1).wait_for_publish(5)
        publisher.publish(batch_topic(producer), b"\x00 not json", qos=1).wait_for_publish(5)
        wait_for(lambda: sum(c.stats.accepted for c in consumers) >= sent + 1
                 and sum(c.stats.bad_messages for c in consumers) >= 1)
    finally:
        for c in consumers:
            c.stop()
    accepted = sum(c.stats.accepted for c in consumers)
    assert accepted == sent + 1  # not one reading lost, none stored twice
    assert app.sensing.store.count() == sent + 1
    alarms, _ = app.sensing.alarms(limit=500)
    by_device = {(a.device_code, a.rule_code): a for a in alarms}
    for inc in incidents:
        alarm = by_device.get((inc.device, inc.rule_code))
        assert alarm is not None, f"incident {inc} raised no alarm"
        assert alarm.case_id is not None, f"incident {inc} opened no case"
        with app.uow() as uow:
            case = uow.cases.get(alarm.case_id)
        assert case is not None and case.source == "sensor" and case.location.grid == alarm.grid_code
    # nothing fired on a device without an incident, except rate-of-change on the incident's own jump
    injected = {i.device for i in incidents}
    assert all(a.device_code in injected for a in alarms)


def test_two_consumers_in_one_group_split_the_messages(app: Any, publisher: Any) -> None:
    devices = make_devices(6, (106.51, 29.51, 106.69, 29.59), seed=4, prefix=f"P{uuid.uuid4().hex[:4]}")
    app.sensing.register(devices)
    group = f"g{uuid.uuid4().hex[:6]}"
    consumers = [Consumer(app.sensing, group=group, max_messages=5) for _ in range(2)]
    for c in consumers:
        c.start()
    try:
        for c in consumers:
            assert c.ready.wait(10)
        start = dt_to_ms(app.clock.now() - timedelta(minutes=60))
        sent = 0
        for batch in Simulator(devices, seed=1).minutes(start, 60, batch_size=6):
            publisher.publish(batch_topic(f"split-{group}"), orjson.dumps(batch), qos=1).wait_for_publish(5)
            sent += sum(len(b["values"]) for b in batch)
        wait_for(lambda: sum(c.stats.accepted for c in consumers) >= sent)
    finally:
        for c in consumers:
            c.stop()
    assert sum(c.stats.messages for c in consumers) == 60  # each message went to exactly one member
    assert all(c.stats.messages > 0 for c in consumers)
    assert app.sensing.store.count() == sent


def test_partition_of_is_stable_and_partition_lists_parse() -> None:
    # CRC-32 of the code: the same number in every process and language (Python's hash() is salted)
    assert partition_of("M-0001", 16) == zlib.crc32(b"M-0001") % 16
    assert {partition_of(f"D{i}", 4) for i in range(200)} == {0, 1, 2, 3}
    assert parse_partitions("0-3,6", 8) == [0, 1, 2, 3, 6]
    assert parse_partitions("5", 8) == [5]
    for bad in ("8", "3-1", "x", "", "0-99"):
        with pytest.raises(ValidationFailed):
            parse_partitions(bad, 8)


class _Spy:
    """Stands in for the service: records what one consumer received, then ingests it for real."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.devices: set[str] = set()
        self.batch_sizes: list[int] = []

    def known_codes(self) -> Any:
        return self.real.known_codes()

    def ingest_columns(self, cols: Any, received: int, now: Any = None) -> Any:
        self.devices.update(cols.device)
        self.batch_sizes.append(len(cols.device))
        return self.real.ingest_columns(cols, received, now)


def test_partition_owners_get_every_reading_of_their_devices_and_no_other(app: Any, publisher: Any) -> None:
    devices = make_devices(40, (106.51, 29.51, 106.69, 29.59), seed=6, prefix=f"Q{uuid.uuid4().hex[:4]}")
    for d in devices:
        d.type, d.scene = "methane_detector", "septic_tank"
    app.sensing.register(devices)
    spies = [_Spy(app.sensing), _Spy(app.sensing)]
    owned = [[0, 1], [2, 3]]
    # a topic root per test run: other runs on the same broker must not feed these consumers
    root = f"zhizhi-test-{uuid.uuid4().hex[:8]}/v1"
    consumers = [Consumer(s, partitions=parts, max_readings=100, max_wait_s=0.2, root=root)  # type: ignore[arg-type]
                 for s, parts in zip(spies, owned, strict=True)]
    for c in consumers:
        c.start()
    try:
        for c in consumers:
            assert c.ready.wait(10)
        start = dt_to_ms(app.clock.now() - timedelta(minutes=30))
        sent = 0
        for minute in range(30):
            split: dict[int, list[dict[str, Any]]] = {}
            for d in devices:
                split.setdefault(partition_of(d.code, 4), []).append(
                    {"device": d.code, "quantity": "methane", "value": 2.0, "time": start + minute * 60_000})
            for p, items in split.items():
                publisher.publish(partition_topic(p, root), orjson.dumps(items), qos=1).wait_for_publish(5)
                sent += len(items)
        wait_for(lambda: sum(c.stats.accepted for c in consumers) >= sent)
    finally:
        for c in consumers:
            c.stop()
    assert sum(c.stats.accepted for c in consumers) == sent == 30 * len(devices)
    assert spies[0].devices.isdisjoint(spies[1].devices)
    assert spies[0].devices | spies[1].devices == {d.code for d in devices}
    for spy, parts in zip(spies, owned, strict=True):
        assert {partition_of(code, 4) for code in spy.devices} <= set(parts)
        # batches are bounded by readings: gathering stops once 100 are held (one message holds < 40)
        assert max(spy.batch_sizes) < 100 + len(devices)
    assert app.sensing.store.count() == sent
