"""The command line: `zhizhi serve | demo | init | import-hotline | places … | cases … | overdue`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from zhizhi.config import Settings

app = typer.Typer(help="zhizhi 整体智治 — city operations and governance platform.", no_args_is_help=True)
places_app = typer.Typer(help="The place hierarchy: load, check, locate.", no_args_is_help=True)
cases_app = typer.Typer(help="Cases: list, show, act.", no_args_is_help=True)
app.add_typer(places_app, name="places")
app.add_typer(cases_app, name="cases")


def _add_capability_commands() -> None:
    """Each capability keeps its commands in its own module (`cli_<capability>.py`)."""
    from zhizhi import cli_access, cli_dispatch, cli_indicators, cli_sensing

    for module in (cli_dispatch, cli_sensing, cli_access, cli_indicators):
        for name, sub in module.COMMANDS.items():
            app.add_typer(sub, name=name)


_add_capability_commands()
console = Console()
err = Console(stderr=True)


def _boot(**kw: Any) -> Any:
    from zhizhi.service.bootstrap import bootstrap

    return bootstrap(Settings(), **kw)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@app.command()
def init(
    places: Annotated[Path | None, typer.Option(help="GeoJSON of the place hierarchy (default: demo city)")] = None,
    crs: Annotated[str, typer.Option(help="CRS of the GeoJSON: wgs84|gcj02|bd09")] = "wgs84",
) -> None:
    """Create or upgrade the database and load the places (the demo city unless --places is given)."""
    zz = _boot()
    if places is not None:
        _load_places(zz, places, crs)
    else:
        from zhizhi.demo import ensure_demo_city

        n = ensure_demo_city(zz, zz.settings.data_dir / "cache")
        console.print(f"places: {n}")
    console.print(f"database ready: {zz.engine.url.render_as_string(hide_password=True)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve the API (docs at /docs) with the overdue job and the outbox worker running."""
    import uvicorn

    from zhizhi.api.app import create_app

    zz = _boot()
    console.print(f"zhizhi serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(create_app(zz, background_jobs=True), host=host, port=port, log_level="info")


@app.command()
def demo(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    cases: Annotated[int, typer.Option(help="reports to replay over the day")] = 400,
    seed: Annotated[int, typer.Option()] = 2026,
    serve_api: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the API afterwards")] = True,
) -> None:
    """Create the SQLite database, load Chongqing, replay a day of cases, and serve the API."""
    import time

    from zhizhi.demo import ensure_demo_city, replay_day, simulate_sensing

    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    _ensure_dispatch_models()
    zz = _boot()
    console.print("1/3 demo city: Chongqing (38 real districts; streets, communities and grids generated, "
                  "marked approximate) …")
    n_places = ensure_demo_city(zz, zz.settings.data_dir / "cache")
    console.print(f"    {n_places} places stored ({time.perf_counter() - t0:.1f} s)")
    console.print(f"2/3 replaying a day of {cases} reports through the loop …")
    stats = replay_day(zz, n_cases=cases, seed=seed)
    table = Table("state", "cases")
    for state, n in sorted(stats.by_state.items()):
        table.add_row(state, str(n))
    console.print(table)
    console.print(f"    new this run: {stats.reported} ({time.perf_counter() - t0:.1f} s in all)")
    console.print("    perception: simulated devices of the six scenes, the last two hours with injected incidents …")
    sensed = simulate_sensing(zz)
    console.print(f"    {sensed.devices} devices, {sensed.readings} new readings, {sensed.incidents} incidents → "
                  f"{sensed.alarms} alarms, {sensed.cases} of them with a case")
    _demo_accounts(zz)
    if serve_api:
        import uvicorn

        from zhizhi.api.app import create_app

        console.print(f"3/3 serving http://{host}:{port}  —  API docs: http://{host}:{port}/docs")
        uvicorn.run(create_app(zz, background_jobs=True), host=host, port=port, log_level="warning")


def _demo_accounts(zz: Any) -> None:
    """One account per role (issue 5); passwords from ZHIZHI_DEMO_PASSWORD or random, in var/demo-accounts.txt."""
    import os

    from zhizhi.demo import ensure_demo_accounts
    from zhizhi.domain.errors import DomainError

    out = zz.settings.data_dir / "demo-accounts.txt"
    try:
        made = ensure_demo_accounts(zz, out, os.environ.get("ZHIZHI_DEMO_PASSWORD") or None)
    except DomainError as exc:
        raise _fail(f"demo accounts: {exc.message} (ZHIZHI_DEMO_PASSWORD)") from None
    console.print(f"    demo accounts: {len(made)} new; usernames and passwords in {out}")


def _ensure_dispatch_models() -> None:
    """Smart dispatch: train the models from the shared corpus once, when none exist (about a minute)."""
    from zhizhi.adapters.catalogue_files import load_catalogue
    from zhizhi.dispatch.training import ensure_default_models

    settings = Settings()
    console.print("0/3 smart dispatch: models in the data dir, trained from ../shared/data/complaints if missing …")
    for line in ensure_default_models(settings.models_dir(), load_catalogue(settings.catalogue_dir)):
        console.print(f"    trained {line}")


@app.command("import-hotline")
def import_hotline(
    file: Annotated[Path, typer.Argument(help="CSV or Excel (.xlsx) of 12345 tickets")],
    mapping: Annotated[Path | None, typer.Option(help="TOML/JSON column mapping")] = None,
    reject_file: Annotated[Path | None, typer.Option(
        help="where bad rows go (default: DATA_DIR/rejects/FILE.rejects.csv)")] = None,
    source: Annotated[str, typer.Option()] = "hotline",
) -> None:
    """Import hotline tickets; idempotent by ticket id; every bad row goes to the reject file with its reason."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from zhizhi.adapters.hotline import ColumnMapping
    from zhizhi.adapters.hotline import import_hotline as run_import

    if not file.exists():
        raise _fail(f"no such file: {file}")
    zz = _boot()
    cols = ColumnMapping.from_file(mapping) if mapping else None
    # Not next to the input by default: a hotline export often sits on a read-only share.
    rejects = reject_file or zz.settings.data_dir / "rejects" / f"{file.stem}.rejects.csv"
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("importing", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = run_import(zz, file, mapping=cols, reject_path=rejects, progress=tick, source=source)
    console.print(str(summary))
    if summary.rejected:
        console.print(f"rejected rows written to {rejects}")


# ------------------------------------------------------------------------------------------- places
@places_app.command("load")
def places_load(
    file: Annotated[Path, typer.Argument(help="GeoJSON FeatureCollection with code/name/level/parent_code")],
    crs: Annotated[str, typer.Option()] = "wgs84",
    force: Annotated[bool, typer.Option(help="store even if the check finds problems")] = False,
) -> None:
    """Validate and store a place hierarchy (replaces the current one)."""
    zz = _boot()
    _load_places(zz, file, crs, force=force)


def _load_places(zz: Any, file: Path, crs: str, force: bool = False) -> None:
    from zhizhi.adapters.places_store import save_hierarchy
    from zhizhi.geo.hierarchy import PlaceHierarchy

    try:
        hierarchy = PlaceHierarchy.load_geojson(file, crs=crs)
    except (OSError, ValueError) as exc:
        raise _fail(f"cannot load {file}: {exc}") from None
    problems = hierarchy.validate()
    _print_problems(problems)
    if problems and not force:
        raise _fail(f"{len(problems)} problems; fix them or pass --force")
    n = save_hierarchy(zz.engine, hierarchy)
    console.print(f"stored {n} places")


@places_app.command("check")
def places_check(
    file: Annotated[Path | None, typer.Argument(help="GeoJSON to check (default: the stored places)")] = None,
    crs: Annotated[str, typer.Option()] = "wgs84",
) -> None:
    """Validate a hierarchy: unique codes, children inside parents, no sibling overlaps or gaps."""
    from zhizhi.geo.hierarchy import PlaceHierarchy

    if file is not None:
        hierarchy = PlaceHierarchy.load_geojson(file, crs=crs)
    else:
        from zhizhi.adapters.places_store import load_hierarchy

        hierarchy = load_hierarchy(_boot(gazetteer=_NoGazetteer()).engine)
    problems = hierarchy.validate()
    counts = {lv.name.lower(): len(hierarchy.at_level(lv)) for lv in hierarchy.levels_present()}
    console.print(f"places: {counts}")
    _print_problems(problems)
    if problems:
        raise typer.Exit(1)
    console.print("[green]no problems[/green]")


def _print_problems(problems: list[Any]) -> None:
    for p in problems[:200]:
        err.print(f"  {p.code}: {p.kind}: {p.message}")
    if len(problems) > 200:
        err.print(f"  … and {len(problems) - 200} more")


@places_app.command("locate")
def places_locate(
    lon: Annotated[float | None, typer.Argument()] = None,
    lat: Annotated[float | None, typer.Argument()] = None,
    crs: Annotated[str, typer.Option(help="wgs84|gcj02|bd09")] = "wgs84",
    file: Annotated[Path | None, typer.Option(help="CSV with lon,lat columns: locate every row at once")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write the located CSV (default: stdout)")] = None,
) -> None:
    """Locate one point (LON LAT) or a whole CSV of points (--file) at every level of the hierarchy."""
    from zhizhi.domain.errors import DomainError

    zz = _boot()
    if file is not None:
        _locate_file(zz, file, crs, out)
        return
    if lon is None or lat is None:
        raise _fail("give LON LAT or --file")
    try:
        loc = zz.gazetteer.locate_point(lon, lat, crs)
    except DomainError as exc:
        raise _fail(exc.message, 2) from None
    for level in ("city", "district", "street", "community", "grid"):
        code = getattr(loc, level)
        place = zz.gazetteer.place(code) if code else None
        approx = " (approximate geometry)" if place and place.approximate else ""
        console.print(f"{level:10s} {code or '-':18s} {place.name if place else ''}{approx}")


def _locate_file(zz: Any, file: Path, crs: str, out: Path | None) -> None:
    """Vectorised: one locator call for the whole file; rows outside the city get empty codes."""
    import csv

    import numpy as np

    from zhizhi.domain.places import Level
    from zhizhi.geo.coords import to_wgs84

    with file.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"lon", "lat"} <= set(rows[0]):
        raise _fail("the CSV needs lon and lat columns")
    lon = np.array([float(r["lon"]) for r in rows], dtype=float)
    lat = np.array([float(r["lat"]) for r in rows], dtype=float)
    wlon, wlat = to_wgs84(lon, lat, crs)
    result = zz.gazetteer.locate_many(wlon, wlat)
    levels = [lv for lv in Level]
    codes = {lv: result.codes(lv) for lv in levels}
    fields = [*rows[0].keys(), *(lv.name.lower() for lv in levels)] if rows else ["lon", "lat"]
    sink = out.open("w", encoding="utf-8", newline="") if out else sys.stdout
    try:
        writer = csv.DictWriter(sink, fieldnames=fields)
        writer.writeheader()
        for i, r in enumerate(rows):
            writer.writerow({**r, **{lv.name.lower(): codes[lv][i] or "" for lv in levels}})
    finally:
        if out:
            sink.close()
    found = int(result.found().sum())
    err.print(f"located {found} of {len(rows)} points")


# -------------------------------------------------------------------------------------------- cases
@cases_app.command("list")
def cases_list(
    state: Annotated[list[str] | None, typer.Option(help="filter by state (repeatable)")] = None,
    area: Annotated[str | None, typer.Option(help="place code (any level)")] = None,
    department: Annotated[str | None, typer.Option()] = None,
    overdue: Annotated[bool, typer.Option()] = False,
    limit: Annotated[int, typer.Option()] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List cases, newest first."""
    from zhizhi.adapters.repository import CaseFilter

    zz = _boot(gazetteer=_NoGazetteer())
    flt = CaseFilter(states=state or [], area=area, department=department,
                     overdue_at=zz.clock.now() if overdue else None, limit=limit)
    with zz.uow() as uow:
        cases, total = uow.cases.list(flt)
    if as_json:
        print(json.dumps([{"id": c.id, "state": c.state.value, "title": c.title, "department": c.department_code,
                           "district": c.location.district} for c in cases], ensure_ascii=False))
        return
    table = Table("id", "state", "category", "department", "district", "reported", "title",
                  title=f"{total} cases")
    for c in cases:
        table.add_row(str(c.id), c.state.label_zh, c.category_code or "-", c.department_code or "-",
                      c.location.district or "-", _local(c.reported_at)[5:], c.title[:30])
    console.print(table)


@cases_app.command("show")
def cases_show(case_id: int) -> None:
    """One case with its timeline."""
    zz = _boot(gazetteer=_NoGazetteer())
    with zz.uow() as uow:
        c = uow.cases.get(case_id)
    if c is None:
        raise _fail(f"case {case_id} not found", 2)
    console.print(f"[bold]#{c.id}[/bold] {c.title}  [{c.state.label_zh} / {c.state.value}]")
    console.print(f"source {c.source}:{c.source_id}  category {c.category_code}  department {c.department_code}"
                  f"  level {c.level.name.lower() if c.level is not None else '-'}")
    console.print(f"location {c.location.finest} ({c.location.method})  due {_local(c.due_at)}")
    console.print(f"allowed now: {', '.join(a.value for a in c.allowed_actions())}")
    table = Table("#", "at", "who", "action", "state", "note")
    for e in c.timeline:
        table.add_row(str(e.seq), _local(e.at), f"{e.actor} ({e.role})", e.action,
                      e.to_state.value, e.note[:50])
    console.print(table)


@cases_app.command("act")
def cases_act(
    case_id: int,
    action: str,
    note: Annotated[str, typer.Option()] = "",
    actor: Annotated[str, typer.Option()] = "cli",
    role: Annotated[str, typer.Option()] = "dispatcher",
    as_department: Annotated[str | None, typer.Option(help="act as a handler of this department")] = None,
    department: Annotated[str | None, typer.Option(help="target department (dispatch/reassign)")] = None,
    level: Annotated[str | None, typer.Option()] = None,
    passed: Annotated[bool | None, typer.Option("--passed/--failed")] = None,
    satisfaction: Annotated[int | None, typer.Option()] = None,
    place: Annotated[str | None, typer.Option(help="place code (locate)")] = None,
    category: Annotated[str | None, typer.Option(help="category code (categorise)")] = None,
) -> None:
    """Perform an action on a case (e.g. `zhizhi cases act 12 accept --as-department chengguan`)."""
    from zhizhi.domain.case import Actor
    from zhizhi.domain.errors import DomainError
    from zhizhi.service.commands import ActOnCase

    zz = _boot()
    try:
        case = zz.handle(ActOnCase(case_id=case_id, action=action, actor=Actor(actor, role, as_department),
                                   note=note, department=department, level=level, passed=passed,
                                   satisfaction=satisfaction, place_code=place, category_code=category))
    except DomainError as exc:
        allowed = exc.details.get("allowed")
        raise _fail(exc.message + (f" (allowed now: {allowed})" if allowed is not None else ""), 2) from None
    console.print(f"case {case_id}: {case.state.label_zh} / {case.state.value}")


@app.command()
def overdue() -> None:
    """Run the overdue job once (mark overdue cases, escalate per policy) and deliver notifications."""
    from zhizhi.service.commands import CheckOverdue

    zz = _boot()
    console.print(zz.handle(CheckOverdue()))
    console.print(zz.outbox.deliver_pending())


def _local(moment: Any) -> str:
    """Times are stored in UTC and shown in the city's own zone."""
    from zoneinfo import ZoneInfo

    return moment.astimezone(ZoneInfo(Settings().timezone)).strftime("%Y-%m-%d %H:%M") if moment else "-"


class _NoGazetteer:
    """For commands that never locate: avoids loading tens of thousands of polygons."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("this command does not load the place hierarchy")

    def place(self, code: str) -> None:
        return None


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())
