"""From payloads to validated column arrays: parsing, then every check done with numpy on the whole batch.

Payload items (JSON array, NDJSON or MQTT message bodies) come in two shapes:

- one reading: ``{"device": "D1", "quantity": "methane", "value": 12.5, "time": "2026-11-23T10:00:00+08:00"}``
- several quantities at one time: ``{"device": "D1", "time": 1795399200000, "values": {"methane": 12.5, ...}}``

``time`` is ISO 8601 (naive = Chinese local time) or epoch milliseconds; it may be left
out (the time of receipt). A bad item never spoils the batch: each refused reading gets
its item index and a reason, and the valid ones go on.

The common body — an array (or NDJSON) of well-typed one-reading objects — is decoded by
msgspec straight into small typed structs (`decode_columns`), which costs about half of
building a dict per item and makes the columns with four tight comprehensions. Anything
else (a ``values`` item, a wrong type, a missing key) makes the typed decoder refuse the
whole body, and the body then takes the general path (`decode_body` + `flatten`), which
finds the bad items one by one. Both paths give the same `Columns`.

A service first tries its own typed decoder (`KnownCodes`), whose device and quantity fields are
Literals of the codes it knows: msgspec then returns the index's own string objects, and the
device look-up finds them by identity instead of hashing and comparing each new string.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import orjson

from zhizhi.domain.errors import ValidationFailed

LOCAL = ZoneInfo("Asia/Shanghai")
FUTURE_TOLERANCE_MS = 5 * 60_000
MAX_AGE_MS = 7 * 24 * 3600_000

OK = 0
REASONS = ("ok", "malformed", "unknown-device", "unknown-quantity", "quantity-not-measured", "out-of-range",
           "future-time", "too-old", "duplicate", "device-inactive")
MALFORMED, UNKNOWN_DEVICE, UNKNOWN_QUANTITY, NOT_MEASURED, OUT_OF_RANGE, FUTURE, TOO_OLD, DUPLICATE, INACTIVE = \
    range(1, 10)
REASONS_ZH = {"malformed": "格式错误", "unknown-device": "未知设备", "unknown-quantity": "未知监测量",
              "quantity-not-measured": "该设备不测量此量", "out-of-range": "超出物理量程",
              "future-time": "时间在未来", "too-old": "时间过早（超过保留窗口）", "duplicate": "重复读数",
              "device-inactive": "设备已停用"}


def _gunzip(body: bytes, content_encoding: str) -> bytes:
    if content_encoding.lower() == "gzip" or body[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise ValidationFailed(f"gzip 解压失败 / bad gzip body: {exc}") from None
    return body


def _is_ndjson(text: bytes, content_type: str) -> bool:
    return "ndjson" in content_type or "jsonl" in content_type or (text[:1] == b"{" and b"\n" in text)


def decode_body(body: bytes, content_type: str = "", content_encoding: str = "") -> list[Any]:
    """A JSON array, one JSON object, or newline-delimited JSON; gzip by header or by magic bytes."""
    text = _gunzip(body, content_encoding).strip()
    if not text:
        return []
    if _is_ndjson(text, content_type):
        items: list[Any] = []
        for line in text.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                items.append(_Malformed(line[:80].decode("utf-8", "replace")))
        return items
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"JSON 格式错误 / malformed JSON: {exc}") from None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        return data
    raise ValidationFailed("请求体应为 JSON 数组或对象 / body must be a JSON array or object")


@dataclass(frozen=True)
class _Malformed:
    text: str


class _Reading(msgspec.Struct, gc=False):
    """One well-typed reading, as the fast decoder expects it (unknown keys are ignored).

    `gc=False`: a batch makes tens of thousands of these and none can form a cycle, so the
    garbage collector need not track (and walk) them.
    """

    device: str
    quantity: str
    value: float | bool
    time: int | float | str | None = None


class _Typed:
    """The two typed decoders (a JSON array, one object per line) of one reading struct type."""

    def __init__(self, struct: type) -> None:
        self.array = msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]
        self.line = msgspec.json.Decoder(struct)

    def rows(self, text: bytes, content_type: str) -> list[Any]:
        if _is_ndjson(text, content_type):
            return self.line.decode_lines(text)
        if text[:1] == b"[":
            return self.array.decode(text)
        return [self.line.decode(text)]


_PLAIN = _Typed(_Reading)

#: Most device codes compiled into a `KnownCodes` decoder: a million cost about 2 s and 180 MB to compile.
KNOWN_MAX = 1_000_000


def _literal(values: Sequence[str]) -> Any:
    """`Literal[values]` built past typing's cache where the running Python allows: that cache (128 entries)
    would keep every code list ever compiled alive, and for an equal list hand back the Literal of an
    earlier build, whose string objects are no longer the index's keys."""
    uncached = getattr(getattr(Literal, "_getitem", None), "__wrapped__", None)
    if uncached is not None:
        return uncached(Literal, *values)
    return Literal[tuple(values)]  # pragma: no cover - a Python whose typing is built otherwise


