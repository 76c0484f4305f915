"""Perception under the caller's scope (感知分权分域): the one place the sensing routes and /sta go through.

A street dispatcher sees the devices of its street, their datastreams, readings and alarms, and nothing else;
a department handler the devices its department owns and the alarms whose case is assigned to it; an
integrator posts readings only for the devices it connects. The scope is a SQL condition (the device's grid
under one of the scope's places, found with a recursive walk down the stored place hierarchy, so it does not
depend on how place codes are spelled), never a filter over whole tables in Python.

Out of scope answers exactly like unknown (`NotFound`, and the reason "unknown-device" for a reading), so the
existence of another street's device or alarm does not leak. In scope but not permitted is `Forbidden`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select, true

from zhizhi.adapters import audit_log
from zhizhi.adapters.orm import CaseRow, PlaceRow
from zhizhi.adapters.orm_sensing import AlarmRow, DatastreamRow, DeviceLocationRow, DeviceRow
from zhizhi.adapters.repository import scope_clause
from zhizhi.domain.access import Forbidden, Principal, Scope, may, require, scope_of, sensing_scope_of
from zhizhi.domain.alarms import Alarm, AlarmState
from zhizhi.domain.devices import Device
from zhizhi.domain.errors import DomainError, NotFound, ValidationFailed

if TYPE_CHECKING:
    from zhizhi.sensing.service import IngestReport, SensingService


def places_under(places: tuple[str, ...]) -> Select[Any]:
    """SELECT of every place code in the subtrees of `places` (the places themselves included)."""
    walk = select(PlaceRow.code).where(PlaceRow.code.in_(list(places))).cte("scope_places", recursive=True)
    walk = walk.union_all(select(PlaceRow.code).where(PlaceRow.parent_code == walk.c.code))
    return select(walk.c.code)


def device_clause(scope: Scope, under: Select[Any] | None = None) -> ColumnElement[bool]:
    """The SQL condition on `DeviceRow` of a scope: grid under a listed place, and owner a listed department.
    `under`: the scope's `places_under`, when the caller's statement uses it elsewhere too (one CTE)."""
    if scope.nothing:
        return false()
    conds: list[ColumnElement[bool]] = []
    if scope.places:
        conds.append(DeviceRow.place_code.in_(under if under is not None else places_under(scope.places)))
    if scope.departments:
        conds.append(DeviceRow.department_code.in_(list(scope.departments)))
    return and_(*conds) if conds else true()


def location_clause(scope: Scope) -> ColumnElement[bool]:
    """The SQL condition on `DeviceLocationRow`: the positions of the devices in scope, and the Locations no
    device holds yet that lie in the scope's places."""
    if scope.unlimited:
        return true()
    if scope.nothing:
        return false()
    under = places_under(scope.places) if scope.places else None
    linked = DeviceLocationRow.device_id.in_(select(DeviceRow.id).where(device_clause(scope, under)))
    loose: ColumnElement[bool] = DeviceLocationRow.device_id.is_(None)
    if under is not None:
        loose = and_(loose, DeviceLocationRow.place_code.in_(under))
    return or_(linked, loose)


def alarm_clause(principal: Principal, scope: Scope) -> ColumnElement[bool]:
    """An alarm is seen when its device is in the sensing scope, or when its case is in the case scope.

    The second branch is what lets a handler of 综合执法 see the methane alarm whose case was dispatched to it,
    even though the detector belongs to another department.
    """
    if scope.unlimited:
        return true()
    conds = [AlarmRow.device_id.in_(select(DeviceRow.id).where(device_clause(scope)))]
    cases = scope_of(principal)
    if may(principal, "read_cases") and not cases.nothing:
        clause = scope_clause(cases)
        conds.append(AlarmRow.case_id.in_(select(CaseRow.id).where(*clause) if isinstance(clause, list)
                                          else select(CaseRow.id).where(clause)))
    return or_(*conds)


