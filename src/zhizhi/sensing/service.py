"""The sensing service: device registry, the batch ingest pipeline, alarms, and alarm → case.

Ingest of one batch: flatten → look codes up → validate with numpy → store durably
in one transaction → evaluate every rule on the batch → persist alarm changes →
announce them on the bus, where the scene policy turns raised alarms into cases
(through the same `ReportCases` as every other source, idempotent by alarm id).
Readings are acknowledged only after their commit.

One service per process owns its in-memory state (the latest values and rule state);
several processes split the devices between them (by MQTT shared subscription or by
device hash), each evaluating rules for the devices it receives.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import insert, select, update

from zhizhi.adapters.observations_store import COMPACT_AT, ObservationStore
from zhizhi.adapters.orm_sensing import AlarmRow, AlarmStepRow, DatastreamRow, DeviceLocationRow, DeviceRow
from zhizhi.domain.alarms import Alarm, AlarmCleared, AlarmRaised, AlarmState, AlarmStep, Severity
from zhizhi.domain.devices import Device, DeviceStatus, validate_device
from zhizhi.domain.errors import DomainError, NotFound, ValidationFailed
from zhizhi.sensing import ingest as ing
from zhizhi.sensing.catalogue import SensingCatalogue
from zhizhi.sensing.engine import RuleEngine, Transitions

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from zhizhi.service.bus import MessageBus
    from zhizhi.service.handlers import Context

log = logging.getLogger(__name__)
#: Stream groups whose small blocks one tick merges at most (`ObservationStore.merge_small`): once merging
#: keeps up, a group's small blocks hold a few thousand readings, so a tick stays short; the rest wait.
MERGE_GROUPS_PER_TICK = 64
#: Devices registered in one call that rebuild the typed decoder of known codes at once (`known_codes`).
KNOWN_REBUILD_BATCH = 1000


@dataclass
class IngestReport:
    """What happened to a batch: accepted readings are stored; each refused one has a reason."""

    received: int = 0
    accepted: int = 0
    refused: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    alarms_raised: list[int] = field(default_factory=list)
    alarms_cleared: list[int] = field(default_factory=list)

    def as_dict(self, max_errors: int = 1000) -> dict[str, Any]:
        return {"received": self.received, "accepted": self.accepted, "refused": self.refused,
                "reasons": dict(self.reasons), "errors": self.errors[:max_errors],
                "errors_truncated": len(self.errors) > max_errors,
                "alarms_raised": self.alarms_raised, "alarms_cleared": self.alarms_cleared}


@dataclass(frozen=True)
class Timing:
    alarm_id: int
    reading_ms: int
    alarm_ms: int
    case_ms: int | None = None


class SensingService:
    def __init__(self, engine: Engine, sessions: sessionmaker[Session], catalogue: SensingCatalogue,
                 ctx: Context, bus: MessageBus | None = None, retention_days: int = 90) -> None:
        self.db = engine
        self.sessions = sessions
        self.catalogue = catalogue
        self.ctx = ctx
        self.bus = bus
        self.retention_days = retention_days
        self.store = ObservationStore(engine)
        self._compactor: threading.Thread | None = None
        self.lock = threading.RLock()
        self.timings: deque[Timing] = deque(maxlen=100_000)
        #: alarms raised and not yet turned into a case, for the reading → case latency (bounded)
        self._awaiting_case: dict[int, Timing] = {}
        self._reset()
        self.load()

    # ------------------------------------------------------------------ registry
    def _reset(self) -> None:
        self.engine = RuleEngine(self.catalogue)
        self.qindex = self.engine.qindex
        self.types = list(self.catalogue.device_types)
        nq = len(self.engine.quantities)
        self.measured = np.zeros((len(self.types), nq), dtype=np.bool_)
        for ti, t in enumerate(self.catalogue.device_types.values()):
            for q in t.quantities:
                self.measured[ti, self.qindex[q]] = True
        self.qmin = np.array([q.min for q in self.catalogue.quantities.values()])
        self.qmax = np.array([q.max for q in self.catalogue.quantities.values()])
        self.index: dict[str, int] = {}
        self.devices: list[Device] = []
        self.type_idx = np.zeros(0, dtype=np.int64)
        self.usable = np.zeros(0, dtype=np.bool_)
        self.ds = np.full((0, nq), -1, dtype=np.int64)
        self.active: dict[tuple[int, int], Alarm] = {}
        self.by_id: dict[int, Alarm] = {}
        self._flushed_seen = np.zeros(0, dtype=np.int64)
        self._loaded_at = 0.0
        self._known: ing.KnownCodes | None = None

    def load(self) -> None:
        """Devices, datastreams and active alarms from the database into memory."""
        with self.lock:
            self._reset()
            with self.sessions() as s:
                rows = s.scalars(select(DeviceRow).order_by(DeviceRow.id)).all()
                streams = s.execute(select(DatastreamRow.id, DatastreamRow.device_id, DatastreamRow.quantity)).all()
                alarms = s.scalars(select(AlarmRow).where(AlarmRow.state != AlarmState.CLEARED.value)).all()
            self._append([_device_from_row(r) for r in rows])
            by_id = {d.id: i for i, d in enumerate(self.devices)}
            for sid, dev_id, q in streams:
                if dev_id in by_id and q in self.qindex:
                    self.ds[by_id[dev_id], self.qindex[q]] = sid
            for a in alarms:
                alarm = _alarm_from_row(a)
                di = by_id.get(a.device_id)
                ri = self.engine.rindex.get(a.rule_code)
                if di is None or ri is None:
                    continue
                self.active[(di, ri)] = alarm
                self.by_id[a.id] = alarm
                self.engine.active[ri, di] = True
            self._loaded_at = time.monotonic()
            self.known_codes(rebuild=True)

    def _append(self, devices: list[Device]) -> None:
        n0 = len(self.devices)
        nq = len(self.engine.quantities)
        tix = {t: i for i, t in enumerate(self.types)}
        self.devices.extend(devices)
        self.type_idx = np.concatenate([self.type_idx, np.array([tix[d.type] for d in devices], dtype=np.int64)])
        self.usable = np.concatenate([self.usable, np.array([d.status is DeviceStatus.ACTIVE for d in devices],
                                                            dtype=np.bool_)])
        self.ds = np.concatenate([self.ds, np.full((len(devices), nq), -1, dtype=np.int64)])
        self._flushed_seen = np.concatenate([self._flushed_seen, np.zeros(len(devices), dtype=np.int64)])
        for i, d in enumerate(devices, n0):
            self.index[d.code] = i
            seen = d.last_seen or d.registered_at
            self.engine.add_device(d.type, d.scene, d.rule_overrides, ing.dt_to_ms(seen) if seen else 0)

    def register(self, devices: Iterable[Device],
                 admit: Callable[[list[Device]], list[DomainError | None]] | None = None,
                 ) -> list[Device | DomainError]:
        """Validate, locate in the place hierarchy, store with one datastream per quantity.

        `admit`, given the located devices, answers None for each one the caller may register or the reason
        it may not (a scoped caller's check, which needs the place the device was located in)."""
        now = self.ctx.clock.now()
        out: list[Device | DomainError] = []
        fresh: list[Device] = []
        devices = list(devices)
        grids, districts = self._locate_many(devices)
        seen: set[str] = set()
        for d, grid, district in zip(devices, grids, districts, strict=True):
            try:
                validate_device(d, self.catalogue.device_types, self.catalogue.scenes)
                if d.code in self.index or d.code in seen:
                    raise ValidationFailed(f"设备 {d.code} 已存在 / device already registered", field="code")
                if grid is None:  # the one-point locator gives the reason (outside the city: nearest district)
                    loc = self.ctx.gazetteer.locate_point(d.lon, d.lat)
                    grid, district = loc.grid or loc.finest, loc.district
                d.place_code = grid
                d.district_code = district
                d.registered_at = d.registered_at or now
                seen.add(d.code)
                fresh.append(d)
                out.append(d)
            except DomainError as exc:
                out.append(exc)
        if admit is not None and fresh:
            refused = {id(d): why for d, why in zip(fresh, admit(fresh), strict=True) if why is not None}
            out = [refused.get(id(r), r) if isinstance(r, Device) else r for r in out]
            fresh = [d for d in fresh if id(d) not in refused]
        if not fresh:
            return out
        with self.lock, self.sessions() as s:
            # Bulk INSERT … RETURNING (batched by SQLAlchemy on both backends): 100,000 devices in seconds.
            ids = s.execute(insert(DeviceRow).returning(DeviceRow.id, sort_by_parameter_order=True), [
                {"code": d.code, "name": d.name or d.code, "type": d.type, "model": d.model, "scene": d.scene,
                 "place_code": d.place_code, "district_code": d.district_code, "lon": d.lon, "lat": d.lat,
                 "department_code": d.department_code, "status": d.status.value, "last_seen": None,
                 "registered_at": d.registered_at, "rule_overrides": d.rule_overrides, "properties": {}}
                for d in fresh]).scalars().all()
            streams = []
            for d, dev_id in zip(fresh, ids, strict=True):
                d.id = int(dev_id)
                for q in self.catalogue.device_types[d.type].quantities:
                    quantity = self.catalogue.quantities[q]
                    streams.append({"device_id": d.id, "quantity": q, "name": f"{d.code}/{q}",
                                    "description": quantity.name_zh, "unit": quantity.unit, "properties": {}})
            sids = s.execute(insert(DatastreamRow).returning(DatastreamRow.id, sort_by_parameter_order=True),
                             streams).scalars().all()
            # Its registration is a device's first position (SensorThings: its first HistoricalLocation).
            s.execute(insert(DeviceLocationRow), [
                {"device_id": d.id, "time": d.registered_at, "lon": d.lon, "lat": d.lat, "place_code": d.place_code,
                 "name": "", "description": ""} for d in fresh])
            ds_ids = [(st["device_id"], st["quantity"], int(sid)) for st, sid in zip(streams, sids, strict=True)]
            s.commit()
            n0 = len(self.devices)
            self._append(fresh)
            pos = {d.id: i for i, d in enumerate(self.devices[n0:], n0)}
            for dev_id, q, sid in ds_ids:
                self.ds[pos[dev_id], self.qindex[q]] = sid
            if len(fresh) >= KNOWN_REBUILD_BATCH:  # an import: compiling the codes costs ~1 % of registering them
                self.known_codes(rebuild=True)
        return out

    def known_codes(self, rebuild: bool = False) -> ing.KnownCodes | None:
        """The typed decoder of the device codes known (`ing.KnownCodes`), rebuilt when devices were added.

        Compiling it costs about 3 µs a device (0.3 s for 100,000), so after devices are added one at a
        time it is rebuilt at most once per `20 ×` its own build time (and not sooner than 5 s): until then
        readings of the new devices take the plain decoder, correct and a little slower. `rebuild` builds
        it now (the registry's load, an import)."""
        known = self._known
        n = len(self.devices)
        if known is not None and known.size == n:
            return known
        if n == 0 or n > ing.KNOWN_MAX:
            self._known = None
            return None
        if not rebuild and known is not None and \
                time.monotonic() - known.built_at < max(5.0, 20 * known.build_seconds):
            return known
        with self.lock:  # the index must not grow while its keys are listed
            self._known = ing.KnownCodes(list(self.index), list(self.qindex))
        return self._known

    def _locate_many(self, devices: list[Device]) -> tuple[list[str | None], list[str | None]]:
        """All devices located with one vectorised look-up where the gazetteer offers it."""
        many = getattr(self.ctx.gazetteer, "locate_many", None)
        if many is None or not devices:
            return [None] * len(devices), [None] * len(devices)
        ok = [(-180 <= d.lon <= 180 and -90 <= d.lat <= 90) for d in devices]
        res = many(np.array([d.lon if k else 0.0 for d, k in zip(devices, ok, strict=True)]),
                   np.array([d.lat if k else 0.0 for d, k in zip(devices, ok, strict=True)]))
        grids = [g if k else None for g, k in zip(res.codes("grid").tolist(), ok, strict=True)]
        return grids, [x if g else None for x, g in zip(res.codes("district").tolist(), grids, strict=True)]

    def import_csv(self, path: Path) -> tuple[int, list[tuple[int, str]]]:
        """code,type,scene,lon,lat[,model,name,department_code,status] — returns (registered, [(row, error)])."""
        devices: list[Device] = []
        rownums: list[int] = []
        errors: list[tuple[int, str]] = []
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for n, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    devices.append(Device(code=(row.get("code") or "").strip(), type=(row.get("type") or "").strip(),
                                          scene=(row.get("scene") or "").strip(), lon=float(row["lon"]),
                                          lat=float(row["lat"]), model=row.get("model") or "",
                                          name=row.get("name") or "",
                                          department_code=row.get("department_code") or None,
                                          status=DeviceStatus(row.get("status") or "active")))
                    rownums.append(n)
                except (KeyError, ValueError, TypeError) as exc:
                    errors.append((n, f"格式错误 / malformed row: {exc}"))
        results = self.register(devices)
        for n, r in zip(rownums, results, strict=True):
            if isinstance(r, DomainError):
                errors.append((n, r.message))
        return sum(1 for r in results if isinstance(r, Device)), sorted(errors)

    def device(self, code: str) -> Device:
        i = self.index.get(code)
        if i is None:
            raise NotFound(f"设备 {code} 不存在 / device not found")
        d = self.devices[i]
        seen = int(self.engine.last_seen[i])
        if seen and (d.last_seen is None or ing.dt_to_ms(d.last_seen) < seen):
            d.last_seen = ing.ms_to_dt(seen)
        return d

    def latest(self, code: str) -> dict[str, dict[str, Any]]:
        i = self.index.get(code)
        if i is None:
            raise NotFound(f"设备 {code} 不存在 / device not found")
        out = {}
        for q, qi in self.qindex.items():
            t = int(self.engine.latest_t[i, qi])
            if t:
                out[q] = {"value": float(self.engine.latest_v[i, qi]), "time": ing.ms_to_dt(t).isoformat()}
        return out

    def update_device(self, code: str, *, status: str | None = None, rule_overrides: dict[str, Any] | None = None,
                      department_code: str | None = None, name: str | None = None, model: str | None = None) -> Device:
        with self.lock:
            d = self.device(code)
            i = self.index[code]
            values: dict[str, Any] = {}
            if status is not None:
                d.status = DeviceStatus(status)
                self.usable[i] = d.status is DeviceStatus.ACTIVE
                values["status"] = d.status.value
            if rule_overrides is not None:
                unknown = [k for k in rule_overrides if k not in self.engine.rindex]
                if unknown:
                    raise ValidationFailed(f"未知规则 {unknown} / unknown rules in overrides")
                d.rule_overrides = rule_overrides
                self.engine.configure(i, d.type, d.scene, rule_overrides)
                values["rule_overrides"] = rule_overrides
            for key, val in (("department_code", department_code), ("name", name), ("model", model)):
                if val is not None:
                    setattr(d, key, val)
                    values[key] = val
            if values:
                with self.sessions() as s:
                    s.execute(update(DeviceRow).where(DeviceRow.id == d.id).values(**values))
                    s.commit()
            return d

    def move_device(self, code: str, lon: float, lat: float,
                    admit: Callable[[list[Device]], list[DomainError | None]] | None = None, *,
                    link: int | None = None, keep_id: bool = False, name: str = "", description: str = "",
                    ) -> tuple[Device, int]:
        """A device taken to a new position (a camera remounted): located again, so its grid and the scope that
        sees it follow the move, and the move recorded in its location history in the same transaction.
        `admit` is a scoped caller's check of the new position, as at registration.

        The new position is a new history row, unless `link` names a Location that no device holds yet (it
        becomes the device's, from now) or `keep_id` asks that the device's current row keep its id and take
        the new position (a client that edits the Thing's Location in place), the former position then going to
        a new row with its old time. Returns the device and the id of its now current location row."""
        from dataclasses import replace

        with self.lock:
            d = self.device(code)
            moved = replace(d, lon=float(lon), lat=float(lat))
            validate_device(moved, self.catalogue.device_types, self.catalogue.scenes)
            grid, district = self._locate_one(moved)
            moved.place_code, moved.district_code = grid, district
            why = admit([moved])[0] if admit is not None else None
            if why is not None:
                raise why
            now = self.ctx.clock.now()
            with self.sessions() as s:
                s.execute(update(DeviceRow).where(DeviceRow.id == d.id).values(
                    lon=moved.lon, lat=moved.lat, place_code=grid, district_code=district))
                here = {"time": now, "lon": moved.lon, "lat": moved.lat, "place_code": grid}
                if link is not None:
                    row = s.get(DeviceLocationRow, link, with_for_update=True)
                    if row is None or row.device_id is not None:
                        raise ValidationFailed(f"位置 {link} 已属于其他设备 / Location {link} is held already")
                    row.device_id, row.time, row.place_code = d.id, now, grid
                    row.lon, row.lat = moved.lon, moved.lat
                    current = row
                elif keep_id and (current := self._current_row(s, d.id or 0)) is not None:
                    s.add(DeviceLocationRow(device_id=d.id, time=current.time, lon=current.lon, lat=current.lat,
                                            place_code=current.place_code, name=current.name,
                                            description=current.description))
                    for k, v in here.items():
                        setattr(current, k, v)
                    current.name, current.description = name or current.name, description or current.description
                else:
                    current = DeviceLocationRow(device_id=d.id, name=name, description=description, **here)
                    s.add(current)
                s.flush()
                current_id = int(current.id)
                s.commit()
            d.lon, d.lat, d.place_code, d.district_code = moved.lon, moved.lat, grid, district
            return d, current_id

    def _locate_one(self, d: Device) -> tuple[str | None, str | None]:
        (grid,), (district,) = self._locate_many([d])
        if grid is None:
            loc = self.ctx.gazetteer.locate_point(d.lon, d.lat)
            grid, district = loc.grid or loc.finest, loc.district
        return grid, district

    @staticmethod
    def _current_row(s: Session, device_id: int) -> DeviceLocationRow | None:
        return s.scalars(select(DeviceLocationRow).where(DeviceLocationRow.device_id == device_id)
                         .order_by(DeviceLocationRow.time.desc(), DeviceLocationRow.id.desc()).limit(1)).first()

    def location_history(self, device_id: int) -> list[DeviceLocationRow]:
        """Every position a device has held, newest first."""
        with self.sessions() as s:
            return list(s.scalars(select(DeviceLocationRow).where(DeviceLocationRow.device_id == device_id)
                                  .order_by(DeviceLocationRow.time.desc(), DeviceLocationRow.id.desc())))

    def _admitted_grid(self, lon: float, lat: float,
                       admit: Callable[[str | None], DomainError | None] | None) -> str | None:
        """The grid of a standalone Location's position, checked against the range and the caller's scope."""
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValidationFailed("经纬度超出范围 / longitude or latitude out of range", field="lon")
        grid, _ = self._locate_one(Device(code="", type="", scene="", lon=float(lon), lat=float(lat)))
        why = admit(grid) if admit is not None else None
        if why is not None:
            raise why
        return grid

    def create_location(self, lon: float, lat: float, name: str = "", description: str = "",
                        admit: Callable[[str | None], DomainError | None] | None = None) -> DeviceLocationRow:
        """A Location on its own (SensorThings POST Locations): a position no device holds yet; linking it to a
        Thing later moves that device there. Located in the place hierarchy like a device."""
        grid = self._admitted_grid(lon, lat, admit)
        with self.sessions() as s:
            row = DeviceLocationRow(device_id=None, time=self.ctx.clock.now(), lon=float(lon), lat=float(lat),
                                    place_code=grid, name=name, description=description)
            s.add(row)
            s.commit()
            return row

    def update_location(self, location_id: int, *, lon: float | None = None, lat: float | None = None,
                        name: str | None = None, description: str | None = None,
                        admit: Callable[[str | None], DomainError | None] | None = None) -> DeviceLocationRow:
        """Change a Location no device holds (a device's Locations change only by moving the device)."""
        with self.sessions() as s:
            row = s.get(DeviceLocationRow, location_id, with_for_update=True)
            if row is None:
                raise NotFound(f"位置 {location_id} 不存在 / Location not found")
            if row.device_id is not None:
                raise ValidationFailed("设备的位置只能通过移动设备改变 / a device's Location changes by moving it")
            if lon is not None and lat is not None:
                grid = self._admitted_grid(lon, lat, admit)
                row.lon, row.lat, row.place_code = float(lon), float(lat), grid
            if name is not None:
                row.name = name
            if description is not None:
                row.description = description
            s.commit()
            return row

    def delete_location(self, location_id: int) -> None:
        """Delete a Location no device holds (a device's positions are its history and stay)."""
        with self.sessions() as s:
            row = s.get(DeviceLocationRow, location_id, with_for_update=True)
            if row is None:
                raise NotFound(f"位置 {location_id} 不存在 / Location not found")
            if row.device_id is not None:
                raise ValidationFailed("设备的位置是其历史，不能删除 / a device's Locations are its history and "
                                       "are not deleted")
            s.delete(row)
            s.commit()

    # ------------------------------------------------------------------ one stored reading
    def _stream_position(self, sid: int) -> tuple[int, int]:
        hit = np.argwhere(self.ds == int(sid))
        if not hit.size:
            raise NotFound(f"Datastream {sid} 不存在 / not found")
        return int(hit[0][0]), int(hit[0][1])

    def update_observation(self, sid: int, t: int, value: float) -> None:
        """Correct the result of one stored reading. The in-memory latest value follows when it is the latest;
        rules are not evaluated again (an alarm already raised or cleared stays as it is)."""
        with self.lock:
            di, qi = self._stream_position(sid)
            v = float(value)
            if not (v == v and self.qmin[qi] <= v <= self.qmax[qi]):
                raise ValidationFailed(f"读数超出物理量程 / result out of range [{self.qmin[qi]:g}, "
                                       f"{self.qmax[qi]:g}]", reason="out-of-range")
            if not self.store.update_result(int(sid), int(t), v):
                raise NotFound(f"Observation {sid}-{t} 不存在 / not found")
            if int(self.engine.latest_t[di, qi]) == int(t):
                self.engine.latest_v[di, qi] = v

    def delete_observation(self, sid: int, t: int) -> None:
        """Delete one stored reading. When it was the latest, the latest value held becomes the one before."""
        with self.lock:
            di, qi = self._stream_position(sid)
            if not self.store.delete_one(int(sid), int(t)):
                raise NotFound(f"Observation {sid}-{t} 不存在 / not found")
            if int(self.engine.latest_t[di, qi]) == int(t):
                before = self.store.series(int(sid), limit=1)
                self.engine.latest_t[di, qi] = before[0][0] if before else 0
                self.engine.latest_v[di, qi] = before[0][1] if before else np.nan

    def delete_device(self, code: str) -> None:
        """Devices are retired (status inactive), never forgotten: their alarms and readings stay."""
        self.update_device(code, status=DeviceStatus.INACTIVE.value)

    # ------------------------------------------------------------------ ingest
    def ingest_body(self, body: bytes, content_type: str = "", content_encoding: str = "",
                    now: datetime | None = None, admit: Callable[[], np.ndarray] | None = None) -> IngestReport:
        """A request or message body through the typed fast decoder when it allows (see `ing.decode_columns`)."""
        cols, received = ing.decode_columns(body, content_type, content_encoding, known=self.known_codes())
        return self.ingest_columns(cols, received, now=now, admit=admit)

    def ingest(self, items: list[Any], now: datetime | None = None, offset: int = 0,
               admit: Callable[[], np.ndarray] | None = None) -> IngestReport:
        """Validate, store, evaluate; per-item reasons for what is refused."""
        return self.ingest_columns(ing.flatten(items, offset), len(items), now=now, admit=admit)

    def ingest_columns(self, cols: ing.Columns, received: int, now: datetime | None = None,
                       admit: Callable[[], np.ndarray] | None = None) -> IngestReport:
        """The batch pipeline on columns: validate with numpy, store sorted, evaluate the rules, raise alarms.

        Valid readings are sorted once by (datastream, time): duplicates inside the batch become
        neighbours (one comparison finds them all), and the store then writes its (datastream,
        time) B-tree in key order, page after page, instead of jumping across it per reading.

        `admit` (a scoped caller's): called under the lock once new devices are loaded, it answers for each
        device index whether the caller may post for it; readings of the others are refused as unknown
        devices, the same answer as for a device that does not exist.
        """
        now = now or self.ctx.clock.now()
        now_ms = ing.dt_to_ms(now)
        report = IngestReport(received=received)
        for i, why in cols.malformed:
            report.errors.append({"index": i, "reason": "malformed", "detail": why})
            report.reasons["malformed"] += 1
        n = len(cols.device)
        if n == 0:
            report.refused = len(cols.malformed)
            return report
        with self.lock:
            dev = ing.lookup(cols.device, self.index)
            if (dev == -1).any() and time.monotonic() - self._loaded_at > 5:
                self._refresh_new_devices()  # another process may have registered them
                dev = ing.lookup(cols.device, self.index)
            q = ing.lookup(cols.quantity, self.qindex)
            v, bad_v = ing.to_values(cols.value)
            t, bad_t = ing.to_times(cols.time, now_ms)
            reason = self._reasons(dev, q, v, t, bad_v | bad_t, now_ms, admit() if admit is not None else None)
            idx = np.flatnonzero(reason == 0)
            if idx.size:
                di, qi, ti = dev[idx], q[idx], t[idx]
                ds = self.ds[di, qi]
                key = (ds << 30) | (ti - int(ti.min()))  # the span is < 2^30 ms: too-old readings are refused
                order = np.argsort(key, kind="stable")  # stable: of equal readings the first one sent is kept
                idx, di, qi, ti, ds, key = idx[order], di[order], qi[order], ti[order], ds[order], key[order]
                dup = np.zeros(idx.size, dtype=np.bool_)
                dup[1:] = key[1:] == key[:-1]
                # Already stored? Asked of the database only for readings not newer than the latest value
                # held for their datastream, so the common, in-order stream never pays for it.
                older = ~dup & (ti <= self.engine.latest_t[di, qi])
                if older.any():
                    oi = np.flatnonzero(older)
                    dup[oi[self.store.existing(ds[oi], ti[oi])]] = True
                reason[idx[dup]] = ing.DUPLICATE
                fresh = ~dup
                keep, ds, ti = idx[fresh], ds[fresh], ti[fresh]
            else:
                keep, ds, ti = idx, idx, idx
            vk = v[keep]
            # Store first: a reading is acknowledged only once it is committed.
            self.store.insert(ds, ti, vk)
            report.accepted = int(keep.size)
            # Late readings (older than the latest value already held) are stored but do not move the
            # rules: an old high value must not raise an alarm that is no longer true.
            dk, qk = dev[keep], q[keep]
            live = ti >= self.engine.latest_t[dk, qk]
            if not live.all():
                dk, qk, ti, vk = dk[live], qk[live], ti[live], vk[live]
            transitions = self.engine.evaluate(dk, qk, ti, vk)
            events = self._apply(transitions, now)
        bad = np.flatnonzero(reason)
        report.refused = int(bad.size) + len(cols.malformed)
        if bad.size:
            for code, cnt in zip(*np.unique(reason[bad], return_counts=True), strict=True):
                report.reasons[ing.REASONS[int(code)]] += int(cnt)
            for j in bad[:2000].tolist():
                why = ing.REASONS[int(reason[j])]
                report.errors.append({"index": int(cols.item[j]), "quantity": _str(cols.quantity[j]),
                                      "device": _str(cols.device[j]), "reason": why,
                                      "detail": ing.REASONS_ZH.get(why, why)})
        report.errors.sort(key=lambda e: e["index"])
        report.alarms_raised = [e.alarm_id for e in events if isinstance(e, AlarmRaised)]
        report.alarms_cleared = [e.alarm_id for e in events if isinstance(e, AlarmCleared)]
        self._publish(events)
        if self.store.pending >= COMPACT_AT:
            self.compact_soon()
        return report

    def compact(self) -> int:
        """Compact the whole observation log now (after a background compaction, if one runs): the
        periodic job, a clean shutdown, and a benchmark that counts the index's cost do this."""
        if self._compactor is not None:
            self._compactor.join()
        return self.store.compact()

    def compact_soon(self) -> None:
        """Compact the observation log in a background thread: the batch that crossed the threshold is
        acknowledged already and must not wait for it (a compaction already running is not doubled)."""
        if self._compactor is None or not self._compactor.is_alive():
            self._compactor = threading.Thread(target=self.store.compact, name="zhizhi-compact", daemon=True)
            self._compactor.start()

    def _reasons(self, dev: np.ndarray, q: np.ndarray, v: np.ndarray, t: np.ndarray, bad: np.ndarray,
                 now_ms: int, admitted: np.ndarray | None = None) -> np.ndarray:
        """Each reading's refusal reason (0 = valid): the first failing check, in the documented order.

        The masks are written from the last check to the first, each overwriting the ones after it,
        so the first failing check wins without re-testing `reason == 0` before every step.
        """
        reason = np.zeros(dev.size, dtype=np.int8)
        known = (dev >= 0) & (q >= 0)
        dsafe, qsafe = np.where(known, dev, 0), np.where(known, q, 0)
        reason[t < now_ms - ing.MAX_AGE_MS] = ing.TOO_OLD
        reason[t > now_ms + ing.FUTURE_TOLERANCE_MS] = ing.FUTURE
        with np.errstate(invalid="ignore"):
            reason[(v < self.qmin[qsafe]) | (v > self.qmax[qsafe])] = ing.OUT_OF_RANGE
        if self.type_idx.size:
            reason[~self.measured[self.type_idx[dsafe], qsafe]] = ing.NOT_MEASURED
            reason[~self.usable[dsafe]] = ing.INACTIVE
        reason[q == -1] = ing.UNKNOWN_QUANTITY
        reason[dev == -1] = ing.UNKNOWN_DEVICE
        if admitted is not None:  # out of the caller's scope: the same answer as a device that does not exist
            reason[(dev >= 0) & ~admitted[np.maximum(dev, 0)]] = ing.UNKNOWN_DEVICE
        reason[(dev == -2) | (q == -2) | bad] = ing.MALFORMED
        return reason

    def _refresh_new_devices(self) -> None:
        with self.lock:
            known = len(self.devices)
            with self.sessions() as s:
                last_id = self.devices[-1].id if self.devices else 0
                rows = s.scalars(select(DeviceRow).where(DeviceRow.id > (last_id or 0)).order_by(DeviceRow.id)).all()
                if not rows:
                    self._loaded_at = time.monotonic()
                    return
                ids = [r.id for r in rows]
                streams = s.execute(select(DatastreamRow.id, DatastreamRow.device_id, DatastreamRow.quantity)
                                    .where(DatastreamRow.device_id.in_(ids))).all()
            self._append([_device_from_row(r) for r in rows])
            pos = {d.id: i for i, d in enumerate(self.devices[known:], known)}
            for sid, dev_id, q in streams:
                self.ds[pos[dev_id], self.qindex[q]] = sid
            self._loaded_at = time.monotonic()

    # ------------------------------------------------------------------ alarms
    def _apply(self, transitions: list[Transitions], now: datetime) -> list[Any]:
        """Persist what the rules decided: new alarms, repeats, clears — one transaction."""
        if not transitions:
            return []
        new: list[tuple[int, int, Alarm]] = []
        flashes: list[tuple[Alarm, datetime]] = []
        changed: list[Alarm] = []
        cleared: list[Alarm] = []
        for tr in transitions:
            rule = self.engine.rules[tr.rule]
            for di, t, v in zip(tr.raised.tolist(), tr.raised_t.tolist(), tr.raised_v.tolist(), strict=True):
                new.append((di, tr.rule, self._new_alarm(di, rule, t, v)))
            for di, t, v, ct in zip(tr.flash.tolist(), tr.flash_t.tolist(), tr.flash_v.tolist(),
                                    tr.flash_clear_t.tolist(), strict=True):
                alarm = self._new_alarm(di, rule, t, v)
                new.append((-1, tr.rule, alarm))  # -1: not kept active
                flashes.append((alarm, ing.ms_to_dt(int(ct))))
            for di, t, v in zip(tr.repeated.tolist(), tr.repeated_t.tolist(), tr.repeated_v.tolist(), strict=True):
                alarm = self.active.get((di, tr.rule))
                if alarm is not None:
                    alarm.repeat(ing.ms_to_dt(int(t)), _num(v))
                    changed.append(alarm)
            for di, t, v in zip(tr.cleared.tolist(), tr.cleared_t.tolist(), tr.cleared_v.tolist(), strict=True):
                alarm = self.active.pop((di, tr.rule), None)
                if alarm is not None:
                    alarm.clear(ing.ms_to_dt(int(t)), value=_num(v))
                    cleared.append(alarm)
        events: list[Any] = []
        with self.sessions() as s:
            # Core INSERTs into the tables with RETURNING (one statement per few hundred rows), not ORM objects:
            # building and flushing an AlarmRow and an AlarmStepRow per alarm cost 0.7 ms an alarm, which an
            # alarm storm (a rainstorm floods a district's water-level sensors at once) multiplies by thousands.
            # (Not through the mapped classes either: see `CaseRepository.add_many`.)
            alarms_t = AlarmRow.__table__
            ids = s.execute(insert(alarms_t).returning(alarms_t.c.id, sort_by_parameter_order=True),
                            [_alarm_values(a) for _, _, a in new]).scalars().all() if new else []
            for (di, ri, alarm), alarm_id in zip(new, ids, strict=True):
                alarm.id = int(alarm_id)
                alarm.raised()
                self.by_id[alarm.id] = alarm
                if di >= 0:
                    self.active[(di, ri)] = alarm
            # Updates by primary key, one executemany per kind (not a statement per alarm).
            for alarm, at in flashes:
                alarm.clear(at, note="条件在同一批读数内恢复 / back to normal within the same batch")
            if flashes:
                s.execute(update(AlarmRow), [{"id": a.id, "state": a.state.value, "cleared_at": a.cleared_at}
                                             for a, _ in flashes])
            if changed:
                s.execute(update(AlarmRow), [{"id": a.id, "count": a.count, "last_at": a.last_at, "value": a.value}
                                             for a in changed])
            if cleared:
                s.execute(update(AlarmRow), [{"id": a.id, "state": a.state.value, "cleared_at": a.cleared_at,
                                              "count": a.count} for a in cleared])
            for alarm in cleared:
                self.by_id.pop(alarm.id or 0, None)
            steps: list[dict[str, Any]] = []
            for alarm in [a for _, _, a in new]:
                steps.extend(_step_values(alarm.id or 0, st) for st in alarm.steps)
                events.extend(alarm.events)
                alarm.events.clear()
            for alarm in cleared:
                steps.extend(_step_values(alarm.id or 0, st) for st in alarm.steps[-1:])
                events.extend(alarm.events)
                alarm.events.clear()
            if steps:
                s.execute(insert(AlarmStepRow.__table__), steps)
            s.commit()
        done = int(time.time() * 1000)
        for _, _, alarm in new:
            timing = Timing(alarm.id or 0, ing.dt_to_ms(alarm.reading_at or alarm.raised_at), done)
            self.timings.append(timing)
            self._awaiting_case[timing.alarm_id] = timing
        while len(self._awaiting_case) > 10_000:  # alarms whose scene opens no case: forget the oldest
            del self._awaiting_case[next(iter(self._awaiting_case))]
        return events

    def _new_alarm(self, di: int, rule: Any, t: int, v: float) -> Alarm:
        d = self.devices[di]
        at = ing.ms_to_dt(int(t))
        return Alarm(id=None, device_id=d.id or 0, device_code=d.code, rule_code=rule.code, scene=rule.scene,
                     severity=rule.severity, raised_at=at, value=_num(v), message=rule.message,
                     grid_code=d.place_code, lon=d.lon, lat=d.lat, reading_at=at)

    def _publish(self, events: list[Any]) -> None:
        # Under the service lock: the bus's unit of work is one object shared by its handlers, so two
        # consumer threads must not run alarm → case at the same time.
        if events and self.bus is not None:
            with self.lock:
                self.bus.publish(events)

    def tick(self, now: datetime | None = None) -> dict[str, int]:
        """The periodic job: offline rules, last-seen written back, retention, then small blocks merged (a
        bounded number of stream groups a tick, so a tick stays short; the rest wait for the next)."""
        now = now or self.ctx.clock.now()
        with self.lock:
            events = self._apply(self.engine.offline(ing.dt_to_ms(now)), now)
            seen = self.engine.last_seen[: len(self.devices)]
            moved = np.flatnonzero(seen > self._flushed_seen)
            if moved.size:
                with self.sessions() as s:
                    s.execute(update(DeviceRow), [{"id": self.devices[i].id, "last_seen": ing.ms_to_dt(int(seen[i]))}
                                                  for i in moved.tolist()])
                    s.commit()
                self._flushed_seen[moved] = seen[moved]
        purged = self.store.purge_before(ing.dt_to_ms(now - timedelta(days=self.retention_days)))
        merged = self.store.merge_small(max_groups=MERGE_GROUPS_PER_TICK)
        self._publish(events)
        return {"offline_raised": sum(isinstance(e, AlarmRaised) for e in events), "purged": purged,
                "last_seen_written": int(moved.size), "merged": merged}

    def acknowledge(self, alarm_id: int, by: str, note: str = "", now: datetime | None = None) -> Alarm:
        return self._manual(alarm_id, "acknowledge", by, note, now)

    def clear(self, alarm_id: int, by: str, note: str = "", now: datetime | None = None) -> Alarm:
        return self._manual(alarm_id, "clear", by, note, now)

    def _manual(self, alarm_id: int, action: str, by: str, note: str, now: datetime | None) -> Alarm:
        now = now or self.ctx.clock.now()
        with self.lock:
            alarm = self.by_id.get(alarm_id) or self.alarm(alarm_id)
            if action == "acknowledge":
                alarm.acknowledge(now, by, note)
            else:
                alarm.clear(now, by, note or "人工解除 / cleared by hand")
                key = next((k for k, a in self.active.items() if a is alarm), None)
                if key is not None:
                    self.active.pop(key)
                    self.engine.active[key[1], key[0]] = False
                self.by_id.pop(alarm_id, None)
            with self.sessions() as s:
                s.execute(update(AlarmRow).where(AlarmRow.id == alarm_id).values(
                    state=alarm.state.value, acknowledged_at=alarm.acknowledged_at,
                    acknowledged_by=alarm.acknowledged_by, cleared_at=alarm.cleared_at))
                s.add(_step_row(alarm_id, alarm.steps[-1]))
                s.commit()
            events = list(alarm.events)
            alarm.events.clear()
        self._publish(events)
        return alarm

    def alarm(self, alarm_id: int) -> Alarm:
        with self.sessions() as s:
            row = s.get(AlarmRow, alarm_id)
            if row is None:
                raise NotFound(f"预警 {alarm_id} 不存在 / alarm not found")
            alarm = _alarm_from_row(row)
            alarm.steps = [AlarmStep(r.at, r.action, r.by, r.note, r.value) for r in s.scalars(
                select(AlarmStepRow).where(AlarmStepRow.alarm_id == alarm_id).order_by(AlarmStepRow.id))]
        return alarm

    def alarms(self, *, state: str | None = None, scene: str | None = None, device: str | None = None,
               area: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[Alarm], int]:
        """Every alarm, unscoped (the system's view; callers with a principal use `sensing.scope`)."""
        stmt = select(AlarmRow)
        if state:
            if state == "active":
                stmt = stmt.where(AlarmRow.state != AlarmState.CLEARED.value)
            else:
                stmt = stmt.where(AlarmRow.state == AlarmState(state).value)
        if scene:
            stmt = stmt.where(AlarmRow.scene == scene)
        if device:
            stmt = stmt.where(AlarmRow.device_code == device)
        if area:
            stmt = stmt.where(AlarmRow.grid_code.startswith(area))
        return self.alarm_page(stmt, offset, limit)

    def alarm_page(self, stmt: Any, offset: int, limit: int) -> tuple[list[Alarm], int]:
        """One page of a SELECT of alarms, newest first, and how many it selects."""
        from sqlalchemy import func

        with self.sessions() as s:
            total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            rows = s.scalars(stmt.order_by(AlarmRow.id.desc()).offset(offset).limit(limit)).all()
        return [_alarm_from_row(r) for r in rows], int(total)

    # ------------------------------------------------------------------ alarm → case
    def open_cases(self, events: list[AlarmRaised]) -> None:
        """Bus handler: the scene's policy turns raised alarms into cases (one batch, idempotent)."""
        from zhizhi.service.commands import ReportCase, ReportCases

        reports, alarm_ids = [], []
        for e in events:
            scene = self.catalogue.scenes.get(e.scene)
            policy = scene.case if scene else None
            if policy is None or Severity.parse(e.severity) < Severity.parse(policy.min_severity):
                continue
            alarm = self.by_id.get(e.alarm_id)
            message = alarm.message if alarm else ""
            device = alarm.device_code if alarm else str(e.device_id)
            value = f"，读数 {alarm.value:g}" if alarm and alarm.value is not None else ""
            reports.append(ReportCase(
                source="sensor", source_id=f"alarm-{e.alarm_id}", title=f"{policy.title or scene.name_zh}（{device}）",
                description=f"{message}{value}。设备 {device}，预警 #{e.alarm_id}。", category_code=policy.category,
                lon=e.lon, lat=e.lat, reported_at=e.at, dispatch_department=policy.department,
                dispatch_level=policy.level, deadline_minutes=policy.deadline_minutes,
            ))
            alarm_ids.append(e.alarm_id)
        if not reports or self.bus is None:
            return
        results = self.bus.handle(ReportCases(tuple(reports)))
        done = int(time.time() * 1000)
        links = [(aid, r.case_id) for aid, r in zip(alarm_ids, results, strict=True) if hasattr(r, "case_id")]
        for aid, r in zip(alarm_ids, results, strict=True):
            if isinstance(r, DomainError):
                log.warning("alarm %s opened no case: %s", aid, r.message)
        if links:
            with self.sessions() as s:
                s.execute(update(AlarmRow), [{"id": aid, "case_id": cid} for aid, cid in links])
                s.commit()
            with self.lock:
                for aid, cid in links:
                    if aid in self.by_id:
                        self.by_id[aid].case_id = cid
            for aid, _ in links:
                t = self._awaiting_case.pop(aid, None)
                if t is not None:
                    self.timings.append(Timing(aid, t.reading_ms, t.alarm_ms, done))

    def note_cleared(self, event: AlarmCleared) -> None:
        """Bus handler for one cleared alarm (see `note_cleared_many`)."""
        self.note_cleared_many([event])

    def note_cleared_many(self, events: list[AlarmCleared]) -> None:
        """Bus batch handler: alarms that clear while their case is open are noted on the cases' timelines.

        One query finds the cases of all the batch's cleared alarms and one transaction notes them,
        instead of a query and a transaction per alarm: a batch that clears hundreds of alarms must not
        hold up the next batch (and the next alarm's case) by a transaction each.
        """
        for event in events:
            done = self.by_id.get(event.alarm_id)
            if done is not None and not done.active:
                self.by_id.pop(event.alarm_id, None)
        ids = [e.alarm_id for e in events]
        cases: dict[int, int] = {}
        with self.sessions() as s:
            for i in range(0, len(ids), 500):
                rows = s.execute(select(AlarmRow.id, AlarmRow.case_id).where(
                    AlarmRow.id.in_(ids[i:i + 500]), AlarmRow.case_id.is_not(None))).all()
                cases.update((int(aid), int(cid)) for aid, cid in rows)
        if not cases:
            return
        from zhizhi.domain.case import SYSTEM, CaseState

        with self.ctx.uow as uow:
            uow.cases.get_many(sorted(set(cases.values())), for_update=True)  # one query, not one per case
            for event in events:
                case_id = cases.get(event.alarm_id)
                case = uow.cases.get(case_id, for_update=True) if case_id is not None else None
                if case is None or not case.is_open:
                    continue
                before = case.state in (CaseState.REPORTED, CaseState.REGISTERED)
                note = ("预警在派遣前已解除 / the alarm cleared before dispatch" if before else
                        "预警已解除，请核实现场 / the alarm has cleared; check on site")
                case.add_note(event.at, SYSTEM, note, {"alarm_id": event.alarm_id, "before_dispatch": before})
            uow.commit()


# ---------------------------------------------------------------------------------------------
def _str(x: Any) -> Any:
    return x if isinstance(x, str | int | float) or x is None else str(x)[:80]


def _num(v: float) -> float | None:
    return None if v is None or v != v else float(v)


def _device_from_row(r: DeviceRow) -> Device:
    return Device(code=r.code, type=r.type, scene=r.scene, lon=r.lon, lat=r.lat, id=r.id, model=r.model,
                  name=r.name, department_code=r.department_code, place_code=r.place_code,
                  district_code=r.district_code, status=DeviceStatus(r.status), last_seen=r.last_seen,
                  rule_overrides=dict(r.rule_overrides or {}), registered_at=r.registered_at)


def _alarm_values(a: Alarm) -> dict[str, Any]:
    return {"device_id": a.device_id, "device_code": a.device_code, "rule_code": a.rule_code, "scene": a.scene,
            "severity": a.severity.label, "state": a.state.value, "raised_at": a.raised_at,
            "reading_at": a.reading_at, "last_at": a.raised_at, "grid_code": a.grid_code, "lon": a.lon,
            "lat": a.lat, "value": a.value, "count": a.count, "message": a.message}


def _alarm_from_row(r: AlarmRow) -> Alarm:
    return Alarm(id=r.id, device_id=r.device_id, device_code=r.device_code, rule_code=r.rule_code, scene=r.scene,
                 severity=Severity.parse(r.severity), raised_at=r.raised_at, value=r.value, message=r.message,
                 grid_code=r.grid_code, lon=r.lon, lat=r.lat, state=AlarmState(r.state), last_at=r.last_at,
                 count=r.count, acknowledged_at=r.acknowledged_at, acknowledged_by=r.acknowledged_by,
                 cleared_at=r.cleared_at, case_id=r.case_id, reading_at=r.reading_at)


def _step_values(alarm_id: int, st: AlarmStep) -> dict[str, Any]:
    return {"alarm_id": alarm_id, "at": st.at, "action": st.action, "by": st.by, "note": st.note, "value": st.value}


def _step_row(alarm_id: int, st: AlarmStep) -> AlarmStepRow:
    return AlarmStepRow(**_step_values(alarm_id, st))


def now_utc() -> datetime:
    return datetime.now(UTC)
