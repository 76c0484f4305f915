"""`zhizhi sensing …` end to end on the tiny city: import devices, simulate with incidents and check them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from zhizhi.cli import app

runner = CliRunner()


@pytest.fixture
def env(cli_city: Path) -> Path:
    assert runner.invoke(app, ["places", "load", str(cli_city)]).exit_code == 0
    return cli_city.parent


def test_import_devices_and_list(env: Path) -> None:
    f = env / "d.csv"
    f.write_text("code,type,scene,lon,lat\nG1,water_gauge,waterlogging,106.55,29.55\nG2,water_gauge,x,106.55,29.55\n",
                 encoding="utf-8")
    r = runner.invoke(app, ["sensing", "import-devices", str(f)])
    assert r.exit_code == 0 and "registered: 1" in r.output, r.output
    r = runner.invoke(app, ["sensing", "devices"])
    assert "G1\twater_gauge\twaterlogging\t500103" in r.output


def test_simulate_checks_every_incident_became_an_alarm_and_a_case(env: Path) -> None:
    r = runner.invoke(app, ["sensing", "simulate", "--devices", "18", "--minutes", "130", "--incidents", "1",
                            "--via", "direct", "--batch", "200", "--check", "0.1"])
    assert r.exit_code == 0, r.output
    assert "incidents → alarm and case: 6/6" in r.output
    r = runner.invoke(app, ["sensing", "alarms", "--state", "cleared"])
    assert r.exit_code == 0 and "alarms (cleared)" in r.output


def test_simulate_over_http_posts_with_an_integrators_key(env: Path) -> None:
    """`--via http` goes through the API like any integration: it needs a key, and the API scopes its readings."""
    from http_kit import serving

    from zhizhi.api.app import create_app
    from zhizhi.config import Settings
    from zhizhi.service import accounts
    from zhizhi.service.bootstrap import bootstrap

    r = runner.invoke(app, ["sensing", "simulate", "--devices", "6", "--minutes", "5", "--via", "http"])
    assert r.exit_code == 2 and "--api-key" in r.output
    zz = bootstrap(Settings())
    accounts.create_user(zz, "sim-gateway", "Gateway-pass-2026!", ("integrator",), ("500000",))
    key = accounts.create_api_key(zz, "sim-gateway", "simulator")
    with serving(create_app(zz)) as (base, _):
        r = runner.invoke(app, ["sensing", "simulate", "--devices", "18", "--minutes", "130", "--incidents", "1",
                                "--via", "http", "--url", base, "--api-key", key, "--batch", "2000",
                                "--check", "0.5"])
    zz.engine.dispose()
    assert r.exit_code == 0, r.output
    assert "incidents → alarm and case: 6/6" in r.output


def test_consume_owns_the_partitions_it_is_given_and_refuses_a_bad_list(env: Path) -> None:
    r = runner.invoke(app, ["sensing", "consume", "--partitions", "9-20", "--of", "16"])
    assert r.exit_code == 2 and "partition out of range" in r.output
    r = runner.invoke(app, ["sensing", "consume", "--partitions", "0-1,3", "--of", "4", "--seconds", "1"])
    assert r.exit_code == 0, r.output
    assert "in partitions [0, 1, 3] of 4" in r.output and "readings accepted: 0" in r.output
