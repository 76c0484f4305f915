"""Read the catalogue and the working calendar from a folder of plain files.

A city replaces the files, not the code: categories.csv, departments.csv,
responsibility.csv, deadlines.toml and (optional) calendar.toml, described in
``zhizhi/data/catalogue/README.md``. The packaged folder is the default;
``ZHIZHI_CATALOGUE_DIR`` or an explicit directory overrides it. Every format
error becomes a ValidationFailed naming the file and row (or TOML key), because
the person fixing it is an administrator with a spreadsheet, not a developer.
"""

from __future__ import annotations

import csv
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from datetime import date, time
from pathlib import Path
from typing import Any, TypeVar

from zhizhi.domain.calendar import BUSINESS_START, Duration, WorkingCalendar
from zhizhi.domain.catalogue import (
    ESCALATION_KEYS,
    STEPS,
    Catalogue,
    Category,
    DeadlineSettings,
    Department,
    Kind,
    ResponsibilityRule,
    Severity,
    Source,
)
from zhizhi.domain.errors import ValidationFailed
from zhizhi.domain.places import Level

ENV_VAR = "ZHIZHI_CATALOGUE_DIR"
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "data" / "catalogue"

CATEGORIES_FILE = "categories.csv"
DEPARTMENTS_FILE = "departments.csv"
RESPONSIBILITY_FILE = "responsibility.csv"
DEADLINES_FILE = "deadlines.toml"
CALENDAR_FILE = "calendar.toml"

_LIST_SEPARATOR = "|"
T = TypeVar("T")


def catalogue_dir(directory: Path | str | None = None) -> Path:
    """The folder to read: the argument, else $ZHIZHI_CATALOGUE_DIR, else the packaged one."""
    if directory is not None:
        return Path(directory)
    from_env = os.environ.get(ENV_VAR)
    return Path(from_env) if from_env else PACKAGED_DIR


def load_catalogue(directory: Path | str | None = None) -> Catalogue:
    """Read and validate the four catalogue files of `directory` (see `catalogue_dir`)."""
    folder = catalogue_dir(directory)
    categories = [_category(*row) for row in _rows(folder / CATEGORIES_FILE, _CATEGORY_COLUMNS)]
    departments = [_department(*row) for row in _rows(folder / DEPARTMENTS_FILE, _DEPARTMENT_COLUMNS)]
    rules = [_rule(*row) for row in _rows(folder / RESPONSIBILITY_FILE, _RULE_COLUMNS)]
    deadlines = _deadlines(folder / DEADLINES_FILE)
    return Catalogue(categories, departments, rules, deadlines)


def load_calendar(directory: Path | str | None = None, *, strict: bool | None = None) -> WorkingCalendar:
    """The working calendar with the administrator's dates from calendar.toml, if the file exists.

    `strict` given here wins over the file's ``[settings] strict``.
    """
    path = catalogue_dir(directory) / CALENDAR_FILE
    if not path.exists():
        return WorkingCalendar(strict=bool(strict))
    data = _read_toml(path)
    settings = _table(data, "settings", path)
    extra = _table(data, "extra", path)
    file_strict = settings.get("strict", False)
    if not isinstance(file_strict, bool):
        raise _error(path, "settings.strict", "must be true or false")
    return WorkingCalendar(
        extra_holidays=_dates(extra.get("holidays", []), path, "extra.holidays"),
        extra_workdays=_dates(extra.get("workdays", []), path, "extra.workdays"),
        confirmed_years=_years(extra.get("confirmed_years", []), path),
        strict=file_strict if strict is None else strict,
        business_start=_clock(settings.get("business_start"), path),
    )


# -- CSV ---------------------------------------------------------------------------

_CATEGORY_COLUMNS = ("code", "parent", "kind", "name_zh", "name_en", "severity", "keywords")
_DEPARTMENT_COLUMNS = ("code", "name_zh", "name_en", "levels")
_RULE_COLUMNS = ("category", "area", "department", "level")


def _error(path: Path, row: int | str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{path.name}:{row}: {message}", file=path.name, row=row)


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[dict[str, str], Source]]:
    """Rows of a UTF-8 CSV (a BOM from Excel is fine) with stripped cells.

    Blank lines and lines whose first cell starts with '#' are skipped so that
    administrators can comment their tables. Row numbers are file line numbers.
    """
    if not path.exists():
        raise ValidationFailed(f"{path}: catalogue file missing", file=path.name)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [column for column in required if column not in header]
        if missing:
            raise _error(path, 1, f"missing columns {missing} (has {header})")
        reader.fieldnames = header
        for record in reader:
            cells = {key: (value or "").strip() for key, value in record.items() if key is not None}
            if not any(cells.values()) or cells[header[0]].startswith("#"):
                continue
            if None in record:
                raise _error(path, reader.line_num, "more cells than columns (quote cells with commas)")
            yield cells, Source(path.name, reader.line_num)


