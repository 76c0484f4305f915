"""The MQTT consumer: shared subscriptions or owned partitions, bounded batches, acknowledged only after commit.

Topics (see docs/sensing.md):

- ``zhizhi/v1/obs/{scene}/{device}`` — readings of one device; the payload is one reading
  object, an object with ``values``, or an array of them; ``device`` may be left out
  (the topic names it).
- ``zhizhi/v1/batch/{producer}`` — a batch from a gateway: a JSON array or NDJSON of
  readings of many devices (gzip allowed). This is the fast path.
- ``zhizhi/v1/part/{n}`` — the same batch payload, holding only devices of partition
  ``n`` = CRC-32 of the device code mod the number of partitions (`partition_of`).

A consumer either joins a shared-subscription group (``$share/{group}/zhizhi/v1/obs/#`` and
``$share/{group}/zhizhi/v1/batch/#``: the broker hands each message to one member, round-robin)
or owns partitions (plain subscriptions to ``zhizhi/v1/part/{n}`` for its ``n``). Rule state
(previous value, duration runs, hysteresis) lives in the consumer's memory, so exact rules
need every reading of a device to reach the same consumer: that is what partitions give and
round-robin does not. Messages are QoS 1 and acked by hand only after the readings they carry
are committed (or refused with a reason), so a crash makes the broker deliver them again —
not one reading is lost, and the duplicate check keeps them from being stored twice.

Messages are decoded as they arrive (on the network thread, so decoding overlaps with the
worker's database commit) and the worker gathers them into a batch until it holds
`max_readings` readings, `max_messages` messages, or waited `max_wait_s`: the batch — and so
the time from a reading to its alarm — stays bounded however deep the broker's backlog.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from zhizhi.domain.errors import ValidationFailed
from zhizhi.sensing.ingest import Columns, KnownCodes, decode_columns, flatten

if TYPE_CHECKING:
    from zhizhi.sensing.service import SensingService

log = logging.getLogger(__name__)

ROOT = "zhizhi/v1"
OBS_FILTER = f"{ROOT}/obs/#"
BATCH_FILTER = f"{ROOT}/batch/#"
#: Partitions a deployment splits its devices into unless told otherwise (`zhizhi sensing consume --of`).
DEFAULT_PARTITIONS = 16


def device_topic(scene: str, device: str) -> str:
    return f"{ROOT}/obs/{scene}/{device}"


def batch_topic(producer: str) -> str:
    return f"{ROOT}/batch/{producer}"


def partition_of(device: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition of a device: CRC-32 of its code mod `partitions` — stable across processes and
    languages (unlike Python's salted `hash`), so a gateway in any language computes the same one."""
    return zlib.crc32(device.encode("utf-8")) % partitions


def partition_topic(partition: int, root: str = ROOT) -> str:
    return f"{root}/part/{partition}"