class KnownCodes:
    """A typed decoder whose device and quantity fields are Literals of the codes known, built per service.

    Why: a code decoded as a plain str is a new string object, and looking it up in the device index
    hashes it and compares it with the key stored there — a cache miss per reading into a table of
    100,000 or more entries, measured at 250–300 ns a reading with the quantity's look-up, more than
    decoding the reading. Decoded against a Literal, msgspec hands back the very string object that
    the Literal was built from (the index's own key), so the index finds it by identity, its hash cached.

    A body naming a code that was not compiled in (a device registered since, a typo, a number) fails
    this decoder and is decoded again by the plain one: never refused for it, only not faster.
    """

    def __init__(self, devices: Sequence[str], quantities: Sequence[str]) -> None:
        started = time.perf_counter()
        self.size = len(devices)
        struct = msgspec.defstruct("_KnownReading", [
            ("device", _literal(devices)), ("quantity", _literal(quantities)),
            ("value", float | bool), ("time", int | float | str | None, None)], gc=False)
        self.typed = _Typed(struct)
        self.build_seconds = time.perf_counter() - started
        self.built_at = time.monotonic()


def decode_columns(body: bytes, content_type: str = "", content_encoding: str = "", offset: int = 0,
                   known: KnownCodes | None = None) -> tuple[Columns, int]:
    """(columns, number of items) of a request or message body — the fast typed path when the body allows it.

    The typed decoders are tried only when no item can carry ``values`` (the bytes ``"values"``
    do not occur at all), since they would silently ignore that key: first the one of the `known`
    codes, then the plain one; a body that is not JSON, or that neither accepts, goes the general
    way, so an odd body is never worse off than before, only not faster.
    """
    text = _gunzip(body, content_encoding).strip()
    if text and b'"values"' not in text:
        for typed in (known.typed, _PLAIN) if known is not None else (_PLAIN,):
            try:
                rows = typed.rows(text, content_type)
            except msgspec.ValidationError:
                continue  # a code not known, or a value of another type: the next decoder, or the general path
            except msgspec.DecodeError:
                break  # not JSON: the general path reports where
            cols = Columns(np.arange(offset, offset + len(rows), dtype=np.int64), [r.device for r in rows],
                           [r.quantity for r in rows], [r.time for r in rows], [r.value for r in rows], [])
            return cols, len(rows)
    items = decode_body(text, content_type)
    return flatten(items, offset), len(items)


@dataclass
class Columns:
    """A batch flattened to one row per reading; `item` is the index of the payload item it came from."""

    item: np.ndarray
    device: list[Any]
    quantity: list[Any]
    time: list[Any]
    value: list[Any]
    malformed: list[tuple[int, str]] = field(default_factory=list)  # items that are not readings at all

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        """Several messages' columns as one batch (their item indices are already distinct)."""
        if len(parts) == 1:
            return parts[0]
        out = cls(np.concatenate([p.item for p in parts]) if parts else np.empty(0, dtype=np.int64), [], [], [], [])
        for p in parts:
            out.device += p.device
            out.quantity += p.quantity
            out.time += p.time
            out.value += p.value
            out.malformed += p.malformed
        return out


