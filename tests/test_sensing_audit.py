"""Every change made to perception by a person or an integration is in the hash-chained audit log (数据铁笼)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import login_headers
from fastapi.testclient import TestClient

from zhizhi.adapters import audit_log
from zhizhi.api.app import create_app


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(create_app(app)) as c:
        c.headers.update(login_headers(c, app, "ops-admin"))
        yield c


def _audited(app: Any) -> list[tuple[str, str, str]]:
    with app.uow() as uow:
        return [(r.username, r.action, r.target) for r in audit_log.query(uow.session, limit=1000)
                if r.action.startswith(("device.", "alarm.", "observations."))][::-1]


def test_device_alarm_and_reading_writes_are_audited_and_the_chain_holds(client: TestClient, app: Any) -> None:
    when = (app.clock.now() - timedelta(minutes=2)).isoformat()
    r = client.post("/api/v1/devices", json={"code": "M1", "type": "methane_detector", "scene": "septic_tank",
                                             "lon": 106.55, "lat": 29.55})
    assert r.status_code == 201, r.text
    assert client.patch("/api/v1/devices/M1", json={"model": "CH4-2"}).status_code == 200
    r = client.post("/api/v1/observations", json=[{"device": "M1", "quantity": "methane", "value": 30.0,
                                                   "time": when}, {"device": "nope", "quantity": "x", "value": 1}])
    assert r.status_code == 200 and r.json()["accepted"] == 1
    alarm_id = client.get("/api/v1/alarms").json()["items"][0]["id"]
    assert client.post(f"/api/v1/alarms/{alarm_id}/acknowledge", json={"note": "已通知"}).status_code == 200
    assert client.delete("/api/v1/devices/M1").status_code == 200

    got = _audited(app)
    assert ("ops-admin", "device.register", "device:M1") in got
    assert ("ops-admin", "device.update", "device:M1") in got
    assert ("ops-admin", "observations.ingest", "observations") in got
    assert ("ops-admin", "alarm.acknowledge", f"alarm:{alarm_id}") in got
    assert got[-1] == ("ops-admin", "device.retire", "device:M1")
    with app.uow() as uow:
        assert audit_log.verify(uow.session).ok


def test_refused_writes_leave_no_audit_row(client: TestClient, app: Any) -> None:
    r = client.post("/api/v1/observations", json=[{"device": "nope", "quantity": "methane", "value": 1.0}])
    assert r.status_code == 200 and r.json()["accepted"] == 0
    assert client.post("/api/v1/alarms/999/acknowledge").status_code == 404
    assert _audited(app) == []