def _parse(source: Source, column: str, parse: Callable[[str], T], value: str) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise ValidationFailed(
            f"{source}: column {column!r}: {exc}", file=source.file, row=source.row
        ) from exc


def _required(row: Mapping[str, str], column: str, source: Source) -> str:
    value = row.get(column, "")
    if not value:
        raise ValidationFailed(f"{source}: column {column!r} is empty", file=source.file, row=source.row)
    return value


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(_LIST_SEPARATOR) if part.strip())


def _category(row: dict[str, str], source: Source) -> Category:
    severity = row.get("severity", "")
    return Category(
        code=_required(row, "code", source),
        name_zh=_required(row, "name_zh", source),
        name_en=row.get("name_en", ""),
        kind=_parse(source, "kind", Kind.parse, _required(row, "kind", source)),
        parent_code=row.get("parent") or None,
        keywords=_split(row.get("keywords", "")),
        severity=_parse(source, "severity", Severity.parse, severity) if severity else None,
        source=source,
    )


def _department(row: dict[str, str], source: Source) -> Department:
    levels = _split(_required(row, "levels", source))
    return Department(
        code=_required(row, "code", source),
        name_zh=_required(row, "name_zh", source),
        name_en=row.get("name_en", ""),
        levels=frozenset(_parse(source, "levels", Level.parse, level) for level in levels),
        source=source,
    )


def _rule(row: dict[str, str], source: Source) -> ResponsibilityRule:
    return ResponsibilityRule(
        category_code=_required(row, "category", source),
        area=_required(row, "area", source),
        department_code=_required(row, "department", source),
        level=_parse(source, "level", Level.parse, _required(row, "level", source)),
        note=row.get("note", ""),
        source=source,
    )


# -- TOML --------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ValidationFailed(f"{path}: catalogue file missing", file=path.name)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationFailed(f"{path.name}: {exc}", file=path.name, row=str(exc)) from exc


def _table(data: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise _error(path, key, "must be a table")
    return value


def _deadlines(path: Path) -> list[DeadlineSettings]:
    data = _read_toml(path)
    unknown = set(data) - {"defaults", "categories"}
    if unknown:
        raise _error(path, sorted(unknown)[0], "unknown table; use [defaults] and [categories.<code>]")
    settings = [_deadline_table(None, _table(data, "defaults", path), path, "defaults")]
    for code, table in _table(data, "categories", path).items():
        if not isinstance(table, dict):
            raise _error(path, f"categories.{code}", "must be a table")
        settings.append(_deadline_table(code, table, path, f"categories.{code}"))
    return settings


def _deadline_table(code: str | None, table: dict[str, Any], path: Path, key: str) -> DeadlineSettings:
    source = Source(path.name, key)
    steps: dict[str, Duration] = {}
    reopen: int | None = None
    escalation: dict[str, float | int | None] = {}
    for name, value in table.items():
        where = f"{key}.{name}"
        if name in STEPS:
            steps[name] = _parse(Source(path.name, where), name, Duration.parse, str(value))
        elif name == "reopen_days":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _error(path, where, "must be a whole number of days")
            reopen = value
        elif name == "escalation":
            if not isinstance(value, dict):
                raise _error(path, where, "must be a table")
            for esc_name, esc_value in value.items():
                if esc_name not in ESCALATION_KEYS:
                    raise _error(path, f"{where}.{esc_name}", f"unknown key; use {list(ESCALATION_KEYS)}")
                if not isinstance(esc_value, int | float) or isinstance(esc_value, bool) or esc_value < 0:
                    raise _error(path, f"{where}.{esc_name}", "must be a non-negative number")
                escalation[esc_name] = esc_value
        else:
            raise _error(path, where, f"unknown key; use {[*STEPS, 'reopen_days', 'escalation']}")
    return DeadlineSettings(code, steps, reopen, escalation, source)


def _dates(values: Any, path: Path, key: str) -> list[date]:
    if not isinstance(values, list):
        raise _error(path, key, "must be a list of dates")
    result: list[date] = []
    for value in values:
        if isinstance(value, date):
            result.append(value)
            continue
        try:
            result.append(date.fromisoformat(str(value)))
        except ValueError as exc:
            raise _error(path, key, f"cannot read date {value!r}") from exc
    return result


def _years(values: Any, path: Path) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, int) for v in values):
        raise _error(path, "extra.confirmed_years", "must be a list of years")
    return values


def _clock(value: Any, path: Path) -> time:
    if value is None:
        return BUSINESS_START
    if isinstance(value, time):
        return value
    try:
        return time.fromisoformat(str(value))
    except ValueError as exc:
        raise _error(path, "settings.business_start", f"cannot read time {value!r}") from exc
