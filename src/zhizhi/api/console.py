"""The operations console (一屏掌控): static pages, front-end libraries, photo uploads and live updates.

The console is plain HTML/CSS/ES modules under `zhizhi/web/`, served by zhizhi itself so that it works with
no internet: third-party libraries (ECharts) are installed at setup by `npm ci` into `node_modules/` and served
from there under `/console/vendor/` — never from a CDN and never copied into the repository.

Live updates: the `LiveHub` reads the store's live feed (the timeline and the alarm steps, by id) while a screen
is open and forwards case and alarm changes to every open screen over server-sent events at `GET /api/v1/stream`.
Reading the store rather than only this process's message bus means that changes made by other processes (the
MQTT consumer, imports from the CLI, other server workers) show too; the bus only wakes the hub early so that
this process's own changes show at once. The hub loads a short summary of each changed case once (not once per
screen) and fans it out to each screen's asyncio queue. With no screen open, nothing is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Header, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from zhizhi.adapters.live_feed import AlarmEntry, CaseEntry, LiveFeed
from zhizhi.api.deps import CurrentPrincipal, declare_public
from zhizhi.api.problems import jsonable
from zhizhi.domain.access import Principal, may
from zhizhi.domain.errors import NotFound, ValidationFailed

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
#: Libraries the console may load, each a file inside node_modules (the only ones served from there).
VENDOR_FILES = {
    "echarts.esm.min.mjs": "echarts/dist/echarts.esm.min.mjs",
    "echarts.min.js": "echarts/dist/echarts.min.js",
}
UPLOAD_TYPES = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif"}
HEARTBEAT_S = 15.0
#: Everything from zhizhi itself; inline styles only because ECharts positions its tooltips with them.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
#: After the last screen leaves, events are still kept this long so that a screen reconnecting (a reload, a
#: network blip) gets what it missed through Last-Event-ID.
REPLAY_GRACE_S = 120.0


def node_modules_dirs(data_dir: Path) -> list[Path]:
    """Where `npm ci` may have put the libraries: $ZHIZHI_NODE_MODULES, the source checkout, the data dir."""
    dirs = []
    if os.environ.get("ZHIZHI_NODE_MODULES"):
        dirs.append(Path(os.environ["ZHIZHI_NODE_MODULES"]))
    dirs.append(Path(__file__).resolve().parents[3] / "node_modules")  # repository root (editable install)
    dirs.append(Path.cwd() / "node_modules")
    dirs.append(data_dir / "node_modules")
    return dirs


def find_vendor_file(name: str, data_dir: Path) -> Path | None:
    rel = VENDOR_FILES.get(name)
    if rel is None:
        return None
    for base in node_modules_dirs(data_dir):
        if (base / rel).is_file():
            return base / rel
    return None


# ------------------------------------------------------------------------------------------ live hub
#: Timeline actions that screens know by a name of their own; every other entry is a `CaseChanged`.
CASE_EVENT_TYPES = {
    "report": "CaseReported", "register": "CaseRegistered", "dispatch": "CaseDispatched",
    "return": "CaseReturned", "escalate": "CaseEscalated", "supervise": "CaseSupervised",
    "overdue": "CaseOverdue", "merge": "CaseMerged", "whistle": "CaseWhistled", "close": "CaseClosed",
}
ALARM_EVENT_TYPES = {"raised": "AlarmRaised", "acknowledged": "AlarmAcknowledged", "cleared": "AlarmCleared"}


class LiveHub:
    """Fans case and alarm changes out to every connected screen (server-sent events).

    The source is the store's live feed (`zhizhi.adapters.live_feed`): the timeline and the alarm steps, read
    by id. So a change made by any process — this server, another worker, the MQTT consumer, a CLI import —
    reaches every screen. While a screen is open the hub thread reads the feed every `poll_s` seconds; a change
    made in this process wakes it at once (the bus calls `publish` after the commit), so local changes show
    without waiting for the next poll. With no screen open (and past the reconnect grace) nothing is read.
    """

    def __init__(self, zz: Zhizhi, history: int = 200, poll_s: float = 0.25) -> None:
        self.zz = zz
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._clients: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[tuple[int, str, str]]]] = set()
        self._lock = threading.Lock()
        self._history: deque[tuple[int, str, str]] = deque(maxlen=history)  # replay after a reconnect
        self._seq = 0
        self._feed: LiveFeed | None = None  # opened when a screen connects; dropped when nobody watches
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._idle_since = float("-inf")  # when the last screen left

    def _watched(self) -> bool:
        return bool(self._clients) or time.monotonic() - self._idle_since <= REPLAY_GRACE_S

    # -- called by the bus, on whatever thread handled the command (after its commit)
    def publish(self, event: Any) -> None:
        name = type(event).__name__
        if (name.startswith("Case") or name.startswith("Alarm")) and self._feed is not None:
            self._wake.set()

    # -- screens
    def subscribe(self) -> asyncio.Queue[tuple[int, str, str]]:
        q: asyncio.Queue[tuple[int, str, str]] = asyncio.Queue(maxsize=1000)
        with self._lock:
            if self._feed is None:  # from now on: what happened before this screen opened is not news
                self._feed = LiveFeed(self.zz.engine)
            self._clients.add((asyncio.get_running_loop(), q))
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="zhizhi-live-hub", daemon=True)
                self._thread.start()
        self._wake.set()
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[int, str, str]]) -> None:
        with self._lock:
            self._clients = {(lp, cq) for lp, cq in self._clients if cq is not q}
            if not self._clients:
                self._idle_since = time.monotonic()

    def since(self, last_id: int) -> list[tuple[int, str, str]]:
        with self._lock:
            return [m for m in self._history if m[0] > last_id]

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # -- the hub thread
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            with self._lock:
                if not self._watched():  # nobody is watching: stop reading until a screen connects
                    self._feed = None
                    self._thread = None
                    return
                feed = self._feed
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if feed is None or self._stop.is_set():
                continue
            try:
                messages = self._messages(*feed.read())
                failures = 0
            except Exception:
                failures += 1
                if failures == 1:  # once per outage, not four times a second
                    log.exception("live hub could not read the feed; retrying")
                self._stop.wait(min(30.0, self.poll_s * 2 ** failures))
                continue
            for kind, data in messages:
                self._broadcast(kind, data)

    def _messages(self, cases: list[CaseEntry], alarms: list[AlarmEntry]) -> list[tuple[str, str]]:
        summaries = self._case_summaries(sorted({c.case_id for c in cases})) if cases else {}
        out = []
        for c in cases:
            name = CASE_EVENT_TYPES.get(c.action, "CaseChanged")
            if c.action == "verify" and c.to_state == "closed":
                name = "CaseClosed"
            payload = {"type": name, "case_id": c.case_id, "action": c.action, "state": c.to_state,
                       "at": jsonable(c.at), "entry_id": c.id, "case": summaries.get(c.case_id)}
            out.append(("case", json.dumps(payload, ensure_ascii=False)))
        for a in alarms:
            payload = {"type": ALARM_EVENT_TYPES[a.action], **{k: jsonable(v) for k, v in _fields(a).items()
                                                                if k not in {"id", "action"}},
                       "step_id": a.id, "area_codes": self._area_codes(a.grid_code)}
            out.append(("alarm", json.dumps(payload, ensure_ascii=False)))
        return out

    def _area_codes(self, grid_code: str | None) -> list[str]:
        """The grid and every place above it: what a screen's scope is checked against."""
        hierarchy = getattr(self.zz.gazetteer, "hierarchy", None)
        if not grid_code:
            return []
        if hierarchy is None or grid_code not in hierarchy:
            return [grid_code]
        return [a.code for a in hierarchy.ancestors(grid_code)] + [grid_code]

    def _case_summaries(self, case_ids: list[int]) -> dict[int, dict[str, Any]]:
        with self.zz.uow() as uow:
            cases = uow.cases.get_many(case_ids)
        now = self.zz.clock.now()
        out = {}
        for c in cases:
            loc = c.location
            out[int(c.id or 0)] = {
                "id": c.id, "title": c.title, "state": c.state.value, "state_label": c.state.label_zh,
                "source": c.source, "category_code": c.category_code, "department_code": c.department_code,
                "level": c.level.name.lower() if c.level is not None else None,
                "lon": loc.lon, "lat": loc.lat, "city": loc.city, "district": loc.district, "street": loc.street,
                "community": loc.community, "grid": loc.grid,
                "reported_at": c.reported_at.isoformat(), "due_at": c.due_at.isoformat() if c.due_at else None,
                "overdue": c.is_overdue(now),
            }
        return out

    def _broadcast(self, kind: str, data: str) -> None:
        with self._lock:
            self._seq += 1
            msg = (self._seq, kind, data)
            self._history.append(msg)
            clients = list(self._clients)
        for loop, q in clients:
            with contextlib.suppress(RuntimeError):  # the screen's loop has closed
                loop.call_soon_threadsafe(_offer, q, msg)


