"""The CLI end to end on a tiny city file: places load/check/locate, cases list/show/act, overdue, init."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from zhizhi.cli import app

runner = CliRunner()


@pytest.fixture
def env(cli_city: Path) -> Path:
    return cli_city


def run(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    return result


def test_places_check_load_and_locate(env: Path) -> None:
    r = run("places", "check", str(env))
    assert r.exit_code == 0, r.output
    assert "no problems" in r.output
    r = run("places", "load", str(env))
    assert r.exit_code == 0 and "stored 31 places" in r.output
    r = run("places", "locate", "106.66", "29.58")
    assert r.exit_code == 0 and "江北区" in r.output and "approximate" in r.output
    r = run("places", "locate", "107.5", "29.58")
    assert r.exit_code == 2 and "江北区" in r.output  # outside: names the nearest unit


def test_places_check_reports_problems_by_feature(env: Path, tiny_city: dict[str, Any], tmp_path: Path) -> None:
    bad = json.loads(json.dumps(tiny_city))
    bad["features"][5]["properties"]["parent_code"] = "999999"
    bad["features"].append(bad["features"][3])  # a duplicate code
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(bad), encoding="utf-8")
    r = run("places", "check", str(path))
    assert r.exit_code == 1
    assert bad["features"][5]["properties"]["code"] in r.output and "duplicate" in r.output
    r = run("places", "load", str(path))
    assert r.exit_code == 1 and "--force" in r.output


def test_cases_from_the_terminal(env: Path) -> None:
    assert run("init", "--places", str(env)).exit_code == 0
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap
    from zhizhi.service.commands import ReportCase

    zz = bootstrap(Settings())
    cid = zz.handle(ReportCase(source="citizen", source_id="cli-1", title="井盖缺失", category_code="C0101",
                               lon=106.55, lat=29.55)).case_id
    zz.engine.dispose()
    r = run("cases", "list", "--json")
    assert r.exit_code == 0 and json.loads(r.output)[0]["id"] == cid
    r = run("cases", "show", str(cid))
    assert r.exit_code == 0 and "dispatch" in r.output and "allowed now" in r.output
    r = run("cases", "act", str(cid), "verify", "--passed")
    assert r.exit_code == 2 and "accept" in r.output  # illegal now, allowed actions listed
    dept = json.loads(run("cases", "list", "--json").output)[0]["department"]
    r = run("cases", "act", str(cid), "accept", "--as-department", dept, "--role", "handler")
    assert r.exit_code == 0 and "handling" in r.output
    r = run("cases", "show", "424242")
    assert r.exit_code == 2
    assert run("overdue").exit_code == 0


def test_locate_a_file_of_points(env: Path, tmp_path: Path) -> None:
    assert run("places", "load", str(env)).exit_code == 0
    points = tmp_path / "pts.csv"
    points.write_text("id,lon,lat\na,106.55,29.55\nb,106.66,29.58\nc,107.5,29.5\n", encoding="utf-8")
    out = tmp_path / "located.csv"
    r = run("places", "locate", "--file", str(points), "--out", str(out))
    assert r.exit_code == 0, r.output
    import csv

    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["district"] for r in rows] == ["500103", "500105", ""]
    assert rows[0]["grid"].startswith("500103") and rows[2]["grid"] == ""


def test_import_hotline_command(env: Path, tmp_path: Path) -> None:
    assert run("places", "load", str(env)).exit_code == 0
    tickets = tmp_path / "tickets.csv"
    tickets.write_text(
        "工单编号,来电时间,标题,诉求内容,地址,电话\n"
        "T1,2026-11-20 09:00:00,路灯不亮,观音桥街道路灯不亮,江北区观音桥街道,13800001111\n"
        "T2,not a time,井盖缺失,井盖没了,渝中区,13800002222\n"
        ",2026-11-20 10:00:00,无编号,内容,渝中区,\n",
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"
    r = run("import-hotline", str(tickets), "--reject-file", str(rejects))
    assert r.exit_code == 0, r.output
    assert "rejected" in r.output or "拒绝" in r.output
    import csv

    bad = list(csv.DictReader(rejects.open(encoding="utf-8-sig")))
    assert [b["row"] for b in bad] == ["2", "3"] and all(b["reason"] for b in bad)
    again = run("import-hotline", str(tickets), "--reject-file", str(rejects))
    assert again.exit_code == 0 and ("已存在 1" in again.output or "1 existing" in again.output)