def _not_found(code: str) -> NotFound:
    return NotFound(f"设备 {code} 不存在 / device not found")


class ScopedSensing:
    """The sensing service as one principal may use it: every read filtered, every act checked and audited.

    Every change a person or an integration makes here (devices registered, changed, moved or retired; alarms
    acknowledged or cleared by hand; batches of readings posted) is written to the hash-chained audit log with
    the caller's name, role and address. The audit row is written right after the change commits, in its own
    transaction: the sensing store keeps its own short transactions for speed, so a crash in between could lose
    the audit row of a committed change (never the change). Readings are audited per request, not per reading.
    """

    def __init__(self, sensing: SensingService, principal: Principal) -> None:
        self.s = sensing
        self.principal = principal
        self.scope = sensing_scope_of(principal)

    def _audit(self, entries: list[tuple[str, str, dict[str, Any] | None]]) -> None:
        """Record acts of this caller in the audit log (数据铁笼)."""
        if not entries:
            return
        with self.s.sessions() as sess:
            audit_log.append_many(sess, [audit_log.Entry(self.principal, a, t, d) for a, t, d in entries],
                                  at=self.s.ctx.clock.now())
            sess.commit()

    # ------------------------------------------------------------------ devices
    def device_mask(self) -> np.ndarray | None:
        """For each device index of the service, whether it is in scope; None when the scope is the city."""
        if self.scope.unlimited:
            return None
        ids = np.fromiter((d.id or 0 for d in self.s.devices), dtype=np.int64, count=len(self.s.devices))
        if self.scope.nothing or not ids.size:
            return np.zeros(ids.size, dtype=np.bool_)
        with self.s.sessions() as sess:
            inside = np.array(sess.scalars(select(DeviceRow.id).where(device_clause(self.scope))).all(),
                              dtype=np.int64)
        return np.isin(ids, inside)

    def _visible(self, code: str) -> Device:
        """The device, or `NotFound` when it is unknown or outside the scope (the same answer)."""
        if code not in self.s.index:
            raise _not_found(code)
        if not self.scope.unlimited:
            with self.s.sessions() as sess:
                hit = sess.scalar(select(DeviceRow.id).where(DeviceRow.code == code, device_clause(self.scope)))
            if hit is None:
                raise _not_found(code)
        return self.s.device(code)

    def list_devices(self, *, scene: str | None = None, type: str | None = None, area: str | None = None,
                     status: str | None = None, offset: int = 0, limit: int = 100) -> tuple[list[Device], int]:
        """A page of the devices in scope (SQL: scope, filters, count and page in the database)."""
        require(self.principal, "read_sensing")
        stmt = select(DeviceRow.code).where(device_clause(self.scope))
        if scene:
            stmt = stmt.where(DeviceRow.scene == scene)
        if type:
            stmt = stmt.where(DeviceRow.type == type)
        if area:
            stmt = stmt.where(DeviceRow.place_code.startswith(area, autoescape=True))
        if status:
            stmt = stmt.where(DeviceRow.status == status)
        with self.s.sessions() as sess:
            total = sess.scalar(select(func.count()).select_from(stmt.subquery())) or 0
            codes = sess.scalars(stmt.order_by(DeviceRow.id).offset(offset).limit(limit)).all()
        return [self.s.device(c) for c in codes if c in self.s.index], int(total)

    def device(self, code: str) -> Device:
        d = self._visible(code)
        require(self.principal, "read_sensing")
        return d

    def latest(self, code: str) -> dict[str, dict[str, Any]]:
        self.device(code)
        return self.s.latest(code)

    def quantities(self, code: str) -> list[str]:
        """The quantities a device in scope measures."""
        return list(self.s.catalogue.device_types[self.device(code).type].quantities)

    def series(self, code: str, quantity: str, limit: int = 100) -> tuple[int, list[tuple[int, float]]]:
        """(datastream id, [(epoch ms, value)]) of one quantity of one device in scope."""
        self.device(code)
        i, qi = self.s.index[code], self.s.qindex.get(quantity)
        if qi is None or self.s.ds[i, qi] < 0:
            raise ValidationFailed(f"设备 {code} 不测量 {quantity!r} / the device does not measure this")
        sid = int(self.s.ds[i, qi])
        return sid, self.s.store.series(sid, limit=limit)

    def _check_department(self, department: str | None) -> None:
        if self.scope.departments and department not in self.scope.departments:
            raise Forbidden(f"部门 {department} 不在您的范围内 / department outside your scope",
                            allowed=list(self.scope.departments))

    def register(self, devices: list[Device]) -> list[Device | DomainError]:
        """Register devices; each one located outside the caller's places or owned by another department is
        refused on its own (the others are registered)."""
        require(self.principal, "manage_devices")
        if len(self.scope.departments) == 1:  # an integrator of one department registers for that department
            for d in devices:
                d.department_code = d.department_code or self.scope.departments[0]
        admit: Callable[[list[Device]], list[DomainError | None]] | None = None
        if not self.scope.unlimited:
            admit = self._admit_new
        out = self.s.register(devices, admit=admit)
        self._audit([("device.register", f"device:{d.code}", {"place": d.place_code, "type": d.type})
                     for d in out if isinstance(d, Device)])
        return out

    def _admit_new(self, devices: list[Device]) -> list[DomainError | None]:
        """For devices already located: None for each one the caller may register, else the reason."""
        inside: set[str] = set()
        if self.scope.places:
            codes = list({d.place_code for d in devices if d.place_code})
            with self.s.sessions() as sess:
                under = places_under(self.scope.places).subquery()
                inside = set(sess.scalars(select(under.c.code).where(under.c.code.in_(codes))).all())
        out: list[DomainError | None] = []
        for d in devices:
            if self.scope.nothing or (self.scope.places and d.place_code not in inside):
                out.append(Forbidden(f"设备 {d.code} 的位置不在您的管辖范围 / the device lies outside your scope",
                                     field="lon"))
            elif self.scope.departments and d.department_code not in self.scope.departments:
                out.append(Forbidden(f"设备 {d.code} 的权属部门不在您的范围内 / owner department outside your scope",
                                     field="department_code"))
            else:
                out.append(None)
        return out

    def update_device(self, code: str, *, lon: float | None = None, lat: float | None = None,
                      **changes: Any) -> Device:
        """Change a device in scope; a new position (`lon` and `lat` together) must stay inside the scope."""
        self._visible(code)
        require(self.principal, "manage_devices")
        if changes.get("department_code") is not None:
            self._check_department(changes["department_code"])
        if (lon is None) != (lat is None):
            raise ValidationFailed("经度和纬度须同时给出 / give lon and lat together", field="lon")
        if lon is not None and lat is not None:
            self.s.move_device(code, lon, lat, admit=None if self.scope.unlimited else self._admit_new)
        device = self.s.update_device(code, **changes)
        fields = sorted(k for k, v in changes.items() if v is not None) + (["lon", "lat"] if lon is not None else [])
        self._audit([("device.update", f"device:{code}", {"fields": fields, "place": device.place_code})])
        return device

    def move_device(self, code: str, lon: float, lat: float, *, link: int | None = None, keep_id: bool = False,
                    name: str = "", description: str = "") -> int:
        """Move a device in scope (see `SensingService.move_device`); the id of its now current location row."""
        self._visible(code)
        require(self.principal, "manage_devices")
        if link is not None:
            self.location(link)  # a Location outside the scope is as unknown
        device, location_id = self.s.move_device(code, lon, lat, admit=None if self.scope.unlimited
                                                 else self._admit_new, link=link, keep_id=keep_id, name=name,
                                                 description=description)
        self._audit([("device.update", f"device:{code}", {"fields": ["lon", "lat"], "place": device.place_code,
                                                          "location": location_id})])
        return location_id

    # ------------------------------------------------------------------ locations
    def history(self, code: str) -> list[DeviceLocationRow]:
        """Every position of a device in scope, newest first (its registration is the oldest)."""
        d = self.device(code)
        return self.s.location_history(d.id or 0)

    def locations(self, device_id: int | None = None) -> list[DeviceLocationRow]:
        """The location rows in scope (every position of every device, and loose Locations), or one device's
        positions, newest first. Checks no permission: out of scope must answer 404 before a 403, so the
        caller requires `read_sensing` once it knows the entity exists for this principal (as /sta does)."""
        stmt = select(DeviceLocationRow).where(location_clause(self.scope))
        if device_id is not None:
            stmt = stmt.where(DeviceLocationRow.device_id == device_id)
        with self.s.sessions() as sess:
            return list(sess.scalars(stmt.order_by(DeviceLocationRow.time.desc(), DeviceLocationRow.id.desc())))

    def location(self, location_id: int) -> DeviceLocationRow:
        """One location row in scope, or `NotFound` (unknown and out of scope alike)."""
        with self.s.sessions() as sess:
            row = sess.scalars(select(DeviceLocationRow).where(DeviceLocationRow.id == location_id,
                                                               location_clause(self.scope))).first()
        if row is None:
            raise NotFound(f"位置 {location_id} 不存在 / Location not found")
        return row

    def _admit_place(self, grid: str | None) -> DomainError | None:
        if self.scope.unlimited:
            return None
        if not self.scope.nothing and not self.scope.places:
            return None
        if grid is not None and self.scope.places:
            with self.s.sessions() as sess:
                under = places_under(self.scope.places).subquery()
                if sess.scalar(select(under.c.code).where(under.c.code == grid)) is not None:
                    return None
        return Forbidden("位置不在您的管辖范围 / the Location lies outside your scope", field="location")

    def create_location(self, lon: float, lat: float, name: str = "", description: str = "") -> DeviceLocationRow:
        require(self.principal, "manage_devices")
        row = self.s.create_location(lon, lat, name, description, admit=self._admit_place)
        self._audit([("location.create", f"location:{row.id}", {"place": row.place_code})])
        return row

    def update_location(self, location_id: int, **changes: Any) -> DeviceLocationRow:
        self.location(location_id)
        require(self.principal, "manage_devices")
        row = self.s.update_location(location_id, admit=self._admit_place, **changes)
        self._audit([("location.update", f"location:{location_id}",
                      {"fields": sorted(k for k, v in changes.items() if v is not None), "place": row.place_code})])
        return row

    def delete_location(self, location_id: int) -> None:
        self.location(location_id)
        require(self.principal, "manage_devices")
        self.s.delete_location(location_id)
        self._audit([("location.delete", f"location:{location_id}", None)])

    def retire_device(self, code: str) -> Device:
        self._visible(code)
        require(self.principal, "manage_devices")
        self.s.delete_device(code)
        self._audit([("device.retire", f"device:{code}", None)])
        return self.s.device(code)

    # ------------------------------------------------------------------ readings
    def ingest(self, items: list[Any], now: datetime | None = None) -> IngestReport:
        """Readings for devices outside the scope are refused one by one as unknown devices; the rest are kept."""
        require(self.principal, "ingest_observations")
        report = self.s.ingest(items, now=now, admit=None if self.scope.unlimited else self.device_mask)
        self._audit_readings(report)
        return report

    def ingest_body(self, body: bytes, content_type: str = "", content_encoding: str = "") -> IngestReport:
        require(self.principal, "ingest_observations")
        report = self.s.ingest_body(body, content_type, content_encoding,
                                    admit=None if self.scope.unlimited else self.device_mask)
        self._audit_readings(report)
        return report

    def _audit_readings(self, report: IngestReport) -> None:
        if report.accepted:
            self._audit([("observations.ingest", "observations",
                          {"received": report.received, "accepted": report.accepted})])

    def datastream_ids(self) -> Select[Any]:
        """SELECT of the ids of the datastreams in scope."""
        return select(DatastreamRow.id).where(DatastreamRow.device_id.in_(
            select(DeviceRow.id).where(device_clause(self.scope))))

    def recent_observations(self, limit: int) -> list[tuple[int, int, float]]:
        """The latest readings of the datastreams in scope: (datastream, epoch ms, value), newest first."""
        require(self.principal, "read_sensing")
        if self.scope.unlimited:
            return self.s.store.recent(limit)
        with self.s.db.connect() as conn:
            ids = [int(x) for x in conn.execute(self.datastream_ids()).scalars()]
        return self.s.store.recent(limit, ids)

    def _visible_stream(self, sid: int) -> None:
        if not self.scope.unlimited:
            with self.s.sessions() as sess:
                hit = sess.scalar(select(DatastreamRow.id).where(DatastreamRow.id == sid,
                                                                 DatastreamRow.id.in_(self.datastream_ids())))
            if hit is None:
                raise NotFound(f"Datastream {sid} 不存在 / not found")

    def update_observation(self, sid: int, t: int, value: float) -> None:
        """Correct one stored reading of a datastream in scope (out of scope: `NotFound`)."""
        self._visible_stream(sid)
        require(self.principal, "manage_devices")
        self.s.update_observation(sid, t, value)
        self._audit([("observation.update", f"observation:{sid}-{t}", {"result": float(value)})])

    def delete_observation(self, sid: int, t: int) -> None:
        """Delete one stored reading of a datastream in scope (out of scope: `NotFound`)."""
        self._visible_stream(sid)
        require(self.principal, "manage_devices")
        self.s.delete_observation(sid, t)
        self._audit([("observation.delete", f"observation:{sid}-{t}", None)])

    # ------------------------------------------------------------------ alarms
    def alarms(self, *, state: str | None = None, scene: str | None = None, device: str | None = None,
               area: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[Alarm], int]:
        require(self.principal, "read_sensing")
        stmt = select(AlarmRow).where(alarm_clause(self.principal, self.scope))
        if state:
            stmt = stmt.where(AlarmRow.state != AlarmState.CLEARED.value if state == "active"
                              else AlarmRow.state == AlarmState(state).value)
        if scene:
            stmt = stmt.where(AlarmRow.scene == scene)
        if device:
            stmt = stmt.where(AlarmRow.device_code == device)
        if area:
            stmt = stmt.where(AlarmRow.grid_code.startswith(area, autoescape=True))
        return self.s.alarm_page(stmt, offset, limit)

    def _visible_alarm(self, alarm_id: int) -> None:
        if not self.scope.unlimited:
            with self.s.sessions() as sess:
                hit = sess.scalar(select(AlarmRow.id).where(AlarmRow.id == alarm_id,
                                                            alarm_clause(self.principal, self.scope)))
            if hit is None:
                raise NotFound(f"预警 {alarm_id} 不存在 / alarm not found")

    def alarm(self, alarm_id: int) -> Alarm:
        self._visible_alarm(alarm_id)
        require(self.principal, "read_sensing")
        return self.s.alarm(alarm_id)

    def acknowledge(self, alarm_id: int, note: str = "") -> Alarm:
        self._visible_alarm(alarm_id)
        require(self.principal, "acknowledge_alarms")
        alarm = self.s.acknowledge(alarm_id, self.principal.username, note)
        self._audit([("alarm.acknowledge", f"alarm:{alarm_id}", None)])
        return alarm

    def clear(self, alarm_id: int, note: str = "") -> Alarm:
        self._visible_alarm(alarm_id)
        require(self.principal, "acknowledge_alarms")
        alarm = self.s.clear(alarm_id, self.principal.username, note)
        self._audit([("alarm.clear", f"alarm:{alarm_id}", None)])
        return alarm
