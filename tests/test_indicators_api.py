"""Indicator routes over HTTP (in-process), on SQLite and PostgreSQL, over the story of test_indicators.py."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient
from test_indicators import T0, loop_story  # noqa: F401  (the fixture)

from zhizhi.api.app import create_app

PROBLEM = "application/problem+json"


@pytest.fixture
def client(app: Any, loop_story: dict[str, int]) -> Iterator[TestClient]:  # noqa: F811
    api = create_app(app)
    with TestClient(api) as c:
        c.app_state = api  # type: ignore[attr-defined]
        c.headers.update(login_headers(c, app))
        yield c


def by_indicator(body: dict[str, Any], area: str) -> dict[str, dict[str, Any]]:
    return {v["indicator"]: v for v in body["values"] if v["area"] == area}


def test_tree_lists_sectors_facts_and_grains(client: TestClient) -> None:
    body = client.get("/api/v1/indicators/tree").json()
    assert len(body["sectors"]) == 9 and body["sectors"][0]["name_zh"] == "公共安全"
    assert "month" in body["grains"] and any(f["code"] == "response_seconds" for f in body["facts"])
    runway = body["sectors"][0]["children"][0]
    assert runway["kind"] == "runway" and runway["indicators"][0]["formula"]["numerator"] == "reported"


def test_values_for_the_city_and_its_districts(client: TestClient) -> None:
    body = client.get("/api/v1/indicators", params={"grain": "month"}).json()
    assert body["area"]["code"] == "500000" and body["periods"]["month"]["label"] == "2026-11"
    city = by_indicator(body, "500000")
    assert city["loop.intake.reported"]["value"] == 6 and city["loop.intake.reported"]["name_zh"] == "案件上报数"
    assert city["loop.handling.on_time_rate"]["status"] == "red"
    districts = client.get("/api/v1/indicators", params={"level": "区县", "grain": "month",
                                                         "indicator": ["loop.intake.reported"]}).json()
    assert districts["total_areas"] == 2 and districts["level"] == "district"
    assert {v["area"]: v["value"] for v in districts["values"]} == {"500103": 2, "500105": 4}
    page = client.get("/api/v1/indicators", params={"area": "500105", "level": "grid", "limit": 3, "offset": 3,
                                                    "indicator": "loop.intake.reported", "grain": "month"}).json()
    assert page["total_areas"] == 8 and len(page["values"]) == 3
    assert [v["area"] for v in page["values"]] == sorted(v["area"] for v in page["values"])


def test_at_selects_the_period(client: TestClient) -> None:
    body = client.get("/api/v1/indicators", params={"grain": "day", "at": "2026-11-24T12:00:00+08:00",
                                                    "indicator": "loop.intake.reported"}).json()
    assert body["periods"]["day"]["label"] == "2026-11-24" and body["values"][0]["value"] == 0
    local = client.get("/api/v1/indicators", params={"grain": "day", "at": "2026-11-23T05:00:00",
                                                     "indicator": "loop.intake.reported"}).json()
    assert local["periods"]["day"]["label"] == "2026-11-23" and local["values"][0]["value"] == 6


def test_csv_export(client: TestClient) -> None:
    resp = client.get("/api/v1/indicators.csv", params={"level": "street", "grain": "month"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    text = resp.content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    n_ind = len(client.get("/api/v1/indicators").json()["values"])
    assert len(rows) == 4 * n_ind  # four streets × the whole tree
    got = {(r["area_code"], r["indicator"]): r for r in rows}
    row = got[("500105002", "loop.intake.reported")]
    assert (row["value"], row["level"], row["period"], row["status"]) == ("3", "street", "2026-11", "none")
    assert got[("500105002", "urban_management.appearance.closure_rate")]["value"] == ""  # no data, not 0


@pytest.mark.parametrize(("params", "status"), [
    ({"area": "999999"}, 404), ({"grain": "fortnight"}, 422), ({"level": "planet"}, 422),
    ({"area": "500105", "level": "city"}, 422), ({"indicator": "nope"}, 422), ({"limit": 0}, 422),
    ({"at": "yesterday"}, 422),
])
def test_bad_requests_are_problems(client: TestClient, params: dict[str, Any], status: int) -> None:
    for path in ("/api/v1/indicators", "/api/v1/indicators.csv"):
        if path.endswith(".csv") and "limit" in params:
            continue
        resp = client.get(path, params=params)
        assert resp.status_code == status, (path, resp.text)
        assert resp.headers["content-type"].startswith(PROBLEM)


def test_scope_answers_404_outside_the_callers_places(client: TestClient) -> None:
    zz = client.app.state.zz  # type: ignore[attr-defined]
    leader = login_headers(client, zz, "yz", ("leader",), ("500103",))
    mine = client.get("/api/v1/indicators", headers=leader,
                      params={"indicator": "loop.intake.reported", "grain": "month"})
    assert mine.json()["area"]["code"] == "500103" and mine.json()["values"][0]["value"] == 2
    for path in ("/api/v1/indicators", "/api/v1/indicators.csv", "/api/v1/indicators/summary"):
        assert client.get(path, headers=leader, params={"area": "500105"}).status_code == 404
    assert client.get("/api/v1/indicators/summary", headers=leader).json()["area"]["code"] == "500103"


def test_summary_and_single_charts(client: TestClient) -> None:
    s = client.get("/api/v1/indicators/summary", params={"days": 7}).json()
    assert sum(d["reported"] for d in s["trend"]) == 6 and s["on_time"]["rate"] == 50.0
    assert s["overdue"]["count"] == 1 and s["satisfaction"]["mean"] == 3.5
    one = client.get("/api/v1/indicators/summary/trend", params={"days": 7}).json()
    assert one["trend"] == s["trend"] and "by_level" not in one
    assert client.get("/api/v1/indicators/summary/pie").status_code == 404
    assert client.get("/api/v1/indicators/summary", params={"days": 0}).status_code == 422


def test_refresh_pulls_new_cases(client: TestClient) -> None:
    client.get("/api/v1/indicators", params={"indicator": "loop.intake.reported"})
    made = client.post("/api/v1/cases", json={"source": "citizen", "source_id": "api-new", "title": "井盖缺失",
                                              "category_code": "C0101", "lon": 106.52, "lat": 29.52})
    assert made.status_code == 201
    stats = client.post("/api/v1/indicators/refresh").json()
    assert stats["cases_read"] >= 1
    body = client.get("/api/v1/indicators", params={"indicator": "loop.intake.reported", "grain": "month"}).json()
    assert body["values"][0]["value"] == 7


def test_cli_compute_export_and_tree(tmp_path: Any, tiny_city: dict[str, Any], monkeypatch: Any) -> None:
    import json

    from typer.testing import CliRunner

    from zhizhi.cli import app as cli

    monkeypatch.setenv("ZHIZHI_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("ZHIZHI_DATABASE_URL", raising=False)
    city = tmp_path / "city.geojson"
    city.write_text(json.dumps(tiny_city, ensure_ascii=False), encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["places", "load", str(city)]).exit_code == 0
    r = runner.invoke(cli, ["indicators", "compute", "--level", "district", "--grain", "year"])
    assert r.exit_code == 0, r.output
    assert "computed" in r.output and "2 area(s) at level district" in r.output
    out = tmp_path / "x.csv"
    r = runner.invoke(cli, ["indicators", "export", "--level", "street", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert {r["area_code"] for r in rows} == {"500103001", "500103002", "500105001", "500105002"}
    assert {r["value"] for r in rows if r["indicator"] == "loop.intake.reported"} == {"0"}
    r = runner.invoke(cli, ["indicators", "tree"])
    assert r.exit_code == 0 and "9 sectors" in r.output and "闭环效能" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('[[sectors]]\ncode = "x"\nname_zh = "空"\n', encoding="utf-8")
    r = runner.invoke(cli, ["indicators", "tree", "--tree", str(bad)])
    assert r.exit_code == 1 and "holds no indicators" in r.output
    r = runner.invoke(cli, ["indicators", "compute", "--area", "999"])
    assert r.exit_code == 1
