"""The MQTT consumer: shared subscriptions, batches of messages, acknowledged only after commit.

Topics (see docs/sensing.md):

- ``zhizhi/v1/obs/{scene}/{device}`` — readings of one device; the payload is one reading
  object, an object with ``values``, or an array of them; ``device`` may be left out
  (the topic names it).
- ``zhizhi/v1/batch/{producer}`` — a batch from a gateway: a JSON array or NDJSON of
  readings of many devices (gzip allowed). This is the fast path.

Every consumer subscribes to ``$share/{group}/zhizhi/v1/obs/#`` and
``$share/{group}/zhizhi/v1/batch/#``; the broker hands each message to one member of
the group, so several consumer processes split the load. Messages are QoS 1 and acked
by hand only after the readings they carry are committed (or refused with a reason),
so a crash makes the broker deliver them again — not one reading is lost, and the
duplicate check keeps them from being stored twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from zhizhi.domain.errors import ValidationFailed
from zhizhi.sensing.ingest import decode_body

if TYPE_CHECKING:
    from zhizhi.sensing.service import SensingService

log = logging.getLogger(__name__)

ROOT = "zhizhi/v1"
OBS_FILTER = f"{ROOT}/obs/#"
BATCH_FILTER = f"{ROOT}/batch/#"


def device_topic(scene: str, device: str) -> str:
    return f"{ROOT}/obs/{scene}/{device}"


def batch_topic(producer: str) -> str:
    return f"{ROOT}/batch/{producer}"


def items_from_message(topic: str, payload: bytes) -> list[Any]:
    """The readings a message carries; the device named by a device topic fills in a missing `device`."""
    items = decode_body(payload)
    parts = topic.split("/")
    if len(parts) == 5 and parts[2] == "obs":
        device = parts[4]
        for it in items:
            if isinstance(it, dict) and "device" not in it:
                it["device"] = device
    return items


@dataclass
class ConsumerStats:
    messages: int = 0
    bad_messages: int = 0
    readings: int = 0
    accepted: int = 0
    refused: int = 0
    batches: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class Consumer:
    """Subscribes, gathers messages into batches, ingests, then acks."""

    def __init__(self, service: SensingService, host: str = "127.0.0.1", port: int = 1883, group: str = "zhizhi",
                 client_id: str | None = None, max_messages: int = 200, max_wait_s: float = 0.05) -> None:
        self.service = service
        self.host, self.port, self.group = host, port, group
        self.max_messages, self.max_wait_s = max_messages, max_wait_s
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.stats = ConsumerStats()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"zhizhi-consumer-{uuid.uuid4().hex[:8]}",
                                  clean_session=True, manual_ack=True)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.inbox.put(msg)
        self.client.on_subscribe = lambda *_a: self.ready.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect failed: %s", reason)
            return
        client.subscribe([(f"$share/{self.group}/{OBS_FILTER}", 1), (f"$share/{self.group}/{BATCH_FILTER}", 1)])

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._worker = threading.Thread(target=self._work, name="zhizhi-mqtt-ingest", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stop.set()
        self._worker.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def run_forever(self) -> None:
        self.start()
        try:
            while not self._stop.is_set():
                time.sleep(0.5)
        finally:
            self.stop()

    def _work(self) -> None:
        while not self._stop.is_set() or not self.inbox.empty():
            try:
                first = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_messages:
                left = deadline - time.monotonic()
                try:
                    batch.append(self.inbox.get(timeout=max(left, 0)) if left > 0 else self.inbox.get_nowait())
                except queue.Empty:
                    break
            self._process(batch)

    def _process(self, batch: list[mqtt.MQTTMessage]) -> None:
        items: list[Any] = []
        for msg in batch:
            self.stats.messages += 1
            try:
                items.extend(items_from_message(msg.topic, msg.payload))
            except (ValidationFailed, UnicodeDecodeError, ValueError) as exc:
                self.stats.bad_messages += 1
                log.warning("refused MQTT message on %s: %s", msg.topic, exc)
        try:
            report = self.service.ingest(items)
        except Exception:
            # Nothing was acknowledged: the broker redelivers these messages after a reconnect.
            log.exception("ingest of %d readings failed; not acknowledged", len(items))
            self.client.reconnect()
            return
        self.stats.batches += 1
        self.stats.readings += len(items)
        self.stats.accepted += report.accepted
        self.stats.refused += report.refused
        self.stats.reasons.update(report.reasons)
        for msg in batch:
            if msg.qos > 0:
                self.client.ack(msg.mid, msg.qos)