def flatten(items: list[Any], offset: int = 0) -> Columns:
    """Columns from the items: the only per-item Python work on the ingest path.

    The common batch (every item a one-reading object) takes list comprehensions in C speed;
    anything else (a `values` item, a missing key, a non-object) takes the careful loop.
    """
    try:
        dev = [it["device"] for it in items]
        qty = [it["quantity"] for it in items]
        val = [it["value"] for it in items]
        tim = [it.get("time") for it in items]
        if not any("values" in it for it in items):
            return Columns(np.arange(offset, offset + len(items), dtype=np.int64), dev, qty, tim, val, [])
    except (KeyError, TypeError, AttributeError):
        pass
    return _flatten_slow(items, offset)


def _flatten_slow(items: list[Any], offset: int) -> Columns:
    item: list[int] = []
    dev: list[Any] = []
    qty: list[Any] = []
    tim: list[Any] = []
    val: list[Any] = []
    bad: list[tuple[int, str]] = []
    for i, it in enumerate(items, offset):
        if type(it) is not dict:
            bad.append((i, "不是 JSON 对象 / item is not an object"))
            continue
        values = it.get("values")
        if values is None:
            item.append(i)
            dev.append(it.get("device"))
            qty.append(it.get("quantity"))
            tim.append(it.get("time"))
            val.append(it.get("value"))
        elif type(values) is dict and values:
            d, t = it.get("device"), it.get("time")
            for q, x in values.items():
                item.append(i)
                dev.append(d)
                qty.append(q)
                tim.append(t)
                val.append(x)
        else:
            bad.append((i, "values 应为非空对象 / values must be a non-empty object"))
    return Columns(np.asarray(item, dtype=np.int64), dev, qty, tim, val, bad)


def lookup(keys: list[Any], index: dict[str, int]) -> np.ndarray:
    """Codes → dense indices (-1 unknown, -2 not a string)."""
    get = index.get
    try:
        return np.fromiter(map(get, keys, repeat(-1, len(keys))), dtype=np.int64, count=len(keys))
    except TypeError:  # an unhashable code (a list or object)
        return np.fromiter((get(k, -1) if type(k) is str else -2 for k in keys), dtype=np.int64, count=len(keys))


def to_values(raw: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Numbers → float64; booleans count as 1/0 (event quantities); anything else is malformed."""
    try:
        arr = np.array(raw, dtype=np.float64)
        if arr.ndim == 1:
            return arr, ~np.isfinite(arr)
    except (TypeError, ValueError):
        pass
    out = np.empty(len(raw), dtype=np.float64)
    bad = np.zeros(len(raw), dtype=np.bool_)
    for i, x in enumerate(raw):
        if type(x) in (int, float, bool):
            out[i] = float(x)
        else:
            out[i] = np.nan
            bad[i] = True
    return out, bad | ~np.isfinite(out)


def to_times(raw: list[Any], now_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """ISO 8601 or epoch ms → epoch ms (int64); missing = now; unparseable flagged."""
    try:
        arr = np.array(raw, dtype=np.float64)  # all numbers: the fast path
        if arr.ndim == 1 and np.isfinite(arr).all():
            return arr.astype(np.int64), np.zeros(len(raw), dtype=np.bool_)
    except (TypeError, ValueError):
        pass
    parsed: dict[Any, int] = {}
    out = np.empty(len(raw), dtype=np.int64)
    bad = np.zeros(len(raw), dtype=np.bool_)
    for i, x in enumerate(raw):
        if x is None:
            out[i] = now_ms
            continue
        if type(x) in (int, float):
            out[i] = int(x)
            continue
        if type(x) is not str:
            bad[i] = True
            out[i] = 0
            continue
        ms = parsed.get(x)
        if ms is None:
            ms = _parse_iso(x)
            parsed[x] = ms
        if ms < 0:
            bad[i] = True
            out[i] = 0
        else:
            out[i] = ms
    return out, bad


def _parse_iso(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return -1
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=LOCAL)
    return int(dt.timestamp() * 1000)


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def dt_to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)
