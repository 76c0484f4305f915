"""12345 hotline import: CSV or Excel tickets become reports (`ReportCase`), idempotently.

Why it is shaped like this:

* A hotline centre exports tickets with whatever headers its software uses, so the columns are
  found through a `ColumnMapping` (defaults recognise the common Chinese and English headers; a
  small TOML/JSON file names others).
* Every row ends either imported (created, or `existing` when the ticket was imported before —
  ingestion is idempotent by (source, source id)) or in the reject CSV with its row number and the
  reason, so `rows == created + existing + rejected` always holds and nothing is dropped silently.
  A ticket whose address names no known place is *not* a bad row: it is stored and waits in the
  manual-location queue.
* Rows are stored in batches, one transaction each (`report_cases_batch`): a per-row commit costs
  more than the rest of the import together. A batch counts as imported only after its commit, so
  a crash loses nothing that was acknowledged, and re-running the same file resumes (the stored
  rows come back as `existing`). After each commit the `CaseReported` events are published on the
  bus, so locating by address, keyword categorisation, registration and dispatch happen exactly as
  for a report made through the API. ``batch_size=1`` sends every row through ``zz.handle`` instead.
* Every stored ticket is audited as written by ``system:import`` (one row per case, appended as a batch).
  An ID number column (身份证号) is checked like any report's: a wrong check character rejects the row.

Row numbers in the reject file: the header is row 0 and the first data row is row 1. A row is a
CSV *record* (a quoted cell may span several physical lines) or a worksheet row; blank records
keep their number but are skipped and not counted in `rows`.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import math
import os
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import select

from zhizhi.adapters.orm import CaseRow
from zhizhi.domain.access import system_principal
from zhizhi.domain.errors import DomainError
from zhizhi.geo.coords import Crs
from zhizhi.service.commands import ReportCase, ReportCases
from zhizhi.service.handlers import SOURCES, Context, ReportResult

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

log = logging.getLogger(__name__)

__all__ = [
    "ColumnMapping",
    "ImportSummary",
    "import_hotline",
    "report_cases_batch",
]

#: Our field names, in the order the reject file and the docs list them.
FIELDS = ("id", "time", "subject", "text", "address", "lon", "lat", "crs", "phone", "name", "category",
          "id_number")

#: How long a title made from the text may be (the hotline "subject" when a ticket has none).
TITLE_CHARS = 60
#: Column limits of the case table; PostgreSQL refuses longer values, so they are checked here.
MAX_ADDRESS = 500
MAX_NAME = 100
MAX_PHONE = 40
MAX_SOURCE_ID = 128

#: The audit log names the import as this system principal (one row per imported case).
IMPORT_PRINCIPAL = system_principal("import")

_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d",
    "%Y/%m/%d", "%Y.%m.%d %H:%M:%S", "%Y.%m.%d", "%Y%m%d%H%M%S", "%Y%m%d",
    "%Y年%m月%d日 %H:%M:%S", "%Y年%m月%d日 %H:%M", "%Y年%m月%d日%H时%M分%S秒", "%Y年%m月%d日%H时%M分",
    "%Y年%m月%d日 %H时%M分", "%Y年%m月%d日",
)


# --------------------------------------------------------------------------------------------
# Column mapping
# --------------------------------------------------------------------------------------------
Headers = str | tuple[str, ...] | None


@dataclass(frozen=True)
class ColumnMapping:
    """Which header of the file holds each of our fields.

    Each field is a header name or a tuple of candidate names (the first present wins; matching
    ignores case and surrounding spaces); ``None`` means the file has no such column. The defaults
    recognise common 12345 exports in Chinese and English. ``subject`` and ``text`` both feed the
    case text: the subject becomes the title (else the first 60 characters of the text).
    ``default_crs`` applies when there is no ``crs`` column; naive times are in ``timezone``;
    ``sheet`` picks an Excel worksheet (the first by default).
    """

    id: Headers = ("工单编号", "工单号", "编号", "留言编号", "受理编号", "id", "ticket_id", "ticket", "source_id")
    time: Headers = ("来电时间", "受理时间", "留言时间", "创建时间", "时间", "time", "reported_at", "created_at",
                     "datetime", "date")
    subject: Headers = ("标题", "主题", "留言主题", "工单标题", "subject", "title")
    text: Headers = ("内容", "诉求内容", "来电内容", "留言详情", "工单内容", "详情", "描述", "text", "content",
                     "description", "body")
    address: Headers = ("地址", "事发地址", "诉求地址", "事发地点", "address", "location")
    lon: Headers = ("经度", "lon", "lng", "longitude")
    lat: Headers = ("纬度", "lat", "latitude")
    crs: Headers = ("坐标系", "crs")
    phone: Headers = ("电话", "联系电话", "来电号码", "手机", "phone", "tel", "mobile")
    name: Headers = ("姓名", "联系人", "来电人", "留言用户", "name", "reporter", "user")
    category: Headers = ("类别", "分类", "诉求类别", "category", "category_code")
    id_number: Headers = ("身份证号", "身份证号码", "公民身份号码", "证件号码", "id_number", "id_card")
    default_crs: str = "wgs84"
    timezone: str = "Asia/Shanghai"
    sheet: str | None = None

    def candidates(self, name: str) -> tuple[str, ...]:
        """The header names that may hold field `name`."""
        value = getattr(self, name)
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)

    def resolve(self, header: Sequence[str]) -> dict[str, int]:
        """Column index of each field found in `header`; a file without id or text is refused whole."""
        index: dict[str, int] = {}
        for i, h in enumerate(header):
            index.setdefault(_norm_header(h), i)
        cols: dict[str, int] = {}
        for name in FIELDS:
            for cand in self.candidates(name):
                j = index.get(_norm_header(cand))
                if j is not None:
                    cols[name] = j
                    break
        missing = [n for n in ("id",) if n not in cols]
        if "subject" not in cols and "text" not in cols:
            missing.append("text")
        if ("lon" in cols) != ("lat" in cols):
            missing.append("lat" if "lon" in cols else "lon")
        if missing:
            raise ValueError(
                f"文件缺少必需的列 {missing} / the file lacks required columns {missing}; "
                f"its header is {list(header)}; name them in a column mapping (ColumnMapping.from_file)"
            )
        return cols

    @classmethod
    def from_file(cls, path: Path | str) -> ColumnMapping:
        """Read a mapping from a .toml or .json file of ``field = "header"`` (or a list) pairs.

        Fields not named keep their default candidates; give an empty string to switch one off.
        Example (TOML)::

            id = "受理号"
            text = ["反映内容", "诉求"]
            address = "发生地址"
            default_crs = "gcj02"
        """
        path = Path(path)
        raw = path.read_bytes()
        data: Any = tomllib.loads(raw.decode("utf-8-sig")) if path.suffix.lower() == ".toml" \
            else json.loads(raw.decode("utf-8-sig"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a column mapping is a table of field = header")
        data = data.get("columns", data) if isinstance(data.get("columns"), dict) else data
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; allowed: {sorted(allowed)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in FIELDS:
                if isinstance(value, list):
                    value = tuple(str(v) for v in value if str(v).strip())
                elif not isinstance(value, str):
                    raise ValueError(f"{path}: {key} must be a header name or a list of them")
                kwargs[key] = value or None
            else:
                kwargs[key] = None if value == "" else str(value)
        Crs.parse(kwargs.get("default_crs", cls.default_crs))
        ZoneInfo(kwargs.get("timezone", cls.timezone))
        return cls(**kwargs)


def _norm_header(h: object) -> str:
    return str(h if h is not None else "").replace("\ufeff", "").strip().casefold()


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------
@dataclass
class ImportSummary:
    """What an import did. Every non-blank row is counted once in created, existing or rejected."""

    rows: int = 0
    created: int = 0
    existing: int = 0
    rejected: int = 0
    located: int = 0  # imported rows whose case has a place (district or finer)
    unlocated: int = 0  # imported rows waiting in the manual-location queue
    seconds: float = 0.0
    blank: int = 0  # blank records skipped (not in `rows`)
    reject_path: Path | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"导入 {self.rows} 行：新建 {self.created}，已存在 {self.existing}，拒绝 {self.rejected}，"
            f"已定位 {self.located}，待人工定位 {self.unlocated}，用时 {self.seconds:.2f} 秒 / "
            f"{self.rows} rows: {self.created} created, {self.existing} existing, {self.rejected} rejected, "
            f"{self.located} located, {self.unlocated} awaiting manual location, "
            f"{self.seconds:.2f} s ({self.rows_per_s:,.0f} rows/s)"
        )


# --------------------------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------------------------
class RowRejected(Exception):
    """A row that cannot become a report; the message is what the reject file shows."""


@dataclass
class _Row:
    number: int
    values: list[Any]
    source_id: str = ""
    command: ReportCase | None = None


def import_hotline(
    zz: Zhizhi,
    path: Path,
    mapping: ColumnMapping | None = None,
    reject_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    source: str = "hotline",
    batch_size: int = 500,
) -> ImportSummary:
    """Import a CSV or .xlsx file of 12345 tickets; see the module docstring for the guarantees.

    `progress(done, total)` is called after each committed batch; `total` is the number of data
    records (an estimate from the sheet's dimension for Excel, 0 if unknown). Rejected rows go to
    `reject_path` (UTF-8 with BOM so Excel shows the Chinese) with columns ``row, source_id,
    reason`` and then the file's own columns; with no `reject_path` they are only counted.
    A file that cannot be read, or lacks an id or text column, raises ValueError before anything
    is stored.
    """
    started = time.perf_counter()
    path = Path(path)
    mapping = mapping or ColumnMapping()
    if source.strip().lower() not in SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    header, records, total = _open_table(path, mapping, count=progress is not None)
    cols = mapping.resolve(header)
    summary = ImportSummary(reject_path=reject_path)
    reject_fh: TextIO | None = None
    writer: Any = None
    if reject_path is not None:
        reject_path.parent.mkdir(parents=True, exist_ok=True)
        # The rejected rows keep their own cells (so they can be fixed and imported again), names, phones and
        # ID numbers included: the file is readable by its owner only, like the key file.
        fd = os.open(reject_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.chmod(reject_path, 0o600)  # an existing file keeps its mode through O_CREAT
        reject_fh = open(fd, "w", encoding="utf-8-sig", newline="")  # noqa: SIM115 - closed in the finally
        writer = csv.writer(reject_fh)
        writer.writerow(["row", "source_id", "reason", *[str(h) for h in header]])
    tz = ZoneInfo(mapping.timezone)
    default_crs = Crs.parse(mapping.default_crs)
    try:
        batch: list[_Row] = []

        def reject(row: _Row, reason: str) -> None:
            summary.rejected += 1
            if writer is not None:
                writer.writerow([row.number, row.source_id, reason, *[_cell_text(v) for v in row.values]])

        def flush() -> None:
            _store(zz, batch, batch_size, summary, reject)
            if reject_fh is not None:
                reject_fh.flush()
            batch.clear()
            if progress is not None:
                progress(summary.rows, max(total, summary.rows))

        for number, values in records:
            if all(_cell_text(v) == "" for v in values):
                summary.blank += 1
                continue
            summary.rows += 1
            row = _Row(number, values)
            try:
                row.source_id = _cell_text(_get(values, cols, "id"))
                row.command = _to_command(values, cols, zz.ctx, source, tz, default_crs)
            except RowRejected as exc:
                reject(row, str(exc))
                continue
            batch.append(row)
            if len(batch) >= max(1, batch_size):
                flush()
        flush()
    finally:
        if reject_fh is not None:
            reject_fh.close()
        _close(records)
    summary.seconds = time.perf_counter() - started
    log.info("%s", summary)
    return summary


def _store(zz: Zhizhi, batch: list[_Row], batch_size: int, summary: ImportSummary,
           reject: Callable[[_Row, str], None]) -> None:
    """Store one batch (one transaction, or row by row when batch_size is 1) and count outcomes."""
    if not batch:
        return
    commands = [r.command for r in batch if r.command is not None]
    outcomes: list[ReportResult | DomainError]
    if batch_size <= 1:
        outcomes = []
        for cmd in commands:
            try:
                outcomes.append(zz.handle(cmd))
            except DomainError as exc:
                outcomes.append(exc)
    else:
        outcomes = report_cases_batch(zz, commands)
    stored: list[int] = []
    for row, outcome in zip(batch, outcomes, strict=True):
        if isinstance(outcome, DomainError):
            reject(row, outcome.message)
            continue
        stored.append(outcome.case_id)
        if outcome.created:
            summary.created += 1
        else:
            summary.existing += 1
    located = _count_located(zz, stored)
    summary.located += located
    summary.unlocated += len(stored) - located


def _count_located(zz: Zhizhi, case_ids: list[int]) -> int:
    """How many of these cases have a place (one query per batch; the same test as the manual queue)."""
    if not case_ids:
        return 0
    found = 0
    with zz.sessions() as session:
        for start in range(0, len(case_ids), 1000):
            chunk = sorted(set(case_ids[start:start + 1000]))
            rows = session.execute(select(CaseRow.id, CaseRow.district_code).where(CaseRow.id.in_(chunk))).all()
            located_ids = {r.id for r in rows if r.district_code}
            found += sum(1 for cid in case_ids[start:start + 1000] if cid in located_ids)
    return found


def report_cases_batch(zz: Zhizhi, commands: Sequence[ReportCase]) -> list[ReportResult | DomainError]:
    """Store a batch through the service layer's `ReportCases` (one transaction, then triage)."""
    return zz.handle(ReportCases(tuple(commands)))  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Rows → commands
# --------------------------------------------------------------------------------------------
def _to_command(values: list[Any], cols: dict[str, int], ctx: Context, source: str, tz: ZoneInfo,
                default_crs: Crs) -> ReportCase:
    """One row as a ReportCase; raises RowRejected with a message a dispatcher understands."""
    source_id = _cell_text(_get(values, cols, "id"))
    if not source_id:
        raise RowRejected("缺少工单编号 / missing id")
    if len(source_id) > MAX_SOURCE_ID:
        raise RowRejected(f"工单编号超过 {MAX_SOURCE_ID} 个字符 / id longer than {MAX_SOURCE_ID} characters")
    subject = _cell_text(_get(values, cols, "subject"))
    text = _cell_text(_get(values, cols, "text"))
    if not subject and not text:
        raise RowRejected("诉求内容为空 / empty text")
    description = text or subject
    title = subject or text[:TITLE_CHARS]
    reported_at = _parse_time(_get(values, cols, "time"), tz) if "time" in cols else None
    lon, lat, crs = _parse_point(values, cols, default_crs)
    address = _cell_text(_get(values, cols, "address")) if "address" in cols else ""
    if "address" not in cols:
        address = description  # the address locator looks for place names in the text itself
    phone = _cell_text(_get(values, cols, "phone")) or None
    if phone is not None and len(phone) > MAX_PHONE:
        raise RowRejected(f"电话超过 {MAX_PHONE} 个字符 / phone longer than {MAX_PHONE} characters")
    name = _cell_text(_get(values, cols, "name"))[:MAX_NAME] or None
    id_number = _cell_text(_get(values, cols, "id_number")) or None  # checked (GB 11643) by the service layer
    return ReportCase(
        source=source, source_id=source_id, title=title, description=description,
        category_code=_category(ctx, _cell_text(_get(values, cols, "category"))),
        lon=lon, lat=lat, crs=crs.value, address=address[:MAX_ADDRESS] or None,
        reporter_name=name, reporter_phone=phone, reporter_id_number=id_number, reported_at=reported_at,
        principal=IMPORT_PRINCIPAL,
    )


def _get(values: list[Any], cols: dict[str, int], name: str) -> Any:
    j = cols.get(name)
    return values[j] if j is not None and j < len(values) else None


def _cell_text(value: Any) -> str:
    """A cell as trimmed text; Excel gives numbers for ids and phones (2549.0 means "2549")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).strip()


def _parse_time(value: Any, tz: ZoneInfo) -> datetime:
    """A cell as an aware datetime; naive times are local (Asia/Shanghai by default)."""
    parsed: datetime | None = None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = _cell_text(value)
        if not text:
            raise RowRejected("来电时间为空 / missing time")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            for fmt in _TIME_FORMATS:
                try:
                    parsed = datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
        if parsed is None:
            raise RowRejected(f"无法识别的时间 {text!r} / unparsable time")
    return parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed


def _parse_point(values: list[Any], cols: dict[str, int], default_crs: Crs) -> tuple[float | None, float | None, Crs]:
    """Longitude, latitude and their CRS; both empty means no point (the address is used)."""
    raw_lon = _cell_text(_get(values, cols, "lon"))
    raw_lat = _cell_text(_get(values, cols, "lat"))
    crs_text = _cell_text(_get(values, cols, "crs"))
    try:
        crs = Crs.parse(crs_text) if crs_text else default_crs
    except ValueError:
        raise RowRejected(f"未知坐标系 {crs_text!r} / unknown coordinate system") from None
    if not raw_lon and not raw_lat:
        return None, None, crs
    try:
        lon, lat = float(raw_lon), float(raw_lat)
    except ValueError:
        raise RowRejected(f"坐标无效 ({raw_lon!r}, {raw_lat!r}) / bad coordinates") from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise RowRejected(f"坐标超出范围 ({raw_lon}, {raw_lat}) / coordinates out of range")
    return lon, lat, crs


def _category(ctx: Context, text: str) -> str | None:
    """A known category by code or exact name; anything else is left for the classifier."""
    if not text:
        return None
    try:
        return ctx.catalogue.category(text).code
    except Exception:
        pass
    folded = text.casefold()
    for cat in ctx.catalogue.categories():
        if cat.name_zh == text or cat.name_en.casefold() == folded:
            return cat.code
    return None


# --------------------------------------------------------------------------------------------
# Reading CSV and Excel
# --------------------------------------------------------------------------------------------
Records = Iterator[tuple[int, list[Any]]]


def _open_table(path: Path, mapping: ColumnMapping, count: bool) -> tuple[list[str], Records, int]:
    """Header, numbered data records and their total (0 when not counted)."""
    if not path.is_file():
        raise ValueError(f"找不到文件 / no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _open_xlsx(path, mapping.sheet)
    if suffix == ".xls":
        raise ValueError("不支持旧版 .xls，请另存为 .xlsx 或 CSV / .xls is not supported; save as .xlsx or CSV")
    encoding = detect_encoding(path)
    total = _count_csv(path, encoding) if count else 0
    fh = path.open(encoding=encoding, newline="")
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        fh.close()
        raise ValueError(f"文件为空 / the file is empty: {path}")
    return header, _csv_records(fh, reader), total


def detect_encoding(path: Path, chunk: int = 1 << 20) -> str:
    """utf-8 (with or without BOM) if the whole file decodes as such, else GB18030 (GBK's superset)."""
    for encoding in ("utf-8-sig", "gb18030"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with path.open("rb") as fh:
                while block := fh.read(chunk):
                    decoder.decode(block)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        return encoding
    raise ValueError(f"无法识别文件编码（应为 UTF-8 或 GB18030）/ {path} is neither UTF-8 nor GB18030")


def _raise_field_limit() -> None:
    # Hotline texts can exceed csv's 128 KiB default cell size; 64 MiB still refuses garbage.
    if csv.field_size_limit() < 64 << 20:
        csv.field_size_limit(64 << 20)


def _count_csv(path: Path, encoding: str) -> int:
    _raise_field_limit()
    with path.open(encoding=encoding, newline="") as fh:
        return max(0, sum(1 for _ in csv.reader(fh)) - 1)


class _Closing(Iterator[tuple[int, list[Any]]]):
    """An iterator of records that also closes its file (so the import can close it early)."""

    def __init__(self, it: Iterator[tuple[int, list[Any]]], close: Callable[[], None]) -> None:
        self._it = it
        self.close = close

    def __next__(self) -> tuple[int, list[Any]]:
        return next(self._it)


def _csv_records(fh: TextIO, reader: Iterator[list[str]]) -> Records:
    _raise_field_limit()
    return _Closing(((n, row) for n, row in enumerate(reader, start=1)), fh.close)


def _open_xlsx(path: Path, sheet: str | None) -> tuple[list[str], Records, int]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        ws = wb[sheet] if sheet else wb.worksheets[0]
    except KeyError:
        wb.close()
        raise ValueError(f"工作表 {sheet!r} 不存在 / no sheet {sheet!r}; sheets: {wb.sheetnames}") from None
    rows = ws.iter_rows(values_only=True)
    first = next(rows, None)
    if first is None:
        wb.close()
        raise ValueError(f"工作表为空 / the sheet is empty: {path}")
    header = [_cell_text(v) for v in first]
    total = max(0, (ws.max_row or 0) - 1)
    return header, _Closing(((n, list(r)) for n, r in enumerate(rows, start=1)), wb.close), total


def _close(records: Records) -> None:
    close = getattr(records, "close", None)
    if callable(close):
        close()
