"""Commands for: City vital signs (体征指标): compute and export."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

indicators_app = typer.Typer(help="City vital signs (体征指标): compute and export.", no_args_is_help=True)

# Sub-command groups this module adds to `zhizhi`, by name.
COMMANDS: dict[str, typer.Typer] = {"indicators": indicators_app}

TreeOpt = Annotated[Path | None, typer.Option("--tree", help="indicator tree TOML (default: the packaged one)")]
AreaOpt = Annotated[str | None, typer.Option(help="place code (default: the city)")]
LevelOpt = Annotated[str | None, typer.Option(help="every area at this level inside --area")]
GrainOpt = Annotated[str | None, typer.Option(help="day|week|month|quarter|year (default: each indicator's own)")]
AtOpt = Annotated[datetime | None, typer.Option(help="a time inside the period (default now, city time)")]


def _service(tree: Path | None) -> Any:
    from zhizhi.analytics.service import IndicatorService
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap

    zz = bootstrap(Settings())
    return IndicatorService.for_app(zz, tree_file=tree)


def _guard(fn: Any) -> Any:
    from zhizhi.domain.errors import DomainError

    try:
        return fn()
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@indicators_app.command("compute")
def compute(tree: TreeOpt = None, area: AreaOpt = None, level: LevelOpt = None, grain: GrainOpt = None,
            at: AtOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Refresh the snapshot from the case store, compute the whole tree, and print the area's values."""
    from zhizhi.domain.access import SYSTEM_PRINCIPAL

    svc = _service(tree)
    t0 = time.perf_counter()
    stats = svc.refresh(force=True)
    t1 = time.perf_counter()
    reading = _guard(lambda: svc.read(SYSTEM_PRINCIPAL, area=area, level=level, grain=grain, at=at))
    t2 = time.perf_counter()
    if as_json:
        print(json.dumps([{k: v for k, v in r.items()} for r in reading.rows], ensure_ascii=False))
        return
    typer.echo(f"snapshot: {stats.cases_read} cases read, {stats.events_read} timeline entries, "
               f"alarms: {'none (no sensing_alarms table)' if stats.alarms is None else stats.alarms} "
               f"({t1 - t0:.2f} s)")
    periods = ", ".join(f"{g.value} {p.label}" for g, p in reading.periods.items())
    typer.echo(f"computed {len(reading.rows)} values for {reading.total_areas} area(s) at level "
               f"{reading.level.name.lower()} in {reading.area.name} ({periods}) in {t2 - t1:.2f} s")
    from rich.console import Console
    from rich.table import Table

    names = {i.code: i for i in svc.tree.indicators()}
    table = Table("area", "indicator", "value", "unit", "status")
    for r in reading.rows[:500]:
        ind = names[r["indicator"]]
        value = "—" if r["value"] is None else f"{r['value']:.4g}"
        table.add_row(r["area_name"], ind.name_zh, value, ind.unit, r["status"])
    Console().print(table)


@indicators_app.command("export")
def export(tree: TreeOpt = None, area: AreaOpt = None, level: LevelOpt = None, grain: GrainOpt = None,
           at: AtOpt = None,
           out: Annotated[Path | None, typer.Option("--out", "-o", help="CSV file (default: stdout)")] = None) -> None:
    """Write the values as CSV (UTF-8 with BOM): one row per area and indicator."""
    from zhizhi.domain.access import SYSTEM_PRINCIPAL

    svc = _service(tree)
    svc.refresh(force=True)
    lines = _guard(lambda: list(svc.csv_lines(SYSTEM_PRINCIPAL, area=area, level=level, grain=grain, at=at)))
    if out is None:
        sys.stdout.write("".join(lines).lstrip("\ufeff"))
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(lines), encoding="utf-8")
    typer.echo(f"wrote {len(lines) - 1} rows to {out}")


@indicators_app.command("tree")
def show_tree(tree: TreeOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print (and so validate) the indicator tree."""
    from zhizhi.analytics.service import load_tree
    from zhizhi.domain.indicators import tree_to_dict

    t = _guard(lambda: load_tree(tree))
    if as_json:
        print(json.dumps(tree_to_dict(t), ensure_ascii=False, indent=1))
        return

    def show(node: Any, depth: int) -> None:
        typer.echo(f"{'  ' * depth}{node.name_zh} ({node.code})")
        for ind in node.indicators:
            den = f" / {ind.formula.denominator}" if ind.formula.denominator else ""
            typer.echo(f"{'  ' * (depth + 1)}· {ind.name_zh} [{ind.unit}] = {ind.formula.numerator}{den}"
                       f" × {ind.formula.scale:g}, {ind.grain.value}")
        for child in node.children:
            show(child, depth + 1)

    for sector in t.sectors:
        show(sector, 0)
    typer.echo(f"{len(t.sectors)} sectors, {len(t.indicators())} indicators, {len(t.slices())} slices")
