"""The OGC SensorThings API v1.1 at /sta/v1.1, over the same device and observation tables.

Mapping: a device is a Thing; every position it has held (registration, then each move) is one row of its
location history, which is both a Location and a HistoricalLocation (same id), the Thing's Location being its
newest; its current position is also the FeatureOfInterest of its observations (id: the device's). A device
type is a Sensor; a quantity an ObservedProperty; one quantity of one device a Datastream; a stored reading an
Observation, with the id '<datastream>-<epoch ms>'. Query options: $filter, $expand (nested, with options),
$select, $orderby, $top, $skip, $count; paging with @iot.nextLink. Creating: Things (deep insert of Locations;
the Datastreams follow from the device type), Locations (on their own, or with their Thing: a move), Observations
and the dataArray extension at /CreateObservations — readings go through the same validated ingest as every other
path; FeaturesOfInterest and Sensors/ObservedProperties answer with the device's or the catalogue's entry.
PATCH (merge or JSON Patch; PUT taken alike) on Things, Locations, FeaturesOfInterest and Observations; DELETE on
Things (retires the device), Observations and Locations no device holds. Every move (PATCH of a Thing with
Locations, of its Location or FeatureOfInterest, POST Things(id)/Locations, linking a Location) locates the
device again and writes a history row in the move's transaction. docs/sensing.md has the whole mapping.

Everything is seen through the caller's sensing scope (`ScopedSensing`): collections, navigation, $expand and
$count hold only the devices (and their datastreams and observations) in scope; an entity outside it answers
404 like an unknown one; creating needs `manage_devices` (Things, Locations) or `ingest_observations`
(Observations); changing or deleting a reading needs `manage_devices`.
Sensors and ObservedProperties are the catalogue (device types and quantities), the same for every reader.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from zhizhi.adapters.orm_sensing import DeviceLocationRow
from zhizhi.api.deps import CurrentPrincipal
from zhizhi.domain.access import Principal, require
from zhizhi.domain.devices import Device
from zhizhi.domain.errors import DomainError, NotFound, ValidationFailed
from zhizhi.sensing.odata import compile_filter, order
from zhizhi.sensing.scope import ScopedSensing

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

ROOT = "/sta/v1.1"
SETS = ("Things", "Locations", "HistoricalLocations", "Datastreams", "Sensors", "ObservedProperties",
        "Observations", "FeaturesOfInterest")
#: navigation property → (target set, is a collection)
NAV: dict[str, dict[str, tuple[str, bool]]] = {
    "Things": {"Locations": ("Locations", True), "HistoricalLocations": ("HistoricalLocations", True),
               "Datastreams": ("Datastreams", True)},
    "Locations": {"Things": ("Things", True), "HistoricalLocations": ("HistoricalLocations", True)},
    "HistoricalLocations": {"Thing": ("Things", False), "Locations": ("Locations", True)},
    "Datastreams": {"Thing": ("Things", False), "Sensor": ("Sensors", False),
                    "ObservedProperty": ("ObservedProperties", False), "Observations": ("Observations", True)},
    "Sensors": {"Datastreams": ("Datastreams", True)},
    "ObservedProperties": {"Datastreams": ("Datastreams", True)},
    "Observations": {"Datastream": ("Datastreams", False), "FeatureOfInterest": ("FeaturesOfInterest", False)},
    "FeaturesOfInterest": {"Observations": ("Observations", True)},
}
MAX_TOP = 1000
OBS_SCAN = 10_000  # top-level /Observations reads at most this many recent rows before filtering


class Sta:
    """Builds entity dicts from the sensing service, as one principal may see them, and answers queries."""

    def __init__(self, zz: Zhizhi, base: str, principal: Principal) -> None:
        self.s = zz.sensing
        self.scoped = ScopedSensing(self.s, principal)
        self.base = base.rstrip("/") + ROOT
        self.types = list(self.s.catalogue.device_types)
        self.quantities = list(self.s.catalogue.quantities)
        self._mask: Any = False  # computed on first use: None = the whole city
        self._rows: dict[int, DeviceLocationRow] | None = None
        self._now: dict[int, DeviceLocationRow] | None = None
        self._by_id: dict[int | None, Device] | None = None

    def _in_scope(self) -> list[int]:
        """Indices of the devices in the caller's scope (one SQL query per request)."""
        if self._mask is False:
            self._mask = self.scoped.device_mask()
        n = len(self.s.devices)
        if self._mask is None:
            return list(range(n))
        return [i for i in self._mask.nonzero()[0].tolist() if i < n]

    # ---------------------------------------------------------------- entities
    def _links(self, es: str, key: Any, body: dict[str, Any]) -> dict[str, Any]:
        ident = f"'{key}'" if isinstance(key, str) else key
        self_link = f"{self.base}/{es}({ident})"
        out = {"@iot.id": key, "@iot.selfLink": self_link, **body}
        for nav in NAV[es]:
            out[f"{nav}@iot.navigationLink"] = f"{self_link}/{nav}"
        return out

    def thing(self, d: Device) -> dict[str, Any]:
        return self._links("Things", d.id, {"name": d.code, "description": d.name or d.type, "properties": {
            "type": d.type, "scene": d.scene, "model": d.model, "place_code": d.place_code,
            "district_code": d.district_code, "department_code": d.department_code, "status": d.status.value}})

    def location(self, row: DeviceLocationRow) -> dict[str, Any]:
        d = self._device_of(row)
        return self._links("Locations", int(row.id), {
            "name": row.name or (f"{d.code} location" if d else f"location {row.id}"),
            "description": row.description or row.place_code or "", "encodingType": "application/geo+json",
            "location": {"type": "Point", "coordinates": [row.lon, row.lat]},
            "properties": {"place_code": row.place_code}})

    def historical(self, row: DeviceLocationRow) -> dict[str, Any]:
        return self._links("HistoricalLocations", int(row.id), {"time": _iso(row.time)})

    def feature(self, d: Device) -> dict[str, Any]:
        return self._links("FeaturesOfInterest", d.id, {"name": d.code, "description": d.place_code or "",
                                                        "encodingType": "application/geo+json",
                                                        "feature": {"type": "Point", "coordinates": [d.lon, d.lat]}})

    def sensor(self, i: int) -> dict[str, Any]:
        t = self.s.catalogue.device_types[self.types[i]]
        return self._links("Sensors", i + 1, {"name": t.code, "description": t.name_zh, "encodingType": "text/plain",
                                              "metadata": ",".join(t.quantities)})

    def observed_property(self, i: int) -> dict[str, Any]:
        q = self.s.catalogue.quantities[self.quantities[i]]
        return self._links("ObservedProperties", i + 1, {"name": q.code, "description": q.name_zh,
                                                         "definition": f"urn:zhizhi:quantity:{q.code}"})

    def datastream(self, sid: int, di: int, q: str) -> dict[str, Any]:
        qu = self.s.catalogue.quantities[q]
        d = self.s.devices[di]
        return self._links("Datastreams", sid, {
            "name": f"{d.code}/{q}", "description": qu.name_zh,
            "unitOfMeasurement": {"name": qu.unit, "symbol": qu.unit, "definition": f"urn:zhizhi:unit:{qu.unit}"},
            "observationType": "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"})

    def observation(self, sid: int, t: int, v: float) -> dict[str, Any]:
        from zhizhi.sensing.ingest import ms_to_dt

        iso = ms_to_dt(t).isoformat().replace("+00:00", "Z")
        return self._links("Observations", f"{sid}-{t}", {"phenomenonTime": iso, "resultTime": iso, "result": v})

    # ---------------------------------------------------------------- access
    def _device_by_id(self, key: Any) -> tuple[int, Device]:
        ident = _int(key)
        for i in self._in_scope():
            if self.s.devices[i].id == ident:
                return i, self.s.devices[i]
        raise NotFound(f"实体不存在 / no entity with id {key}")

    def _locations(self) -> dict[int, DeviceLocationRow]:
        """The location rows this caller sees, by id, newest first (one SQL query per request)."""
        if self._rows is None:
            self._rows = {int(r.id): r for r in self.scoped.locations()}
        return self._rows

    def _current(self) -> dict[int, DeviceLocationRow]:
        """Each device's current location row (its newest), by device id."""
        if self._now is None:
            self._now = {}
            for r in self._locations().values():
                if r.device_id is not None:
                    self._now.setdefault(int(r.device_id), r)
        return self._now

    def _location_row(self, key: Any) -> DeviceLocationRow:
        if self._rows is None:  # one entity: one row read, not the whole history of the scope
            try:
                return self.scoped.location(_int(key))
            except NotFound:
                raise NotFound(f"实体不存在 / no entity with id {key}") from None
        row = self._rows.get(_int(key))
        if row is None:
            raise NotFound(f"实体不存在 / no entity with id {key}")
        return row

    def _history_of(self, device_id: int) -> list[DeviceLocationRow]:
        """One device's location rows, newest first (from the request's cache when it holds them all)."""
        if self._rows is None:
            return self.scoped.locations(device_id)
        return [r for r in self._rows.values() if r.device_id == device_id]

    def _current_of(self, device_id: int) -> DeviceLocationRow | None:
        if self._now is None and self._rows is None:
            rows = self.scoped.locations(device_id)
            return rows[0] if rows else None
        return self._current().get(device_id)

    def _device_of(self, row: DeviceLocationRow) -> Device | None:
        if row.device_id is None:
            return None
        if self._by_id is None:
            self._by_id = {d.id: d for d in self.s.devices}
        return self._by_id.get(int(row.device_id))

    def _streams(self) -> list[tuple[int, int, str]]:
        rows = []
        for di in self._in_scope():
            for qi, sid in enumerate(self.s.ds[di].tolist()):
                if sid >= 0:
                    rows.append((sid, di, self.s.engine.quantities[qi]))
        return rows

    def _stream(self, key: Any) -> tuple[int, int, str]:
        sid = _int(key)
        for st in self._streams():
            if st[0] == sid:
                return st
        raise NotFound(f"Datastream {key} 不存在 / not found")

    def collection(self, es: str) -> list[dict[str, Any]]:
        devs = [self.s.devices[i] for i in self._in_scope()]
        if es == "Things":
            return [self.thing(d) for d in devs]
        if es == "Locations":
            return [self.location(r) for r in self._locations().values()]
        if es == "HistoricalLocations":  # newest first
            return [self.historical(r) for r in self._locations().values() if r.device_id is not None]
        if es == "FeaturesOfInterest":
            return [self.feature(d) for d in devs]
        if es == "Sensors":
            return [self.sensor(i) for i in range(len(self.types))]
        if es == "ObservedProperties":
            return [self.observed_property(i) for i in range(len(self.quantities))]
        if es == "Datastreams":
            return [self.datastream(*st) for st in self._streams()]
        if es == "Observations":
            return [self.observation(a, b, c) for a, b, c in self.scoped.recent_observations(OBS_SCAN)]
        raise NotFound(f"未知实体集 {es} / unknown entity set")

    def one(self, es: str, key: Any) -> dict[str, Any]:
        if es in ("Things", "FeaturesOfInterest"):
            _, d = self._device_by_id(key)
            return self.thing(d) if es == "Things" else self.feature(d)
        if es == "Locations":
            return self.location(self._location_row(key))
        if es == "HistoricalLocations":
            row = self._location_row(key)
            if row.device_id is None:  # a Location no Thing has held is no one's history
                raise NotFound(f"实体不存在 / no entity with id {key}")
            return self.historical(row)
        if es in ("Sensors", "ObservedProperties"):
            i = _int(key) - 1
            n = len(self.types) if es == "Sensors" else len(self.quantities)
            if not 0 <= i < n:
                raise NotFound(f"实体不存在 / no entity with id {key}")
            return self.sensor(i) if es == "Sensors" else self.observed_property(i)
        if es == "Datastreams":
            return self.datastream(*self._stream(key))
        if es == "Observations":
            sid, t = _obs_key(key)
            if sid not in {st[0] for st in self._streams()}:  # outside the scope: as unknown
                raise NotFound(f"Observation {key} 不存在 / not found")
            rows = self.s.store.series(sid, t, t, limit=1)
            if not rows:
                raise NotFound(f"Observation {key} 不存在 / not found")
            return self.observation(sid, rows[0][0], rows[0][1])
        raise NotFound(f"未知实体集 {es} / unknown entity set")

    def related(self, es: str, key: Any, nav: str) -> list[dict[str, Any]] | dict[str, Any]:
        """The entities a navigation property leads to."""
        if nav not in NAV.get(es, {}):
            raise NotFound(f"{es} 没有导航属性 {nav} / no navigation property {nav}")
        target, many = NAV[es][nav]
        if es in ("Locations", "HistoricalLocations"):
            row = self._location_row(key)
            holder = self._device_of(row)
            if nav == "Thing":  # HistoricalLocations(x)/Thing: whose position it was
                if holder is None:
                    raise NotFound("实体不存在 / not found")
                out: list[dict[str, Any]] = [self.thing(holder)]
            elif nav == "Things":  # the Thing whose Location this is now (a past position has none)
                cur = self._current_of(int(row.device_id or 0))
                out = [self.thing(holder)] if holder and cur is not None and cur.id == row.id else []
            elif nav == "HistoricalLocations":
                out = [self.historical(row)] if holder else []
            else:  # HistoricalLocations(x)/Locations
                out = [self.location(row)]
        elif es in ("Things", "FeaturesOfInterest"):
            di, d = self._device_by_id(key)
            if target == "Datastreams":
                out = [self.datastream(*st) for st in self._streams() if st[1] == di]
            elif target == "Observations":
                out = []
                for sid, sdi, _ in self._streams():
                    if sdi == di:
                        out.extend(self.observation(sid, t, v) for t, v in self.s.store.series(sid, limit=MAX_TOP))
            elif target == "Locations":
                cur = self._current_of(int(d.id or 0))
                out = [self.location(cur)] if cur is not None else []
            elif target == "HistoricalLocations":
                out = [self.historical(r) for r in self._history_of(int(d.id or 0))]
            else:
                out = [self.one(target, d.id)]
        elif es == "Datastreams":
            sid, di, q = self._stream(key)
            if target == "Observations":
                out = [self.observation(sid, t, v) for t, v in self.s.store.series(sid, limit=OBS_SCAN)]
            elif target == "Things":
                out = [self.thing(self.s.devices[di])]
            elif target == "Sensors":
                out = [self.sensor(self.types.index(self.s.devices[di].type))]
            else:
                out = [self.observed_property(self.quantities.index(q))]
        elif es in ("Sensors", "ObservedProperties"):
            self.one(es, key)  # an unknown id is 404, not an index error
            i = _int(key) - 1
            if es == "Sensors":
                out = [self.datastream(*st) for st in self._streams() if self.s.devices[st[1]].type == self.types[i]]
            else:
                out = [self.datastream(*st) for st in self._streams() if st[2] == self.quantities[i]]
        else:  # Observations
            sid, _ = _obs_key(key)
            _, di, _ = self._stream(sid)
            out = [self.datastream(*self._stream(sid))] if target == "Datastreams" else \
                [self.feature(self.s.devices[di])]
        return out if many else out[0]

    def catalogue_entry(self, es: str, ref: Any) -> str:
        """The device type (Sensors) or quantity (ObservedProperties) a client's reference names: by @iot.id,
        by name, or (quantities) by definition. Sensors and ObservedProperties are the scene catalogue's."""
        codes = self.types if es == "Sensors" else self.quantities
        if isinstance(ref, dict):
            if "@iot.id" in ref:
                i = _int(ref["@iot.id"]) - 1
                if 0 <= i < len(codes):
                    return codes[i]
            for name in (ref.get("name"), str(ref.get("definition") or "").rsplit(":", 1)[-1]):
                if name in codes:
                    return str(name)
        kind = "Sensor" if es == "Sensors" else "ObservedProperty"
        zh = "设备类型" if es == "Sensors" else "监测量"
        raise ValidationFailed(f"未知的 {kind}（{zh}），由场景目录定义 / unknown {kind}: {es} are the catalogue's "
                               f"(ZHIZHI_SENSING_FILE); use one of them", allowed=codes)

    def walk(self, segs: list[tuple[str, Any]]) -> tuple[str, Any, Any]:
        """Follow a resource path as this caller sees it: ("node", entity set, entity | list | None for the whole
        set) or ("property", name, value); `NotFound` for anything unknown or outside the scope."""
        if not segs or segs[0][0] not in SETS:
            raise NotFound(f"未知实体集 {segs[0][0] if segs else ''} / unknown entity set")
        es, key = segs[0]
        cur_set = es
        node: Any = self.one(es, key) if key is not None else None
        for nav, nkey in segs[1:]:
            if node is None:
                raise NotFound("路径无效 / invalid path")
            if nav in NAV[cur_set]:
                target, _ = NAV[cur_set][nav]
                node = self.related(cur_set, node["@iot.id"], nav)
                cur_set = target
                if nkey is not None and isinstance(node, list):
                    node = next((n for n in node if str(n["@iot.id"]) == str(nkey)), None)
                    if node is None:
                        raise NotFound("实体不存在 / not found")
            elif isinstance(node, dict) and nav in node:  # a property, e.g. Things(1)/name
                return "property", nav, node[nav]
            else:
                raise NotFound(f"{cur_set} 没有 {nav} / no property or navigation {nav}")
        return "node", cur_set, node

    # ---------------------------------------------------------------- query options
    def query(self, es: str, items: list[dict[str, Any]], opts: dict[str, str], url: str) -> dict[str, Any]:
        if len(items) > 1 and "Location" in opts.get("$expand", ""):
            self._locations()  # many entities expand positions: read the scope's rows once, not once each
        if "$filter" in opts:
            pred = compile_filter(opts["$filter"])
            items = [e for e in items if pred(e)]
        if "$orderby" in opts:
            items = order(items, opts["$orderby"])
        total = len(items)
        top = min(_int(opts.get("$top", 100)), MAX_TOP)
        skip = _int(opts.get("$skip", 0))
        page = items[skip:skip + top]
        page = [self.shape(es, e, opts) for e in page]
        out: dict[str, Any] = {}
        if opts.get("$count", "false").lower() == "true":
            out["@iot.count"] = total
        if skip + top < total and url:
            nxt = {**opts, "$skip": str(skip + top), "$top": str(top)}
            out["@iot.nextLink"] = f"{url}?{urlencode(nxt)}"
        out["value"] = page
        return out

    def shape(self, es: str, entity: dict[str, Any], opts: dict[str, str]) -> dict[str, Any]:
        e = dict(entity)
        if "$expand" in opts:
            for nav, sub in parse_expand(opts["$expand"]):
                head, _, rest = nav.partition("/")
                if head not in NAV[es]:
                    raise ValidationFailed(f"$expand: {es} 没有 {head} / no navigation property {head}")
                if rest:
                    sub = {**{}, "$expand": rest + (f"({_opts_text(sub)})" if sub else "")}
                target, many = NAV[es][head]
                rel = self.related(es, e["@iot.id"], head)
                if many:
                    assert isinstance(rel, list)
                    res = self.query(target, rel, sub, "")
                    e[head] = res["value"]
                    if "@iot.count" in res:
                        e[f"{head}@iot.count"] = res["@iot.count"]
                else:
                    assert isinstance(rel, dict)
                    e[head] = self.shape(target, rel, sub)
        if "$select" in opts:
            keep = {k.strip() for k in opts["$select"].split(",") if k.strip()}
            keep = {"@iot.id" if k == "id" else "@iot.selfLink" if k == "selfLink" else k for k in keep}
            e = {k: v for k, v in e.items() if k in keep or k.split("@")[0] in keep
                 or (k.split("@")[0] in NAV[es] and k.split("@")[0] in e and "@iot.nav" not in k)}
        return e


