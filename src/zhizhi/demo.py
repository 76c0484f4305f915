"""The demo: Chongqing as the demo city and a realistic day of cases replayed through the whole loop.

Reports arrive over the day from citizens, the 12345 hotline and grid workers,
at points drawn inside the grids (weighted by population) with texts generated
from the catalogue. Each case is then taken as far along the loop as a real
day would take it, so the console shows every state: waiting for location,
waiting for dispatch, dispatched, handling, suspended, waiting for verification,
closed, evaluated, rejected — with returns, escalations, supervision and
overdue cases among them. Everything is generated here, seeded, from the
project's own catalogue; no real message is copied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from zhizhi.domain.case import Actor, CaseState
from zhizhi.domain.errors import DomainError
from zhizhi.domain.places import Level
from zhizhi.service.bootstrap import Zhizhi
from zhizhi.service.commands import ActOnCase, CheckOverdue, ReportCase

log = logging.getLogger(__name__)

DISPATCHER = Actor("市运管中心调度员", "dispatcher")
CITIZEN = Actor("市民", "citizen")

_OPENERS = ["", "您好，", "反映一个问题：", "市民来电反映：", "网格巡查发现："]
_WHERE = ["{community}{grid_no}附近", "{street}{community}门口", "{community}小区旁边", "{street}主干道上"]
_URGENCY = ["已经好几天了", "影响居民出行", "存在安全隐患", "晚上尤其严重", "希望尽快处理", "多次反映未解决"]


@dataclass(frozen=True)
class ReplayStats:
    reported: int
    by_state: dict[str, int]


def ensure_demo_city(zz: Zhizhi, cache_dir: Path) -> int:
    """Build (or reuse) the Chongqing demo city and store it as the place hierarchy."""
    from zhizhi.adapters.places_store import count_places, save_hierarchy
    from zhizhi.geo.demo_city import load_or_build_demo_city
    from zhizhi.geo.hierarchy import PlaceHierarchy

    stored = count_places(zz.engine)
    if stored:
        return stored
    path = load_or_build_demo_city(cache_dir)
    hierarchy = PlaceHierarchy.load_geojson(path)
    return save_hierarchy(zz.engine, hierarchy)


def replay_day(zz: Zhizhi, n_cases: int = 400, seed: int = 2026, end: datetime | None = None) -> ReplayStats:
    """Replay the 24 hours before `end` (default: now). Idempotent: a second run adds nothing."""
    rng = np.random.default_rng(seed)
    end = end or zz.clock.now()
    start = end - timedelta(hours=24)
    hierarchy = zz.gazetteer.hierarchy  # type: ignore[attr-defined]
    grids = hierarchy.at_level(Level.GRID)
    if not grids:
        raise RuntimeError("the demo city has no grids")
    pops = np.array([g.population or 1 for g in grids], dtype=float)
    pick = rng.choice(len(grids), size=n_cases, p=pops / pops.sum())
    leaves = zz.catalogue.leaves()
    # Daytime-heavy arrival times.
    hours = np.sort(np.clip(rng.normal(13.0, 4.5, n_cases), 0.0, 23.9))
    outcome = rng.random(n_cases)
    created = 0
    messages = _real_messages()
    for i in range(n_cases):
        grid = grids[int(pick[i])]
        at = start + timedelta(hours=float(hours[i]))
        zz.clock.fixed = at
        category = leaves[int(rng.integers(len(leaves)))]
        lineage = {p.level: p for p in hierarchy.ancestors(grid.code)}
        community = lineage.get(Level.COMMUNITY)
        street = lineage.get(Level.STREET)
        where = _WHERE[int(rng.integers(len(_WHERE)))].format(
            community=community.name if community else "", street=street.name if street else "",
            grid_no=grid.name[-4:] if grid.name else "")
        keyword = category.keywords[int(rng.integers(len(category.keywords)))] if category.keywords \
            else category.name_zh
        description = (_OPENERS[int(rng.integers(len(_OPENERS)))] + where + keyword + "，"
                       + _URGENCY[int(rng.integers(len(_URGENCY)))] + "。")
        source = ("citizen", "hotline", "grid_worker")[int(rng.choice(3, p=[0.35, 0.4, 0.25]))]
        point = _random_point_in(hierarchy.geometry(grid.code), rng)
        kwargs: dict[str, Any] = {"lon": point[0], "lat": point[1]}
        title = f"{category.name_zh}：{where}"
        report_category: str | None = category.code
        if source == "hotline" and messages and outcome[i] >= 0.06:
            # A real citizen message, uncategorised as 12345 tickets arrive: smart dispatch decides
            # or queues it for the dispatcher with its top three suggestions.
            title, description = messages[int(rng.integers(len(messages)))]
            report_category = None
        if outcome[i] < 0.06:
            # A hotline ticket whose address names no place we know: waits for manual location.
            source, title = "hotline", f"{category.name_zh}（来电人未说明具体位置）"
            kwargs = {"address": "来电人未说明具体位置", "lon": None, "lat": None}
            description = _OPENERS[3] + keyword + "，" + _URGENCY[int(rng.integers(len(_URGENCY)))] + "。"
        try:
            result = zz.handle(ReportCase(
                source=source, source_id=f"demo-{seed}-{i:05d}", title=title,
                description=description, category_code=report_category, reported_at=at,
                reporter_phone=f"13{int(rng.integers(100000000, 999999999))}", **kwargs))
        except DomainError as exc:
            log.warning("demo report %d refused: %s", i, exc.message)
            continue
        if result.created:
            created += 1
            _advance(zz, result.case_id, float(outcome[i]), at, end, rng)
    zz.clock.fixed = None
    zz.handle(CheckOverdue(now=end))
    zz.outbox.deliver_pending(limit=10_000)
    with zz.uow() as uow:
        by_state = uow.cases.count_by_state()
    return ReplayStats(created, by_state)


def _advance(zz: Zhizhi, case_id: int, u: float, at: datetime, end: datetime, rng: np.random.Generator) -> None:
    """Take one case as far as its draw says; every step happens at a plausible later time."""
    with zz.uow() as uow:
        case = uow.cases.get(case_id)
    if case is None or case.state is not CaseState.DISPATCHED:
        if case is not None and case.state is CaseState.REPORTED and u < 0.025:
            _act(zz, case_id, "reject", DISPATCHER, _later(at, end, rng, 0.5), note="非本中心受理范围，已告知来电人")
        return
    handler = Actor(f"{case.department_code}经办人", "handler", department=case.department_code)
    t = at
    if u < 0.12:
        return  # still waiting for the department to accept
    if u < 0.17:
        t = _later(t, end, rng, 1.0)
        _act(zz, case_id, "return", handler, t, note="经核实不属于本部门职责，请重新派遣")
        return
    if u < 0.20:
        t = _later(t, end, rng, 1.0)
        _act(zz, case_id, "escalate", DISPATCHER, t, note="涉及多个部门，需上级协调（吹哨）")
        return
    t = _later(t, end, rng, 1.0)
    if not _act(zz, case_id, "accept", handler, t):
        return
    if u < 0.40:
        if u < 0.26:
            _act(zz, case_id, "supervise", DISPATCHER, _later(t, end, rng, 2.0), note="请加快处置进度")
        return  # handling
    if u < 0.44:
        _act(zz, case_id, "suspend", handler, _later(t, end, rng, 1.0), note="等待产权单位确认")
        return
    t = _later(t, end, rng, 3.0)
    if not _act(zz, case_id, "handle", handler, t, note="已到现场处置完毕，附处置后照片",
                photos=("https://demo.invalid/photo/after.jpg",)):
        return
    if u < 0.58:
        return  # waiting for verification
    t = _later(t, end, rng, 1.0)
    if u < 0.63:
        _act(zz, case_id, "verify", DISPATCHER, t, passed=False, note="现场核查未整改到位，返工")
        return
    if not _act(zz, case_id, "verify", DISPATCHER, t, passed=True, note="核查通过，予以结案"):
        return
    if u < 0.80:
        return  # closed
    _act(zz, case_id, "evaluate", CITIZEN, _later(t, end, rng, 1.0),
         satisfaction=int(rng.choice([5, 5, 5, 4, 4, 3, 2])), note="处理及时")


def _act(zz: Zhizhi, case_id: int, action: str, actor: Actor, at: datetime, **kw: Any) -> bool:
    zz.clock.fixed = at  # follow-up steps triggered by events happen at the same moment
    try:
        zz.handle(ActOnCase(case_id=case_id, action=action, actor=actor, at=at, **kw))
    except DomainError as exc:
        log.info("demo: %s on case %d skipped: %s", action, case_id, exc.message)
        return False
    return True


def _later(t: datetime, end: datetime, rng: np.random.Generator, mean_hours: float) -> datetime:
    step = timedelta(hours=float(rng.exponential(mean_hours)) + 0.05)
    return min(t + step, end - timedelta(seconds=1))


def _random_point_in(geom: Any, rng: np.random.Generator) -> tuple[float, float]:
    """Rejection sampling in the bounding box; falls back to a representative point."""
    x0, y0, x1, y1 = geom.bounds
    for _ in range(50):
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        if shapely.contains_xy(geom, x, y):
            return x, y
    p = geom.representative_point()
    return float(p.x), float(p.y)


def ensure_demo_accounts(zz: Zhizhi, out_file: Path, password: str | None = None) -> list[str]:
    """One account per role, scoped to the busiest street of the demo day; passwords never committed.

    With `password` (from ZHIZHI_DEMO_PASSWORD) every account gets it (strength checked);
    otherwise each gets a random one. Names, roles, scopes and passwords are written to
    `out_file` (mode 0600, under var/, which git ignores). Accounts that exist are left alone.
    """
    import os
    import secrets

    from sqlalchemy import func, select

    from zhizhi.adapters.orm import CaseRow
    from zhizhi.service import accounts

    existing = {u.username for u in accounts.list_users(zz)}
    with zz.engine.connect() as conn:
        street, district = conn.execute(
            select(CaseRow.street_code, CaseRow.district_code).where(CaseRow.street_code.is_not(None))
            .group_by(CaseRow.street_code, CaseRow.district_code).order_by(func.count().desc()).limit(1)).first() \
            or (None, None)
        dept = conn.execute(select(CaseRow.department_code).where(CaseRow.street_code == street,
                                                                  CaseRow.department_code.is_not(None))
                            .group_by(CaseRow.department_code).order_by(func.count().desc()).limit(1)).scalar()
    hierarchy = getattr(zz.gazetteer, "hierarchy", None)
    grid = None
    if street and hierarchy is not None:
        communities = hierarchy.children(street)
        grids = hierarchy.children(communities[0].code) if communities else []
        grid = grids[0].code if grids else None
    plan: list[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], str]] = [
        ("demo-admin", ("admin",), (), (), "系统管理员"),
        ("demo-leader", ("leader",), (), (), "分管领导"),
        ("demo-auditor", ("auditor",), (), (), "审计员"),
        ("demo-dispatcher", ("dispatcher",), (), (), "市运管中心调度员"),
    ]
    if street:
        plan.append(("demo-street", ("dispatcher",), (street,), (), "街道调度员"))
    if dept and district:
        plan.append(("demo-handler", ("handler",), (district,), (dept,), "部门处置人员"))
    if grid:
        plan.append(("demo-grid", ("grid_worker",), (grid,), (), "网格员"))
    plan.append(("demo-citizen", ("citizen",), (), (), "市民"))
    lines: list[str] = []
    for username, roles, places, departments, name in plan:
        if username in existing:
            continue
        pw = password or secrets.token_urlsafe(12) + "-Zz9"
        accounts.create_user(zz, username, pw, roles, places, departments, display_name=name)
        lines.append(f"{username}\t{pw}\troles={','.join(roles)}\tplaces={','.join(places) or '-'}\t"
                     f"departments={','.join(departments) or '-'}")
    if "demo-citizen" not in existing:
        key = accounts.create_api_key(zz, "demo-citizen", "open311 demo")
        lines.append(f"open311 api_key (demo-citizen)\t{key}")
    if lines:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write("# zhizhi demo accounts (username, password, scope). Never commit this file.\n")
            f.write("\n".join(lines) + "\n")
    return [line.split("\t")[0] for line in lines]


def _real_messages() -> list[tuple[str, str]]:
    """Real (anonymised) citizen messages from the shared corpus when present, else none."""
    from zhizhi.dispatch.corpus import real_messages
    from zhizhi.geo.demo_city import find_shared_data

    return real_messages(find_shared_data())


@dataclass
class SensingStats:
    devices: int
    readings: int
    incidents: int
    alarms: int
    cases: int


def simulate_sensing(zz: Zhizhi, n_devices: int = 600, minutes: int = 130, per_scene: int = 2,
                     seed: int = 7) -> SensingStats:
    """Simulated devices of the six shipped scenes, the last `minutes` replayed through the real ingest.

    Why in the demo: the big screen, the alarm list and the perception indicators are empty without devices.
    The readings go through the same validation, storage and rules as any batch, and the injected incidents
    (methane, fire, water level, falls, throwing, missed pick-ups) raise alarms that open cases by their scenes'
    policies, so the demo shows the whole perceive → dispatch loop. Re-running adds nothing twice: the devices
    are registered once and repeated readings are refused as duplicates.
    """
    from zhizhi.sensing.ingest import dt_to_ms
    from zhizhi.sensing.simulator import Simulator, make_devices_in_city

    if zz.sensing is None:
        return SensingStats(0, 0, 0, 0, 0)
    devices = make_devices_in_city(zz.gazetteer, n_devices, seed=seed)
    missing = [d for d in devices if d.code not in zz.sensing.index]
    if missing:
        zz.sensing.register(missing)
    sim = Simulator(devices, seed=seed)
    injected = sim.inject(per_scene, start_minute=max(minutes - 128, 1))
    start = dt_to_ms(zz.clock.now()) - minutes * 60_000
    accepted = 0
    for items in sim.minutes(start, minutes, batch_size=5000):
        accepted += zz.sensing.ingest(items).accepted
    alarms, total = zz.sensing.alarms(limit=1000)
    return SensingStats(len(devices), accepted, len(injected), total, sum(1 for a in alarms if a.case_id))