def parse_partitions(spec: str, partitions: int = DEFAULT_PARTITIONS) -> list[int]:
    """``"0-3,6"`` → [0, 1, 2, 3, 6]; every number must be below `partitions`."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValidationFailed(f"分区格式错误 / bad partition list {spec!r} (e.g. 0-3,6)") from None
        if not 0 <= a <= b < partitions:
            raise ValidationFailed(f"分区 {part} 超出 0–{partitions - 1} / partition out of range")
        out.update(range(a, b + 1))
    if not out:
        raise ValidationFailed("至少需要一个分区 / no partition given")
    return sorted(out)


def items_from_message(topic: str, payload: bytes) -> list[Any]:
    """The readings a message carries; the device named by a device topic fills in a missing `device`."""
    from zhizhi.sensing.ingest import decode_body

    items = decode_body(payload)
    parts = topic.split("/")
    if len(parts) == 5 and parts[2] == "obs":
        device = parts[4]
        for it in items:
            if isinstance(it, dict) and "device" not in it:
                it["device"] = device
    return items


def columns_from_message(topic: str, payload: bytes, offset: int = 0, known: KnownCodes | None = None
                         ) -> tuple[Columns, int]:
    """(columns, items) of one message: batch and partition payloads take the typed fast path (`known`: the
    service's decoder of the codes it knows, see `SensingService.known_codes`)."""
    if topic.split("/")[2:3] == ["obs"]:
        items = items_from_message(topic, payload)
        return flatten(items, offset), len(items)
    return decode_columns(payload, offset=offset, known=known)


@dataclass
class _Decoded:
    """A message with what it carries, decoded on arrival (`cols` None: not readable, refused)."""

    msg: mqtt.MQTTMessage
    cols: Columns | None
    items: int


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
    """Subscribes, decodes messages as they arrive, gathers them into bounded batches, ingests, then acks.

    `partitions`: own these partition topics (``zhizhi/v1/part/{n}``) instead of joining the shared
    group — every reading of a device then reaches this consumer and no other, so its rule state is
    whole. Each partition must be owned by exactly one running consumer.
    """

    def __init__(self, service: SensingService, host: str = "127.0.0.1", port: int = 1883, group: str = "zhizhi",
                 client_id: str | None = None, max_messages: int = 200, max_wait_s: float = 0.05,
                 max_readings: int = 50_000, partitions: list[int] | None = None, root: str = ROOT) -> None:
        self.service = service
        self.host, self.port, self.group = host, port, group
        self.max_messages, self.max_wait_s, self.max_readings = max_messages, max_wait_s, max_readings
        self.partitions = partitions
        self.root = root  # the topic namespace (another root keeps a second deployment or a test apart)
        self.inbox: queue.Queue[_Decoded] = queue.Queue()
        self.stats = ConsumerStats()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._offset = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"zhizhi-consumer-{uuid.uuid4().hex[:8]}",
                                  clean_session=True, manual_ack=True)
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.ready.set()

    def topics(self) -> list[str]:
        if self.partitions is not None:
            return [partition_topic(p, self.root) for p in self.partitions]
        return [f"$share/{self.group}/{self.root}/obs/#", f"$share/{self.group}/{self.root}/batch/#"]

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT connect failed: %s", reason)
            return
        client.subscribe([(t, 1) for t in self.topics()])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """Decode on arrival (the network thread), so decoding overlaps with the worker's commit."""
        try:
            cols, n = columns_from_message(msg.topic, msg.payload, self._offset, self.service.known_codes())
            self._offset += n
        except (ValidationFailed, UnicodeDecodeError, ValueError) as exc:
            log.warning("refused MQTT message on %s: %s", msg.topic, exc)
            cols, n = None, 0
        except Exception:  # never let one message stop the network thread: count it as unreadable
            log.exception("could not decode MQTT message on %s", msg.topic)
            cols, n = None, 0
        self.inbox.put(_Decoded(msg, cols, n))

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
            readings = first.items
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_messages and readings < self.max_readings:
                left = deadline - time.monotonic()
                try:
                    nxt = self.inbox.get(timeout=left) if left > 0 else self.inbox.get_nowait()
                except queue.Empty:
                    break
                batch.append(nxt)
                readings += nxt.items
            self._process(batch)

    def _process(self, batch: list[_Decoded]) -> None:
        parts: list[Columns] = []
        items = 0
        for d in batch:
            self.stats.messages += 1
            if d.cols is None:
                self.stats.bad_messages += 1
            else:
                parts.append(d.cols)
                items += d.items
        try:
            report = self.service.ingest_columns(Columns.concat(parts), items) if parts else None
        except Exception:
            # Nothing was acknowledged: the broker redelivers these messages after a reconnect.
            log.exception("ingest of %d readings failed; not acknowledged", items)
            self.client.reconnect()
            return
        self.stats.batches += 1
        self.stats.readings += items
        if report is not None:
            self.stats.accepted += report.accepted
            self.stats.refused += report.refused
            self.stats.reasons.update(report.reasons)
        for d in batch:
            if d.msg.qos > 0:
                self.client.ack(d.msg.mid, d.msg.qos)