def parse_expand(text: str) -> list[tuple[str, dict[str, str]]]:
    """'Datastreams($top=2;$expand=Observations($top=1)),Locations' → [(nav, {options}), …]."""
    out: list[tuple[str, dict[str, str]]] = []
    for part in _split(text, ","):
        part = part.strip()
        if "(" in part and part.endswith(")"):
            nav, inner = part[:part.index("(")], part[part.index("(") + 1:-1]
            opts = {}
            for o in _split(inner, ";"):
                k, _, v = o.partition("=")
                opts[k.strip()] = v.strip()
            out.append((nav.strip(), opts))
        elif part:
            out.append((part, {}))
    return out


def _split(text: str, sep: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", False
    for ch in text:
        if ch == "'":
            quote = not quote
        if not quote:
            depth += ch == "("
            depth -= ch == ")"
        if ch == sep and depth == 0 and not quote:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _opts_text(opts: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in opts.items())


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ValidationFailed(f"应为整数 / not an integer: {v!r}") from None


def _obs_key(key: Any) -> tuple[int, int]:
    try:
        a, b = str(key).split("-", 1)
        return int(a), int(b)
    except ValueError:
        raise NotFound(f"Observation {key} 不存在 / not found") from None


def _parse_path(path: str) -> list[tuple[str, Any]]:
    """'Things(1)/Datastreams' → [('Things', 1), ('Datastreams', None)]."""
    out: list[tuple[str, Any]] = []
    for seg in [p for p in path.split("/") if p]:
        if "(" in seg and seg.endswith(")"):
            name, raw = seg[:seg.index("(")], seg[seg.index("(") + 1:-1]
            key: Any = raw[1:-1] if raw.startswith("'") else _int(raw)
            out.append((name, key))
        else:
            out.append((seg, None))
    return out


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""
    if zz.sensing is None:
        return

    def sta(request: Request, principal: Principal) -> Sta:
        return Sta(zz, str(request.base_url), principal)

    @app.get(ROOT, operation_id="sta_root", tags=["sensorthings"])
    def root(request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/") + ROOT
        return {"value": [{"name": s, "url": f"{base}/{s}"} for s in SETS],
                "serverSettings": {"conformance": [
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/create-update-delete",
                    "http://www.opengis.net/spec/iot_sensing/1.1/req/data-array/data-array"]}}

    @app.post(f"{ROOT}/CreateObservations", operation_id="sta_create_observations", tags=["sensorthings"],
              status_code=201)
    async def create_observations(request: Request, principal: CurrentPrincipal) -> JSONResponse:
        import asyncio

        require(principal, "ingest_observations")
        body = await _json_body(request)
        return JSONResponse(await asyncio.to_thread(_data_array, sta(request, principal), body), status_code=201)

    @app.get(ROOT + "/{path:path}", operation_id="sta_get", tags=["sensorthings"])
    def get(path: str, request: Request, principal: CurrentPrincipal) -> Any:
        api = sta(request, principal)
        segs = _parse_path(path)
        opts = {k: v for k, v in request.query_params.items() if k.startswith("$")}
        value_only = bool(segs) and segs[-1][0] == "$value"
        if value_only:
            segs = segs[:-1]
        walked = api.walk(segs)  # out of scope: 404, whoever asks
        require(principal, "read_sensing")
        if walked[0] == "property":
            _, name, value = walked
            return {name: value} if not value_only else Response(str(value), media_type="text/plain")
        _, cur_set, node = walked
        url = str(request.url).split("?")[0]
        if node is None:
            return api.query(cur_set, api.collection(cur_set), opts, url)
        if isinstance(node, list):
            return api.query(cur_set, node, opts, url)
        return api.shape(cur_set, node, opts)

    @app.post(ROOT + "/{path:path}", operation_id="sta_create", tags=["sensorthings"], status_code=201)
    async def create(path: str, request: Request, principal: CurrentPrincipal) -> JSONResponse:
        import asyncio

        api = sta(request, principal)
        segs = _parse_path(path)
        if not segs or segs[0][0] not in SETS:
            raise NotFound(f"未知实体集 / unknown entity set: {path[:60]}")
        parent = segs if segs[-1][1] is not None else segs[:-1]
        if parent:  # what the path names must exist for the caller before anything else is looked at
            await asyncio.to_thread(api.walk, parent)
        if segs == [("Things", None)]:
            require(principal, "manage_devices")
            body = await _json_body(request)
            entity = await asyncio.to_thread(_create_thing, api, _object(body))
        elif segs in ([("Sensors", None)], [("ObservedProperties", None)]):
            # the catalogue's: a client that creates one it needs gets the existing entry of that name
            require(principal, "manage_devices")
            body = _object(await _json_body(request))
            es = segs[0][0]
            code = api.catalogue_entry(es, {"name": body.get("name"), "definition": body.get("definition")})
            i = (api.types if es == "Sensors" else api.quantities).index(code)
            entity = api.sensor(i) if es == "Sensors" else api.observed_property(i)
        elif segs == [("Datastreams", None)] or (len(segs) == 2 and segs[0][0] == "Things"
                                                  and segs[1] == ("Datastreams", None)):
            require(principal, "manage_devices")
            body = _object(await _json_body(request))
            entity = await asyncio.to_thread(_create_datastream, api, segs[0][1], body)
        elif len(segs) == 2 and segs[0][0] == "Things" and segs[1] == ("Locations", None):
            # a new Location for a Thing (or an existing one linked to it): the device has moved
            require(principal, "manage_devices")
            body = _object(await _json_body(request))
            _, d = api._device_by_id(segs[0][1])
            entity = await asyncio.to_thread(_move_to, api, d, body)
        elif segs == [("Locations", None)]:
            require(principal, "manage_devices")
            body = _object(await _json_body(request))
            entity = await asyncio.to_thread(_create_location, api, body)
        elif segs == [("FeaturesOfInterest", None)]:
            require(principal, "manage_devices")
            body = _object(await _json_body(request))
            entity = await asyncio.to_thread(_feature_for, api, body)
        elif segs[-1] == ("Observations", None) and (len(segs) == 1 or segs[0][0] == "Datastreams"):
            require(principal, "ingest_observations")
            body = await _json_body(request)
            if len(segs) == 2:
                body = {**_object(body), "Datastream": {"@iot.id": segs[0][1]}}
            entity = await asyncio.to_thread(_create_observation, api, body)
        else:
            # a known resource that this server does not create (HistoricalLocations are written by the server at
            # each move; the rest follows from the catalogue or the device): 405, a client error, not a fault
            return JSONResponse({"type": "about:blank", "title": "Method Not Allowed", "status": 405,
                                 "detail": f"创建 {path[:60]} 尚不支持 / creating {path[:60]} is not supported: "
                                           "Things, Locations, FeaturesOfInterest (a device's position), "
                                           "Datastreams, Sensors, ObservedProperties and Observations can be "
                                           "created; HistoricalLocations are recorded at each move"},
                                status_code=405,
                                headers={"Allow": "GET"}, media_type="application/problem+json")
        return JSONResponse(entity, status_code=201, headers={"Location": entity["@iot.selfLink"]})

    @app.put(ROOT + "/{path:path}", operation_id="sta_replace", tags=["sensorthings"])
    async def put(path: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        """PUT (what some clients, FROST's Python client among them, send to update): the entity as the body,
        taken like a PATCH of everything it gives (what the model derives — ids, links — is ignored)."""
        return await patch(path, request, principal)

    @app.patch(ROOT + "/{path:path}", operation_id="sta_update", tags=["sensorthings"])
    async def patch(path: str, request: Request, principal: CurrentPrincipal) -> dict[str, Any]:
        """PATCH with a JSON merge body, or with a JSON Patch (application/json-patch+json: a list of operations,
        applied to the entity as this caller sees it)."""
        import asyncio

        api = sta(request, principal)
        segs = _parse_path(path)
        walked = await asyncio.to_thread(api.walk, segs)  # out of scope or unknown: 404 before the body is read
        editable = ("Things", "Locations", "FeaturesOfInterest", "Observations")
        if len(segs) != 1 or segs[0][0] not in editable or segs[0][1] is None:
            raise ValidationFailed("只能更新 Things、Locations、FeaturesOfInterest、Observations / only Things, "
                                   "Locations, FeaturesOfInterest and Observations can be updated (the rest follows "
                                   "from the catalogue; HistoricalLocations are the record of moves)")
        require(principal, "manage_devices")
        raw = await _json_body(request)
        if "json-patch" in request.headers.get("content-type", ""):
            raw = _json_patch(walked[2], raw)
        body = _object(raw)
        es, key = segs[0]
        if es == "Observations":
            return await asyncio.to_thread(_update_observation, api, key, body)
        if es == "Locations":
            return await asyncio.to_thread(_update_location, api, key, body)
        _, d = api._device_by_id(key)
        if es == "FeaturesOfInterest":
            if "feature" in body:
                lon, lat = _point(body["feature"])
                if (lon, lat) != (d.lon, d.lat):
                    await asyncio.to_thread(api.scoped.move_device, d.code, lon, lat)
            return api.feature(d)
        props = body.get("properties") or {}
        if body.get("Locations"):
            locs = body["Locations"]
            if not isinstance(locs, list) or len(locs) != 1 or not isinstance(locs[0], dict):
                raise ValidationFailed("Thing 只有一个位置：Locations 应为一个元素的数组 / a Thing has one Location: "
                                       "give Locations as an array of one")
            await asyncio.to_thread(_move_to, api, d, locs[0])
        await asyncio.to_thread(functools.partial(
            api.scoped.update_device, d.code, name=body.get("description"), status=props.get("status"),
            department_code=props.get("department_code"), model=props.get("model"),
            rule_overrides=props.get("rule_overrides")))
        return api.thing(zz.sensing.device(d.code))

    @app.delete(ROOT + "/{path:path}", operation_id="sta_delete", tags=["sensorthings"])
    def delete(path: str, request: Request, principal: CurrentPrincipal) -> Response:
        api = sta(request, principal)
        segs = _parse_path(path)
        api.walk(segs)
        if len(segs) != 1 or segs[0][0] not in ("Things", "Observations", "Locations") or segs[0][1] is None:
            raise ValidationFailed("只能删除 Things（停用）、Observations 和未关联的 Locations / only Things "
                                   "(retired), Observations and Locations that no Thing has held can be deleted")
        es, key = segs[0]
        if es == "Observations":
            sid, t = _obs_key(key)
            api.scoped.delete_observation(sid, t)
        elif es == "Locations":
            api.scoped.delete_location(_int(key))
        else:
            _, d = api._device_by_id(key)
            api.scoped.retire_device(d.code)
        return Response(status_code=200)


def _iso(at: Any) -> str | None:
    """A time as ISO 8601 in UTC with milliseconds: one fixed width, so the strings sort as the times do."""
    from datetime import UTC

    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if at else None


def _point(geometry: Any) -> tuple[float, float]:
    """(lon, lat) of a GeoJSON Point, or a clear 400."""
    try:
        if geometry["type"] != "Point":
            raise ValueError
        lon, lat = (float(x) for x in geometry["coordinates"][:2])
        return lon, lat
    except (KeyError, TypeError, ValueError, IndexError):
        raise ValidationFailed("位置应为 GeoJSON Point / the location must be a GeoJSON Point") from None


def _move_to(api: Sta, d: Device, loc: dict[str, Any]) -> dict[str, Any]:
    """Give a Thing a Location: a new one (inline, with a Point) or an existing one by @iot.id. Either is a move
    of the device, recorded as a new HistoricalLocation. A Location no device holds yet becomes this device's;
    one that another device holds (or this one held before) lends its position to a new Location. The Thing's
    own current Location given back unchanged (as a PUT of the whole Thing does) is no move."""
    if "@iot.id" in loc:
        row = api.scoped.location(_int(loc["@iot.id"]))
        current = api._current_of(int(d.id or 0))
        point = _point(loc["location"]) if "location" in loc else (row.lon, row.lat)
        if point != (row.lon, row.lat):
            raise ValidationFailed("按 @iot.id 关联位置时不能同时改其坐标 / a Location linked by @iot.id cannot be "
                                   "changed in the same request: PATCH the Location, or give a new one without id")
        if current is not None and current.id == row.id:
            return api.location(row)  # already there
        new_id = api.scoped.move_device(d.code, row.lon, row.lat,
                                        link=int(row.id) if row.device_id is None else None,
                                        name=row.name, description=row.description)
    else:
        lon, lat = _point(loc.get("location"))
        new_id = api.scoped.move_device(d.code, lon, lat, name=str(loc.get("name") or ""),
                                        description=str(loc.get("description") or ""))
    api._rows = api._now = None
    return api.location(api.scoped.location(new_id))


def _create_location(api: Sta, body: dict[str, Any]) -> dict[str, Any]:
    """POST Locations: stored on its own; with `Things` (one, by @iot.id) it is at once that Thing's Location."""
    things = body.get("Things") or []
    if not isinstance(things, list) or len(things) > 1 or any(not isinstance(t, dict) or "@iot.id" not in t
                                                               for t in things):
        raise ValidationFailed("Location 只能关联一个已有 Thing（按 @iot.id）/ a Location is linked to at most one "
                               "existing Thing, by @iot.id (a device has one position)")
    lon, lat = _point(body.get("location"))
    devices = [api._device_by_id(t["@iot.id"])[1] for t in things]  # unknown or out of scope: 404 first
    row = api.scoped.create_location(lon, lat, str(body.get("name") or ""), str(body.get("description") or ""))
    if devices:
        return _move_to(api, devices[0], {"@iot.id": row.id})
    api._rows = api._now = None
    return api.location(api.scoped.location(int(row.id)))


def _update_location(api: Sta, key: Any, body: dict[str, Any]) -> dict[str, Any]:
    """PATCH Locations(x): a Location no device holds is edited; a device's current Location moves the device
    (the Location keeps its id, the former position is kept as a HistoricalLocation of its own); a device's
    former position is history and is not changed."""
    row = api._location_row(key)
    point = _point(body["location"]) if "location" in body else None
    if row.device_id is None:
        api.scoped.update_location(int(row.id), lon=point[0] if point else None, lat=point[1] if point else None,
                                   name=body.get("name"), description=body.get("description"))
    elif point is not None and point != (row.lon, row.lat):
        d = api._device_of(row)
        current = api._current_of(int(row.device_id))
        if d is None or current is None or current.id != row.id:
            raise ValidationFailed("这是设备以前的位置，属于历史，不能修改 / this is a former position of a device: it "
                                   "is history and cannot be changed")
        api.scoped.move_device(d.code, point[0], point[1], keep_id=True, name=str(body.get("name") or ""),
                               description=str(body.get("description") or ""))
    elif any(body.get(k) not in (None, api.location(row)[k]) for k in ("name", "description")):
        raise ValidationFailed("设备的位置只能通过移动改变 / a device's Location changes only by a move (give a new "
                               "`location`)")
    api._rows = api._now = None
    return api.location(api.scoped.location(int(row.id)))


def _update_observation(api: Sta, key: Any, body: dict[str, Any]) -> dict[str, Any]:
    """PATCH Observations(x): its result. Its time is its identity here, so a new phenomenonTime is refused."""
    sid, t = _obs_key(key)
    if "phenomenonTime" in body:
        from zhizhi.sensing.ingest import _parse_iso

        given = _sta_time(body["phenomenonTime"])
        try:
            same = (given if isinstance(given, int) else int(_parse_iso(given))) == t
        except (TypeError, ValueError, AttributeError):
            same = False
        if not same:
            raise ValidationFailed("读数的时间即其标识，不能修改：请删除后重新创建 / an Observation's "
                                   "phenomenonTime is its identity here: delete it and create a new one")
    unknown = sorted(set(body) - {"result", "phenomenonTime", "resultTime", "@iot.id"})
    if unknown:
        raise ValidationFailed(f"只能更新 result / only the result of an Observation can be updated: {unknown}")
    if "result" in body:
        try:
            value = float(body["result"])
        except (TypeError, ValueError):
            raise ValidationFailed("result 应为数值 / the result must be a number") from None
        api.scoped.update_observation(sid, t, value)
    rows = api.s.store.series(sid, t, t, limit=1)
    if not rows:
        raise NotFound(f"Observation {key} 不存在 / not found")
    return api.observation(sid, rows[0][0], rows[0][1])


def _feature_for(api: Sta, body: dict[str, Any]) -> dict[str, Any]:
    """POST FeaturesOfInterest: here a FeatureOfInterest is a device's position, so a client that creates one
    for a device's readings is given that device's (the one in its scope at that point); anything else is
    refused with the reason."""
    lon, lat = _point(body.get("feature"))
    for i in api._in_scope():
        d = api.s.devices[i]
        if abs(d.lon - lon) < 1e-7 and abs(d.lat - lat) < 1e-7:
            return api.feature(d)
    raise ValidationFailed("此处没有设备：FeatureOfInterest 即设备的位置，随设备登记和移动 / no device stands at "
                           "this point: a FeatureOfInterest here is a device's position; register or move a Thing "
                           "there instead")


def _json_patch(entity: Any, ops: Any) -> dict[str, Any]:
    """Apply a JSON Patch (RFC 6902: add, replace, remove, test) to the entity as the caller sees it; the
    result is then taken as a merge body. A malformed or failing patch is a 422 that says which operation."""
    import copy

    if not isinstance(entity, dict) or not isinstance(ops, list):
        raise ValidationFailed("JSON Patch 应为操作数组 / a JSON Patch is an array of operations")
    doc = copy.deepcopy(entity)
    for n, op in enumerate(ops):
        try:
            kind, parts = op["op"], [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
            parent: Any = doc
            for p in parts[:-1]:
                parent = parent[int(p)] if isinstance(parent, list) else parent[p]
            last: Any = parts[-1]
            if isinstance(parent, list):
                last = len(parent) if last == "-" else int(last)
            if kind == "test":
                if parent[last] != op["value"]:
                    raise ValidationFailed(f"JSON Patch 第 {n} 项 test 不成立 / operation {n}: test failed")
            elif kind == "remove":
                del parent[last]
            elif kind in ("add", "replace"):
                if isinstance(parent, list) and kind == "add":
                    parent.insert(last, op["value"])
                else:
                    parent[last] = op["value"]
            else:
                raise ValidationFailed(f"不支持的 JSON Patch 操作 {kind!r} / unsupported operation {kind!r}: use add, "
                                       "replace, remove or test")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise ValidationFailed(f"JSON Patch 第 {n} 项无效 / operation {n} is invalid or its path does not "
                                   "exist") from None
    return {k: v for k, v in doc.items() if "@iot." not in k}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed("请求体应为 JSON 对象 / the body must be a JSON object")
    return body


def _create_thing(api: Sta, body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties") or {}
    locs = body.get("Locations") or []
    try:
        lon, lat = locs[0]["location"]["coordinates"][:2]
    except (IndexError, KeyError, TypeError):
        raise ValidationFailed("Thing 需要一个 Point 位置 / a Thing needs one Location with a GeoJSON Point") from None
    kind = str(props.get("type") or _type_of_datastreams(api, body.get("Datastreams")) or "")
    scene = str(props.get("scene") or _only_scene(api, kind) or "")
    device = Device(code=str(body.get("name", "")), type=kind, scene=scene,
                    lon=float(lon), lat=float(lat), model=str(props.get("model", "")),
                    name=str(body.get("description", "")), department_code=props.get("department_code"))
    (result,) = api.scoped.register([device])
    if isinstance(result, DomainError):
        raise result
    return api.thing(result)


def _type_of_datastreams(api: Sta, streams: Any) -> str | None:
    """A standard client's deep insert names no device type: it follows from the Datastreams' Sensor."""
    if not isinstance(streams, list):
        return None
    kinds = {api.catalogue_entry("Sensors", ds.get("Sensor")) for ds in streams if isinstance(ds, dict)}
    if len(kinds) != 1:
        raise ValidationFailed("Thing 的 Datastreams 须指向同一个 Sensor（设备类型）/ the Datastreams of a Thing "
                               "must share one Sensor (its device type)", allowed=api.types)
    kind = kinds.pop()
    measured = set(api.s.catalogue.device_types[kind].quantities)
    for ds in streams:
        q = api.catalogue_entry("ObservedProperties", ds.get("ObservedProperty"))
        if q not in measured:
            raise ValidationFailed(f"设备类型 {kind} 不测量 {q} / a {kind} does not measure {q}",
                                   allowed=sorted(measured))
    return kind


def _only_scene(api: Sta, kind: str) -> str | None:
    """The scene of a device type when the catalogue has exactly one for it (else the client must name it)."""
    scenes = {r.scene for r in api.s.catalogue.rules if r.device_type == kind}
    return scenes.pop() if len(scenes) == 1 else None


def _create_datastream(api: Sta, thing_id: Any, body: dict[str, Any]) -> dict[str, Any]:
    """A Datastream of a Thing: its device type decides which exist, so this links the client to the existing
    one for the ObservedProperty (and checks the Sensor), or says why there is none."""
    if thing_id is None:
        thing_id = (body.get("Thing") or {}).get("@iot.id") if isinstance(body.get("Thing"), dict) else None
    if thing_id is None:
        raise ValidationFailed("Datastream 需要 Thing / a Datastream needs its Thing (by @iot.id)")
    di, d = api._device_by_id(thing_id)
    q = api.catalogue_entry("ObservedProperties", body.get("ObservedProperty"))
    if body.get("Sensor") is not None and api.catalogue_entry("Sensors", body["Sensor"]) != d.type:
        raise ValidationFailed(f"Thing {thing_id} 的 Sensor 是 {d.type} / the Thing's Sensor is {d.type}")
    sid = int(api.s.ds[di, api.s.qindex[q]])
    if sid < 0:
        raise ValidationFailed(f"设备类型 {d.type} 不测量 {q} / a {d.type} does not measure {q}",
                               allowed=list(api.s.catalogue.device_types[d.type].quantities))
    return api.datastream(sid, di, q)


def _reading(api: Sta, sid: int, time: Any, result: Any) -> dict[str, Any]:
    _, di, q = api._stream(sid)
    return {"device": api.s.devices[di].code, "quantity": q, "value": result, "time": _sta_time(time)}


def _sta_time(value: Any) -> Any:
    return value.split("/")[0] if isinstance(value, str) else value


def _create_observation(api: Sta, body: dict[str, Any]) -> dict[str, Any]:
    ds = (body.get("Datastream") or {}).get("@iot.id")
    if ds is None:
        raise ValidationFailed("Observation 需要 Datastream / an Observation needs its Datastream")
    from zhizhi.sensing.ingest import dt_to_ms

    reading = _reading(api, _int(ds), body.get("phenomenonTime"), body.get("result"))
    _check_feature(api, _int(ds), body.get("FeatureOfInterest"))
    if reading["time"] is None:
        reading["time"] = dt_to_ms(api.s.ctx.clock.now())
    report = api.scoped.ingest([reading])
    if report.accepted != 1:
        e = report.errors[0] if report.errors else {"reason": "refused", "detail": ""}
        raise ValidationFailed(f"读数被拒绝 / observation refused: {e['reason']} {e.get('detail', '')}",
                               reason=e["reason"])
    from zhizhi.sensing.ingest import _parse_iso

    t = reading["time"] if isinstance(reading["time"], int) else _parse_iso(reading["time"])
    return api.observation(_int(ds), int(t), float(reading["value"]))


def _check_feature(api: Sta, sid: int, foi: Any) -> None:
    """An Observation's FeatureOfInterest is its device's position: one given with it (by @iot.id, or inline)
    must be that one, else the reading is refused with the reason (it is never silently re-pointed)."""
    if foi is None:
        return
    _, di, _ = api._stream(sid)
    d = api.s.devices[di]
    if not isinstance(foi, dict):
        raise ValidationFailed("FeatureOfInterest 应为对象 / the FeatureOfInterest must be an object")
    if "@iot.id" in foi and "feature" not in foi:
        if str(foi["@iot.id"]) != str(d.id):
            raise ValidationFailed(f"读数的 FeatureOfInterest 即设备 {d.code} 的位置（{d.id}）/ the "
                                   "FeatureOfInterest of this Datastream's readings is its device's position, "
                                   f"FeaturesOfInterest({d.id})")
        return
    lon, lat = _point(foi.get("feature"))
    if abs(d.lon - lon) > 1e-7 or abs(d.lat - lat) > 1e-7:
        raise ValidationFailed(f"FeatureOfInterest 与设备 {d.code} 的位置不同：请先移动设备 / the FeatureOfInterest "
                               "differs from the device's position: move the Thing first")


def _data_array(api: Sta, body: list[dict[str, Any]]) -> list[str]:
    """The dataArray extension: one answer per row, a selfLink or 'error'."""
    from zhizhi.sensing.ingest import _parse_iso

    if not isinstance(body, list):
        raise ValidationFailed("CreateObservations 需要数组 / the body must be an array")
    readings: list[dict[str, Any]] = []
    meta: list[tuple[int, Any] | None] = []
    for block in body:
        sid = _int((block.get("Datastream") or {}).get("@iot.id"))
        comps: list[str] = block.get("components") or []
        ti = comps.index("phenomenonTime") if "phenomenonTime" in comps else None
        ri = comps.index("result") if "result" in comps else None
        for row in block.get("dataArray") or []:
            try:
                if ri is None:
                    raise ValueError
                r = _reading(api, sid, row[ti] if ti is not None else None, row[ri])
                readings.append(r)
                meta.append((sid, r["time"]))
            except (ValueError, IndexError, TypeError, DomainError):
                meta.append(None)
    report = api.scoped.ingest(readings)
    refused = {e["index"] for e in report.errors}
    out: list[str] = []
    k = 0
    for m in meta:
        if m is None:
            out.append("error")
            continue
        if k in refused:
            out.append("error")
        else:
            sid, t = m
            ms = t if isinstance(t, int) else _parse_iso(t)
            out.append(f"{api.base}/Observations('{sid}-{ms}')")
        k += 1
    return out


async def _json_body(request: Request) -> Any:
    """The request's JSON, or a clear 400 problem when it is not JSON (never a server error)."""
    import json

    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"请求体不是合法的 JSON / the body is not valid JSON: {exc}") from None