def _audit_upload(zz: Zhizhi, principal: Principal, name: str, size: int) -> None:
    from zhizhi.adapters import audit_log

    with zz.uow() as uow:
        audit_log.append(uow.session, principal, "upload.create", f"upload:{name}", {"bytes": size},
                         at=zz.clock.now())
        uow.session.commit()


def _offer(q: asyncio.Queue[tuple[int, str, str]], msg: tuple[int, str, str]) -> None:
    with contextlib.suppress(asyncio.QueueFull):  # a stalled screen loses live items, never blocks the hub
        q.put_nowait(msg)


def _fields(event: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(event):
        return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return dict(getattr(event, "__dict__", {}))


def visible_to(principal: Principal, kind: str, data: str) -> bool:
    """Whether a screen of `principal` may see this event (分权分域): cases inside its places or departments.

    A principal without places and departments sees the whole city, if its role may read cases (case events) or
    perception (alarm events) at all: a citizen's or an integrator's screen gets neither. Alarms are checked by
    their grid and the places above it (`area_codes`, added by the hub) and by the device's owner department.
    """
    if not may(principal, "read_sensing" if kind == "alarm" else "read_cases"):
        return False
    if not principal.places and not principal.departments:
        return True
    payload = json.loads(data)
    if kind == "alarm":  # as the sensing scope: the device's grid under a place, and its owner a department
        codes = set(payload.get("area_codes") or [payload.get("grid_code")]) - {None}
        in_places = not principal.places or bool(codes.intersection(principal.places))
        return in_places and (not principal.departments or payload.get("department_code") in principal.departments)
    case = payload.get("case") or {}
    codes = {case.get(k) for k in ("city", "district", "street", "community", "grid")} - {None}
    return bool(codes.intersection(principal.places)) or case.get("department_code") in principal.departments


def sse(seq: int, kind: str, data: str) -> str:
    """One server-sent event (data lines may not contain a raw newline; JSON from json.dumps has none)."""
    return f"id: {seq}\nevent: {kind}\ndata: {data}\n\n"


# ------------------------------------------------------------------------------------------ routes
def install(app: FastAPI, zz: Zhizhi) -> None:
    """The console at /console/, its libraries, photo uploads and the live stream."""
    hub = LiveHub(zz)
    zz.bus.listen(hub.publish)
    app.state.live = hub
    uploads = zz.settings.data_dir / "uploads"
    # The console's own pages and the libraries installed at setup hold no data: anyone may load them.
    declare_public("/console", "/console/vendor/{name}")

    @app.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @app.get("/console/vendor/{name}", include_in_schema=False)
    def vendor(name: str) -> FileResponse:
        path = find_vendor_file(name, zz.settings.data_dir)
        if path is None:
            raise NotFound(f"前端库 {name} 未安装：请运行 `npm ci`（make demo / make test 会运行）/ "
                           f"front-end library {name} not installed: run `npm ci`")
        media = "text/javascript" if name.endswith((".js", ".mjs")) else None
        return FileResponse(path, media_type=media, headers={"cache-control": "public, max-age=3600"})

    app.mount("/console", StaticFiles(directory=WEB_DIR, html=True), name="console")

    @app.middleware("http")
    async def console_headers(request: Request, call_next: Any) -> Response:
        """The console may load nothing from elsewhere: the browser enforces it too (Content-Security-Policy)."""
        response: Response = await call_next(request)
        if request.url.path.startswith("/console"):
            response.headers.setdefault("content-security-policy", CSP)
            response.headers.setdefault("x-content-type-options", "nosniff")
            response.headers.setdefault("referrer-policy", "no-referrer")
        return response

    @app.post("/api/v1/uploads", operation_id="upload_photo", tags=["console"], status_code=201)
    async def upload(principal: CurrentPrincipal,
                     file: Annotated[UploadFile, File(description="a photo (JPEG, PNG, WebP, GIF)")]
                     ) -> dict[str, Any]:
        """Store a photo by its content hash; the answer's `url` goes into a report's or a feedback's photos."""
        suffix = UPLOAD_TYPES.get((file.content_type or "").lower())
        if suffix is None:
            raise ValidationFailed(f"只接受图片 / only images are accepted, got {file.content_type}",
                                   allowed=sorted(UPLOAD_TYPES))
        data = await file.read(zz.settings.max_body_bytes + 1)
        if len(data) > zz.settings.max_body_bytes or not data:
            raise ValidationFailed(f"图片为空或过大 / empty or larger than {zz.settings.max_body_bytes} bytes")
        name = hashlib.sha256(data).hexdigest()[:32] + suffix
        uploads.mkdir(parents=True, exist_ok=True)
        target = uploads / name
        if not target.exists():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(target)
        # A photo may show people, plates or homes: its upload is a write of personal data, so it is audited.
        await asyncio.to_thread(_audit_upload, zz, principal, name, len(data))
        return {"url": f"/api/v1/uploads/{name}", "bytes": len(data), "by": principal.username}

    @app.get("/api/v1/uploads/{name}", operation_id="get_upload", tags=["console"])
    def get_upload(name: str, principal: CurrentPrincipal) -> FileResponse:
        """A stored photo, to signed-in users only (an <img> sends the login cookie, which serves reads)."""
        path = uploads / name
        if "/" in name or ".." in name or path.suffix not in UPLOAD_TYPES.values() or not path.is_file():
            raise NotFound("没有这张图片 / no such photo")
        return FileResponse(path)

    @app.get("/api/v1/stream", operation_id="live_stream", tags=["console"],
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "server-sent events: `case` and `alarm`, JSON data"}})
    async def stream(request: Request, principal: CurrentPrincipal,
                     last_event_id: Annotated[str | None, Header()] = None) -> Response:
        """Live case and alarm events for open screens; reconnecting with Last-Event-ID replays what was missed."""
        q = hub.subscribe()

        async def events() -> AsyncIterator[str]:
            try:
                yield f"retry: 2000\n: hello {principal.username}\n\n"
                if last_event_id and last_event_id.isdigit():
                    for msg in hub.since(int(last_event_id)):
                        if visible_to(principal, msg[1], msg[2]):
                            yield sse(*msg)
                last_beat = time.monotonic()
                while True:
                    try:
                        batch = [await asyncio.wait_for(q.get(), timeout=1.0)]
                    except TimeoutError:
                        # StreamingResponse already ends the stream when the client leaves; this is for proxies
                        # that keep the connection but lose the screen, checked only when idle (it is not free).
                        if await request.is_disconnected():
                            return
                        if time.monotonic() - last_beat > HEARTBEAT_S:
                            last_beat = time.monotonic()
                            yield ": keep-alive\n\n"
                        continue
                    while len(batch) < 200 and not q.empty():  # a burst goes out in one write, not one per event
                        batch.append(q.get_nowait())
                    chunk = "".join(sse(*m) for m in batch if visible_to(principal, m[1], m[2]))
                    if chunk:
                        yield chunk
            finally:
                hub.unsubscribe(q)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

