"""The access commands end to end: first administrator, accounts, API keys, key rotation, audit verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text, update
from typer.testing import CliRunner

from zhizhi.cli import app

runner = CliRunner()
GOOD = "Pass-for-cli-2026"
ID_NUMBER = "11010519491231002X"  # GB 11643's example number


@pytest.fixture
def env(tmp_path: Path, tiny_city: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZHIZHI_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("ZHIZHI_DATABASE_URL", raising=False)
    monkeypatch.delenv("ZHIZHI_DATA_KEYS", raising=False)
    city = tmp_path / "city.geojson"
    city.write_text(json.dumps(tiny_city, ensure_ascii=False), encoding="utf-8")
    assert runner.invoke(app, ["init", "--places", str(city)]).exit_code == 0
    return tmp_path


def run(*args: str, password: str | None = None) -> Any:
    return runner.invoke(app, list(args), env={"ZHIZHI_NEW_PASSWORD": password} if password else None)


def test_create_admin_refuses_weak_passwords(env: Path) -> None:
    for weak in ("admin", "admin123", "password123", "12345678", "changeme"):
        r = run("users", "create-admin", password=weak)
        assert r.exit_code == 1, (weak, r.output)
    r = run("users", "create-admin", password=GOOD)
    assert r.exit_code == 0 and "created administrator admin" in r.output
    r = run("users", "create", "disp1", "--roles", "dispatcher", "--places", "500103001", password=GOOD + "x")
    assert r.exit_code == 0, r.output
    r = run("users", "create", "h1", "--roles", "handler", password=GOOD + "y")
    assert r.exit_code == 1  # a handler needs a department
    listed = run("users", "list").output
    assert "disp1" in listed and "500103001" in listed
    key = run("users", "api-key", "disp1", "--name", "bridge").output.strip()
    assert key.startswith("zz_")
    assert run("users", "disable", "disp1").exit_code == 0
    assert "(disabled)" in run("users", "list").output


def test_audit_verify_and_key_rotation(env: Path) -> None:
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap
    from zhizhi.service.commands import ReportCase

    assert run("users", "create-admin", password=GOOD).exit_code == 0
    zz = bootstrap(Settings())
    cid = zz.handle(ReportCase(source="citizen", source_id="k1", title="噪声扰民", lon=106.52, lat=29.52,
                               reporter_phone="13700001234", reporter_name="李四",
                               reporter_id_number=ID_NUMBER)).case_id
    from zhizhi.domain.access import SYSTEM_PRINCIPAL
    from zhizhi.service import records

    rid, _ = records.upsert(zz, SYSTEM_PRINCIPAL, "person", "R1", "周老伯", "500103001001",
                            fields={"phone": "13500001111", "age": "80"})
    keyfile = env / "var" / "keys" / "data.keys"
    before = [k for k in keyfile.read_text().splitlines() if not k.startswith("#")]
    with zz.engine.connect() as conn:
        old_cipher = conn.execute(text("SELECT reporter_phone FROM cases")).scalar()
        old_id_cipher = conn.execute(text("SELECT reporter_id_number FROM cases")).scalar()
    r = run("keys", "rotate")
    assert r.exit_code == 0 and "re-encrypted 1 cases and 1 records" in r.output, r.output
    after = [k for k in keyfile.read_text().splitlines() if not k.startswith("#")]
    assert len(after) == 1 and after != before and (keyfile.stat().st_mode & 0o777) == 0o600
    zz2 = bootstrap(Settings())
    with zz2.uow() as uow:
        assert uow.cases.get(cid).reporter_phone == "13700001234"  # readable with the new key alone
        assert uow.cases.get(cid).reporter_id_number == ID_NUMBER
    rec = records.get(zz2, SYSTEM_PRINCIPAL, rid, unmask=True)
    assert rec["name"] == "周老伯" and rec["fields"]["phone"] == "13500001111" and rec["fields"]["age"] == "80"
    with zz2.engine.connect() as conn:
        assert conn.execute(text("SELECT reporter_phone FROM cases")).scalar() != old_cipher
        new_id_cipher = conn.execute(text("SELECT reporter_id_number FROM cases")).scalar()
    assert new_id_cipher.startswith("enc1:") and new_id_cipher != old_id_cipher  # the ID number re-encrypted too
    assert "system:keys" in run("audit", "show", "--action", "keys.rotate").output  # the rotation is audited

    r = run("audit", "verify")
    assert r.exit_code == 0 and "intact" in r.output
    from zhizhi.adapters.orm_access import AuditRow

    with zz2.engine.begin() as conn:
        conn.execute(update(AuditRow).where(AuditRow.id == 1).values(detail={"forged": True}))
    r = run("audit", "verify")
    assert r.exit_code == 1 and "TAMPERED" in r.output and "row 1" in r.output
    zz.engine.dispose()
    zz2.engine.dispose()


def test_audit_verify_passes_after_system_writes_and_catches_a_modified_one(env: Path) -> None:
    """Imports, triage, the overdue job and a key rotation write as `system:<job>`; the chain holds."""
    assert run("users", "create-admin", password=GOOD).exit_code == 0
    tickets = env / "tickets.csv"
    tickets.write_text("工单编号,来电时间,诉求内容,经度,纬度,身份证号,类别\n"
                       f"S1,2026-11-20 09:30:00,路口井盖缺失,106.52,29.52,{ID_NUMBER},C0101\n"
                       "S2,2026-11-20 09:40:00,路灯不亮,106.52,29.52,,C0102\n", encoding="utf-8")
    r = run("import-hotline", str(tickets))
    assert r.exit_code == 0 and "2 created" in r.output, r.output
    assert run("overdue").exit_code == 0
    assert run("keys", "rotate").exit_code == 0
    shown = run("audit", "show", "--limit", "100").output
    for who in ("system:import", "system:triage", "system:keys"):
        assert who in shown, who
    r = run("audit", "verify")
    assert r.exit_code == 0 and "intact" in r.output, r.output
    from zhizhi.adapters.orm_access import AuditRow
    from zhizhi.config import Settings
    from zhizhi.service.bootstrap import bootstrap

    zz = bootstrap(Settings())
    with zz.engine.begin() as conn:
        target = conn.execute(text("SELECT min(id) FROM audit_log WHERE username = 'system:import'")).scalar()
        conn.execute(update(AuditRow).where(AuditRow.id == target).values(detail={"source_id": "forged"}))
    zz.engine.dispose()
    r = run("audit", "verify")
    assert r.exit_code == 1 and "TAMPERED" in r.output and f"row {target}" in r.output, r.output


def test_records_import_from_the_command_line(env: Path) -> None:
    path = env / "firms.csv"
    path.write_text("统一社会信用代码,企业名称,社区编码,联系电话,地址,行业\n"
                    "91500103MA0001,山城火锅店,500103001001,023-63881234,民族路9号,餐饮\n"
                    "91500103MA0002,无社区企业,,023-1,x,零售\n", encoding="utf-8")
    r = run("records", "import", str(path), "--kind", "enterprise", "--source", "市场监管局")
    assert r.exit_code == 0 and "created 1" in r.output and "rejected 1" in r.output, r.output
    assert "row 2" in r.output
    r = run("audit", "show", "--action", "record.create")
    assert r.exit_code == 0 and "record.create" in r.output
