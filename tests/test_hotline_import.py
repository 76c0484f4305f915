"""12345 hotline import over real storage (SQLite and PostgreSQL, through the `app` fixture).

Files are written by the tests into tmp_path; the real 2,816-row file is read in place from the
shared data folder (never copied), and that test is skipped only when the folder is absent.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DATA
from sqlalchemy import func, select

from zhizhi.adapters.hotline import ColumnMapping, ImportSummary, detect_encoding, import_hotline
from zhizhi.adapters.orm import CaseRow
from zhizhi.domain.case import CaseState

REAL_FILE = SHARED_DATA / "complaints" / "teddy2020_attachment4_messages_replies.csv"

HEADER = ["工单编号", "来电时间", "标题", "诉求内容", "地址", "经度", "纬度", "电话", "姓名", "类别"]
# (row number in the file, values); the expectation is in the test that uses them.
ROWS: list[list[str]] = [
    ["T1", "2026-11-20 09:30:00", "路口井盖缺失", "解放碑路口井盖没了，很危险", "", "106.52", "29.52",
     "13800000001", "张三", "C0101"],
    ["T2", "2026/11/20 10:00", "", "小区门口路灯不亮了，晚上很黑", "江北区观音桥街道步行街旁", "", "", "", "", ""],
    ["T3", "2026-11-20 11:00:00", "物业管理有问题", "A市A3区某小区物业乱收费", "A市A3区某小区", "", "", "", "", "物业"],
    ["", "2026-11-20 12:00:00", "没有编号", "这一行没有工单编号", "江北区", "", "", "", "", ""],
    ["T5", "昨天下午", "时间不对", "时间写成了文字", "江北区", "", "", "", "", ""],
    ["T6", "2026-11-20 13:00:00", "", "", "江北区", "", "", "", "", ""],
    ["T7", "2026-11-20 14:00:00", "坐标坏了", "坐标不是数字", "", "东经106", "29.5", "", "", ""],
    ["T8", "2026-11-20 15:00:00", "太远了", "这个点在城外", "", "106.9", "29.55", "", "", ""],
    ["", "", "", "", "", "", "", "", "", ""],  # a blank record: skipped, not counted
    ["T10", "2026-11-20T16:00:00+08:00", "井盖松动", "井盖松动有响声", "", "106.66", "29.58", "", "", "窨井盖"],
]
EXPECTED_REJECTS = {  # row number → (source_id, a fragment of the reason)
    4: ("", "missing id"),
    5: ("T5", "unparsable time"),
    6: ("T6", "empty text"),
    7: ("T7", "bad coordinates"),
    8: ("T8", "outside the jurisdiction"),
}


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with path.open("w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rejects(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def case_by_source_id(app: Any, source_id: str, source: str = "hotline") -> Any:
    with app.uow() as uow:
        return uow.cases.get_by_source(source, source_id)


def count_cases(app: Any) -> int:
    with app.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(CaseRow)) or 0)


def assert_adds_up(s: ImportSummary) -> None:
    assert s.rows == s.created + s.existing + s.rejected
    assert s.located + s.unlocated == s.created + s.existing


@pytest.mark.parametrize("batch_size", [500, 1])
def test_csv_good_and_bad_rows(app: Any, tmp_path: Path, batch_size: int) -> None:
    src = write_csv(tmp_path / "tickets.csv", HEADER, ROWS)
    rejects = tmp_path / "out" / "rejects.csv"
    s = import_hotline(app, src, reject_path=rejects, batch_size=batch_size)
    assert (s.rows, s.created, s.existing, s.rejected, s.blank) == (9, 4, 0, 5, 1)
    assert (s.located, s.unlocated) == (3, 1)
    assert_adds_up(s)
    assert "新建 4" in str(s) and "4 created" in str(s)

    got = {int(r["row"]): r for r in read_rejects(rejects)}
    assert set(got) == set(EXPECTED_REJECTS)
    for number, (sid, reason) in EXPECTED_REJECTS.items():
        assert got[number]["source_id"] == sid
        assert reason in got[number]["reason"], got[number]["reason"]
        assert got[number]["诉求内容"] == ROWS[number - 1][3]  # the original columns follow
    assert list(read_rejects(rejects)[0])[:4] == ["row", "source_id", "reason", "工单编号"]

    t1 = case_by_source_id(app, "T1")
    assert t1.state is CaseState.DISPATCHED and t1.category_code == "C0101"
    assert t1.location.grid is not None and t1.reporter_phone == "13800000001" and t1.reporter_name == "张三"
    assert t1.reported_at == datetime(2026, 11, 20, 1, 30, tzinfo=UTC)  # naive times are Beijing time
    t2 = case_by_source_id(app, "T2")
    assert t2.location.street == "500105001" and t2.location.method == "address"
    assert t2.title == t2.description[:60]  # no subject: the title is the start of the text
    t3 = case_by_source_id(app, "T3")  # masked place names: stored, waiting for a person to locate it
    assert t3.state is CaseState.REPORTED and t3.location.finest is None
    t10 = case_by_source_id(app, "T10")
    assert t10.category_code == "C0101" and t10.location.district == "500105"  # category by its name
    assert t10.reported_at == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def test_reimport_creates_nothing(app: Any, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "tickets.csv", HEADER, ROWS)
    first = import_hotline(app, src)
    n = count_cases(app)
    again = import_hotline(app, src, reject_path=tmp_path / "rejects2.csv")
    assert (again.created, again.existing, again.rejected) == (0, first.created, first.rejected)
    assert (again.located, again.unlocated) == (first.located, first.unlocated)
    assert count_cases(app) == n
    per_row = import_hotline(app, src, batch_size=1)
    assert per_row.created == 0 and per_row.existing == first.created


def test_repeated_id_within_one_file_is_one_case(app: Any, tmp_path: Path) -> None:
    rows = [["D1", "2026-11-20 09:00:00", "井盖缺失", "路口井盖缺失", "", "106.52", "29.52", "", "", ""]] * 3
    s = import_hotline(app, write_csv(tmp_path / "dup.csv", HEADER, rows))
    assert (s.created, s.existing) == (1, 2)
    assert count_cases(app) == 1


def test_xlsx_with_native_cells(app: Any, tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["id", "time", "subject", "text", "address", "phone", "category"])
    ws.append([1001.0, datetime(2026, 11, 20, 9, 30), "Street light out", "路灯不亮", "江北区观音桥街道", 13800000002,
               None])
    ws.append([1002, "2026-11-20 10:00:00", "no text", None, None, None, None])  # no address: rejected
    ws.append([None, None, None, None, None, None, None])
    ws.append([1003, "not a time", "x", "y", "江北区", None, None])
    path = tmp_path / "tickets.xlsx"
    wb.save(path)
    rejects = tmp_path / "rejects.csv"
    s = import_hotline(app, path, reject_path=rejects)
    assert (s.rows, s.created, s.rejected, s.blank) == (3, 1, 2, 1)
    assert_adds_up(s)
    case = case_by_source_id(app, "1001")  # Excel stores numbers as floats; the id is still "1001"
    assert case.reporter_phone == "13800000002" and case.location.district == "500105"
    assert case.reported_at == datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
    got = {int(r["row"]): r for r in read_rejects(rejects)}
    assert set(got) == {2, 4}
    assert "location" in got[2]["reason"] and "unparsable time" in got[4]["reason"]


def test_custom_mapping_from_toml_and_json(app: Any, tmp_path: Path) -> None:
    header = ["受理号", "受理日期", "反映内容", "发生地址", "X", "Y", "坐标"]
    rows = [["K1", "2026年11月20日 09:30", "井盖缺失很危险", "", "106.52", "29.52", "wgs84"],
            ["K2", "2026年11月20日 10:30", "路灯不亮", "江北区观音桥街道", "", "", ""],
            ["K3", "2026年11月20日 11:30", "坐标系写错", "", "106.52", "29.52", "utm"]]
    src = write_csv(tmp_path / "custom.csv", header, rows)
    toml = tmp_path / "mapping.toml"
    toml.write_text('id = "受理号"\ntime = "受理日期"\ntext = ["诉求", "反映内容"]\naddress = "发生地址"\n'
                    'lon = "X"\nlat = "Y"\ncrs = "坐标"\n', encoding="utf-8")
    mapping = ColumnMapping.from_file(toml)
    rejects = tmp_path / "r.csv"
    s = import_hotline(app, src, mapping=mapping, reject_path=rejects)
    assert (s.created, s.rejected) == (2, 1)
    assert case_by_source_id(app, "K1").location.grid is not None
    assert case_by_source_id(app, "K1").reported_at == datetime(2026, 11, 20, 1, 30, tzinfo=UTC)
    assert "coordinate system" in read_rejects(rejects)[0]["reason"]

    js = tmp_path / "mapping.json"
    js.write_text(json.dumps({"columns": {"id": "受理号", "time": "受理日期", "text": "反映内容",
                                          "address": "发生地址", "lon": "X", "lat": "Y", "crs": "坐标"}},
                             ensure_ascii=False), encoding="utf-8")
    again = import_hotline(app, src, mapping=ColumnMapping.from_file(js), source="other")
    assert again.created == 2  # another source: new cases

    (tmp_path / "bad.json").write_text('{"identifier": "x"}', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown keys"):
        ColumnMapping.from_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="required columns"):  # default mapping finds no id column
        import_hotline(app, src)


def test_gb18030_file(app: Any, tmp_path: Path) -> None:
    rows = [["G1", "2026-11-20 09:30:00", "噪音扰民", "楼下烧烤店深夜噪音扰民，䶮𠮷也睡不着", "江北区观音桥街道",
             "", "", "", "", ""]]
    src = write_csv(tmp_path / "gb.csv", HEADER, rows, encoding="gb18030")
    assert detect_encoding(src) == "gb18030"
    assert import_hotline(app, src).created == 1
    case = case_by_source_id(app, "G1")
    assert case.title == "噪音扰民" and "𠮷" in case.description
    bom = write_csv(tmp_path / "bom.csv", HEADER, [["B1", *rows[0][1:]]], encoding="utf-8-sig")
    assert detect_encoding(bom) == "utf-8-sig" and import_hotline(app, bom).created == 1


def test_crash_mid_file_loses_nothing_acknowledged(app: Any, tmp_path: Path) -> None:
    rows = [[f"C{i}", "2026-11-20 09:00:00", "路灯不亮", f"第{i}盏路灯不亮", "江北区观音桥街道", "", "", "", "", ""]
            for i in range(10)]
    src = write_csv(tmp_path / "ten.csv", HEADER, rows)
    seen: list[tuple[int, int]] = []

    def crash_after_first_batch(done: int, total: int) -> None:
        seen.append((done, total))
        raise KeyboardInterrupt  # the operator's Ctrl-C, right after a batch was acknowledged

    with pytest.raises(KeyboardInterrupt):
        import_hotline(app, src, batch_size=4, progress=crash_after_first_batch)
    assert seen == [(4, 10)] and count_cases(app) == 4
    resumed = import_hotline(app, src, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert (resumed.created, resumed.existing) == (6, 4)
    assert seen[-1] == (10, 10) and count_cases(app) == 10


@pytest.mark.skipif(not REAL_FILE.is_file(), reason="shared data folder absent")
def test_real_teddy_file(app: Any, tmp_path: Path) -> None:
    with REAL_FILE.open(encoding="utf-8", newline="") as fh:
        n_rows = sum(1 for _ in csv.DictReader(fh))
    rejects = tmp_path / "rejects.csv"
    s = import_hotline(app, REAL_FILE, reject_path=rejects)
    assert s.rows == n_rows == 2816
    assert_adds_up(s)
    assert s.created + s.rejected == n_rows and len(read_rejects(rejects)) == s.rejected
    assert s.unlocated > s.located  # the place names are masked: most wait for manual location
    with app.uow() as uow:
        from zhizhi.adapters.repository import CaseFilter

        _, queue = uow.cases.list(CaseFilter(needs_location=True, source="hotline"))
    assert queue == s.unlocated
    again = import_hotline(app, REAL_FILE)
    assert (again.created, again.existing, again.rejected) == (0, s.created, s.rejected)
