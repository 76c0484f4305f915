"""Perception routes: devices, observation batches, alarm rules and alarms.

`POST /api/v1/observations` takes a JSON array, one object, or NDJSON, gzip allowed;
it answers 200 with per-item reasons for every refused reading (the others are
stored), so a partly bad batch never loses its good readings.

Every route goes through `ScopedSensing` (sensing/scope.py): the caller's role decides what it may do and its
scope which devices and alarms exist for it; a device or alarm outside the scope answers 404 like an unknown one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from zhizhi.api.deps import MAX_INT, CurrentPrincipal
from zhizhi.domain.alarms import Alarm
from zhizhi.domain.devices import Device, DeviceStatus
from zhizhi.domain.errors import DomainError, ValidationFailed
from zhizhi.sensing.scope import ScopedSensing

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi


class DeviceIn(BaseModel):
    code: str = Field(min_length=1, max_length=64)
    type: str
    scene: str
    lon: float
    lat: float
    model: str = ""
    name: str = ""
    department_code: str | None = None
    status: str = "active"
    rule_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


class DevicePatch(BaseModel):
    status: str | None = None
    lon: float | None = Field(None, description="a new position (with lat): the device is located again")
    lat: float | None = None
    rule_overrides: dict[str, dict[str, Any]] | None = None
    department_code: str | None = None
    name: str | None = None
    model: str | None = None


class AlarmStepIn(BaseModel):
    note: str = ""


def device_out(d: Device) -> dict[str, Any]:
    return {"id": d.id, "code": d.code, "name": d.name, "type": d.type, "model": d.model, "scene": d.scene,
            "lon": d.lon, "lat": d.lat, "place_code": d.place_code, "district_code": d.district_code,
            "department_code": d.department_code, "status": d.status.value,
            "last_seen": d.last_seen.isoformat() if d.last_seen else None, "rule_overrides": d.rule_overrides}


def alarm_out(a: Alarm) -> dict[str, Any]:
    def iso(x: Any) -> Any:
        return x.isoformat() if x else None

    return {"id": a.id, "device_id": a.device_id, "device_code": a.device_code, "rule_code": a.rule_code,
            "scene": a.scene, "severity": a.severity.label, "state": a.state.value, "state_label": a.state.label_zh,
            "raised_at": iso(a.raised_at), "reading_at": iso(a.reading_at), "last_at": iso(a.last_at),
            "acknowledged_at": iso(a.acknowledged_at), "acknowledged_by": a.acknowledged_by,
            "cleared_at": iso(a.cleared_at), "grid_code": a.grid_code, "lon": a.lon, "lat": a.lat,
            "case_id": a.case_id, "value": a.value, "count": a.count, "message": a.message,
            "steps": [{"at": iso(s.at), "action": s.action, "by": s.by, "note": s.note, "value": s.value}
                      for s in a.steps]}


#: Bounded so that no database integer overflows (422, not a server error).
AlarmId = Annotated[int, Path(ge=1, le=MAX_INT)]
#: A device's code (the registry's column is 64 characters).
DeviceCode = Annotated[str, Path(min_length=1, max_length=64)]


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""
    sensing = zz.sensing
    if sensing is None:
        return

    @app.get("/api/v1/devices", operation_id="list_devices", tags=["sensing"])
    def list_devices(principal: CurrentPrincipal, scene: str | None = None, type: str | None = None,
                     area: str | None = None, status: str | None = None,
                     offset: Annotated[int, Query(ge=0)] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        items, total = ScopedSensing(sensing, principal).list_devices(
            scene=scene, type=type, area=area, status=status, offset=offset, limit=limit)
        return {"total": total, "offset": offset, "limit": limit, "items": [device_out(d) for d in items]}

    @app.post("/api/v1/devices", operation_id="register_devices", tags=["sensing"], status_code=201)
    def register_devices(body: DeviceIn | list[DeviceIn], principal: CurrentPrincipal) -> dict[str, Any]:
        many = isinstance(body, list)
        items = body if isinstance(body, list) else [body]
        devices = []
        for b in items:
            try:
                status = DeviceStatus(b.status)
            except ValueError:
                raise ValidationFailed(f"未知状态 {b.status!r} / unknown status",
                                       allowed=[s.value for s in DeviceStatus]) from None
            devices.append(Device(code=b.code, type=b.type, scene=b.scene, lon=b.lon, lat=b.lat, model=b.model,
                                  name=b.name, department_code=b.department_code, status=status,
                                  rule_overrides=b.rule_overrides))
        results = ScopedSensing(sensing, principal).register(devices)
        if not many and isinstance(results[0], DomainError):
            raise results[0]
        out = [device_out(r) if isinstance(r, Device) else {"error": r.code, "detail": r.message, **{
            k: v for k, v in r.details.items() if isinstance(v, str | list)}} for r in results]
        return {"registered": sum(isinstance(r, Device) for r in results), "items": out}

    @app.get("/api/v1/devices/{device_code}", operation_id="get_device", tags=["sensing"])
    def get_device(device_code: DeviceCode, principal: CurrentPrincipal) -> dict[str, Any]:
        scoped = ScopedSensing(sensing, principal)
        return {**device_out(scoped.device(device_code)), "latest": scoped.latest(device_code)}

    @app.patch("/api/v1/devices/{device_code}", operation_id="update_device", tags=["sensing"])
    def patch_device(device_code: DeviceCode, body: DevicePatch, principal: CurrentPrincipal) -> dict[str, Any]:
        if body.status is not None and body.status not in {s.value for s in DeviceStatus}:
            raise ValidationFailed(f"未知状态 {body.status!r} / unknown status",
                                   allowed=[s.value for s in DeviceStatus])
        changes = body.model_dump(exclude_none=True)
        return device_out(ScopedSensing(sensing, principal).update_device(device_code, **changes))

    @app.delete("/api/v1/devices/{device_code}", operation_id="retire_device", tags=["sensing"])
    def retire_device(device_code: DeviceCode, principal: CurrentPrincipal) -> dict[str, Any]:
        return device_out(ScopedSensing(sensing, principal).retire_device(device_code))

    @app.get("/api/v1/devices/{device_code}/history", operation_id="device_history", tags=["sensing"])
    def device_history(device_code: DeviceCode, principal: CurrentPrincipal) -> dict[str, Any]:
        """Where the device has been: one entry per position, newest first (registration, then every move)."""
        rows = ScopedSensing(sensing, principal).history(device_code)
        return {"device": device_code, "items": [
            {"location_id": r.id, "time": r.time.isoformat(), "lon": r.lon, "lat": r.lat, "place_code": r.place_code}
            for r in rows]}

    @app.get("/api/v1/devices/{device_code}/observations", operation_id="device_observations", tags=["sensing"])
    def device_observations(device_code: DeviceCode, principal: CurrentPrincipal,
                            quantity: Annotated[str | None, Query(description=(
                                "one measured quantity; every quantity of the device when left out"))] = None,
                            limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
        from zhizhi.sensing.ingest import ms_to_dt

        scoped = ScopedSensing(sensing, principal)
        quantities = [quantity] if quantity else scoped.quantities(device_code)
        items, sid = [], None
        for q in quantities:
            sid, rows = scoped.series(device_code, q, limit)
            items.extend({"time": ms_to_dt(t).isoformat(), "value": v, "quantity": q} for t, v in rows)
        items.sort(key=lambda x: x["time"], reverse=True)
        return {"device": device_code, "quantity": quantity, "datastream_id": sid if quantity else None,
                "items": items[:limit]}

    @app.post("/api/v1/observations", operation_id="ingest_observations", tags=["sensing"])
    async def ingest_observations(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        import asyncio

        from zhizhi.domain.access import require

        require(principal, "ingest_observations")  # before reading a body the caller may not send
        body = await request.body()
        report = await asyncio.to_thread(ScopedSensing(sensing, principal).ingest_body, body,
                                         request.headers.get("content-type", ""),
                                         request.headers.get("content-encoding", ""))
        return report.as_dict()

    @app.get("/api/v1/alarms", operation_id="list_alarms", tags=["sensing"])
    def list_alarms(principal: CurrentPrincipal,
                    state: Annotated[str | None, Query(description="raised|acknowledged|cleared|active")] = None,
                    scene: str | None = None, device: str | None = None, area: str | None = None,
                    offset: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        if state and state not in ("raised", "acknowledged", "cleared", "active"):
            raise ValidationFailed(f"未知状态 {state!r} / unknown state",
                                   allowed=["raised", "acknowledged", "cleared", "active"])
        items, total = ScopedSensing(sensing, principal).alarms(state=state, scene=scene, device=device,
                                                                area=area, offset=offset, limit=limit)
        return {"total": total, "offset": offset, "limit": limit, "items": [alarm_out(a) for a in items]}

    @app.get("/api/v1/alarms/{alarm_id}", operation_id="get_alarm", tags=["sensing"])
    def get_alarm(alarm_id: AlarmId, principal: CurrentPrincipal) -> dict[str, Any]:
        return alarm_out(ScopedSensing(sensing, principal).alarm(alarm_id))

    @app.post("/api/v1/alarms/{alarm_id}/acknowledge", operation_id="acknowledge_alarm", tags=["sensing"])
    def acknowledge_alarm(alarm_id: AlarmId, principal: CurrentPrincipal,
                          body: AlarmStepIn | None = None) -> dict[str, Any]:
        scoped = ScopedSensing(sensing, principal)
        scoped.acknowledge(alarm_id, body.note if body else "")
        return alarm_out(scoped.alarm(alarm_id))

    @app.post("/api/v1/alarms/{alarm_id}/clear", operation_id="clear_alarm", tags=["sensing"])
    def clear_alarm(alarm_id: AlarmId, principal: CurrentPrincipal, body: AlarmStepIn | None = None) -> dict[str, Any]:
        scoped = ScopedSensing(sensing, principal)
        scoped.clear(alarm_id, body.note if body else "")
        return alarm_out(scoped.alarm(alarm_id))

    @app.get("/api/v1/sensing/catalogue", operation_id="sensing_catalogue", tags=["sensing"])
    def sensing_catalogue(principal: CurrentPrincipal) -> dict[str, Any]:
        from zhizhi.domain.access import require

        require(principal, "read_sensing")
        c = sensing.catalogue
        return {
            "quantities": {k: {"name_zh": q.name_zh, "unit": q.unit, "min": q.min, "max": q.max}
                           for k, q in c.quantities.items()},
            "device_types": {k: {"name_zh": t.name_zh, "quantities": list(t.quantities)}
                             for k, t in c.device_types.items()},
            "scenes": {k: {"name_zh": s.name_zh, "case": (
                {"category": s.case.category, "department": s.case.department, "level": s.case.level,
                 "deadline_minutes": s.case.deadline_minutes, "min_severity": s.case.min_severity}
                if s.case else None)} for k, s in c.scenes.items()},
            "rules": [{"code": r.code, "scene": r.scene, "device_type": r.device_type, "kind": r.kind.value,
                       "severity": r.severity.label, "quantity": r.quantity, "op": r.op, "value": r.value,
                       "clear": r.clear, "minutes": r.minutes, "mode": r.mode,
                       "terms": [{"quantity": t.quantity, "op": t.op, "value": t.value} for t in r.terms],
                       "message": r.message} for r in c.rules],
        }
