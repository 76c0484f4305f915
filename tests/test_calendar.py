"""Working-day calendar: real State Council arrangements, admin additions, the unknown-year guard."""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from zhizhi.adapters.catalogue_files import load_calendar
from zhizhi.domain.calendar import (
    SHANGHAI,
    CalendarEstimateWarning,
    CalendarUnknownYear,
    Duration,
    WorkingCalendar,
    library_years,
)
from zhizhi.domain.errors import DomainError, ValidationFailed


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)


@pytest.fixture
def cal() -> WorkingCalendar:
    return WorkingCalendar(strict=True)


def test_library_covers_recent_years() -> None:
    years = library_years()
    assert {2024, 2025, 2026} <= years
    assert 2000 not in years  # the library only follows the notices from 2001


# -- National Day / Mid-Autumn 2025: Oct 1–8 off, Sun Sep 28 and Sat Oct 11 worked ---------


@pytest.mark.parametrize("day", [date(2025, 10, d) for d in range(1, 9)])
def test_national_day_2025_is_off(cal: WorkingCalendar, day: date) -> None:
    assert not cal.is_working_day(day)


def test_national_day_2025_make_up_days(cal: WorkingCalendar) -> None:
    assert cal.is_working_day(date(2025, 9, 28))  # Sunday
    assert cal.is_working_day(date(2025, 10, 11))  # Saturday
    assert not cal.is_working_day(date(2025, 9, 27))  # an ordinary Saturday
    assert cal.is_working_day(date(2025, 10, 9))


def test_three_working_days_from_friday_before_national_day(cal: WorkingCalendar) -> None:
    # Fri 26 → Sun 28 (调休) → Mon 29 → Tue 30
    assert cal.add_working_days(sh(2025, 9, 26, 10, 30), 3) == sh(2025, 9, 30, 10, 30)


def test_working_days_across_the_golden_week(cal: WorkingCalendar) -> None:
    start = sh(2025, 9, 30, 16, 0)
    assert cal.add_working_days(start, 1) == sh(2025, 10, 9, 16, 0)
    assert cal.add_working_days(start, 2) == sh(2025, 10, 10, 16, 0)
    assert cal.add_working_days(start, 3) == sh(2025, 10, 11, 16, 0)  # make-up Saturday
    assert cal.add_working_days(start, 4) == sh(2025, 10, 13, 16, 0)
    assert cal.working_days_between(date(2025, 9, 26), date(2025, 10, 14)) == 8


# -- Spring Festival 2026: Feb 15–23 off, Sat Feb 14 and Sat Feb 28 worked ----------------


def test_spring_festival_2026(cal: WorkingCalendar) -> None:
    assert cal.is_working_day(date(2026, 2, 14))
    assert cal.is_working_day(date(2026, 2, 28))
    for day in range(15, 24):
        assert not cal.is_working_day(date(2026, 2, day)), day
    assert cal.is_working_day(date(2026, 2, 24))


def test_spring_festival_2026_deadline(cal: WorkingCalendar) -> None:
    start = sh(2026, 2, 13, 11, 0)
    assert cal.add_working_days(start, 1) == sh(2026, 2, 14, 11, 0)
    assert cal.add_working_days(start, 2) == sh(2026, 2, 24, 11, 0)
    assert cal.working_days_between(date(2026, 2, 14), date(2026, 2, 24)) == 1


# -- rules of the arithmetic ------------------------------------------------------------


def test_start_on_non_working_day_counts_from_next_business_start(cal: WorkingCalendar) -> None:
    saturday = sh(2025, 9, 27, 15, 45)
    assert cal.add_working_days(saturday, 0) == sh(2025, 9, 28, 9, 0)
    assert cal.add_working_days(saturday, 1) == sh(2025, 9, 29, 9, 0)
    holiday = sh(2025, 10, 3, 8, 0)
    assert cal.add_working_days(holiday, 1) == sh(2025, 10, 10, 9, 0)


def test_zero_days_on_a_working_day_is_the_start(cal: WorkingCalendar) -> None:
    start = sh(2025, 9, 29, 23, 59)
    assert cal.add_working_days(start, 0) == start


def test_between_inverts_add(cal: WorkingCalendar) -> None:
    first = sh(2025, 9, 20, 14, 0)
    for offset in range(30):
        start = first + timedelta(days=offset)
        for n in range(6):
            assert cal.working_days_between(start, cal.add_working_days(start, n)) == n, (start, n)


def test_between_is_signed(cal: WorkingCalendar) -> None:
    a, b = date(2025, 9, 26), date(2025, 9, 30)
    assert cal.working_days_between(a, b) == 3
    assert cal.working_days_between(b, a) == -3
    assert cal.working_days_between(a, a) == 0


def test_other_timezones_are_converted_to_shanghai(cal: WorkingCalendar) -> None:
    # 2025-09-27 17:00 UTC is Sunday 28 Sep 01:00 in Shanghai: a make-up workday.
    utc = datetime(2025, 9, 27, 17, 0, tzinfo=UTC)
    assert cal.is_working_day(utc)
    result = cal.add_working_days(utc, 1)
    assert result == sh(2025, 9, 29, 1, 0)
    assert result.tzinfo == SHANGHAI


def test_naive_datetimes_are_refused(cal: WorkingCalendar) -> None:
    with pytest.raises(ValueError):
        cal.add_working_days(datetime(2025, 9, 26, 10), 1)
    with pytest.raises(ValueError):
        cal.add_working_days(sh(2025, 9, 26, 10), -1)


def test_add_duration(cal: WorkingCalendar) -> None:
    start = sh(2025, 9, 26, 22, 0)
    assert cal.add(start, Duration.parse("24h")) == sh(2025, 9, 27, 22, 0)  # natural clock
    assert cal.add(start, "0.5h") == sh(2025, 9, 26, 22, 30)
    assert cal.add(start, "3wd") == sh(2025, 9, 30, 22, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24h", Duration(24, "h")), ("0.5h", Duration(0.5, "h")), ("2d", Duration(48, "h")),
     ("3wd", Duration(3, "wd")), (" 10 WD ", Duration(10, "wd"))],
)
def test_duration_parse(text: str, expected: Duration) -> None:
    assert Duration.parse(text) == expected
    assert Duration.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "3", "3 weeks", "-1h", "1.5wd", "wd"])
def test_duration_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        Duration.parse(text)


# -- unknown years and administrator dates --------------------------------------------------


def test_unknown_year_strict_raises(cal: WorkingCalendar) -> None:
    with pytest.raises(CalendarUnknownYear) as info:
        cal.is_working_day(date(2030, 10, 8))
    assert isinstance(info.value, DomainError)
    assert info.value.details["year"] == 2030


def test_unknown_year_lenient_estimates_and_flags() -> None:
    cal = WorkingCalendar()
    with pytest.warns(CalendarEstimateWarning, match="2030"):
        assert not cal.is_working_day(date(2030, 10, 1))  # statutory: still off
    assert cal.is_working_day(date(2030, 10, 8))  # a Tuesday, 调休 unknown
    assert not cal.is_working_day(date(2030, 10, 12))  # a Saturday
    assert cal.estimated_years == {2030}
    assert 2030 not in cal.known_years


def test_admin_dates_make_a_year_known() -> None:
    cal = WorkingCalendar(
        extra_holidays=[date(2030, 10, 7)], extra_workdays=[date(2030, 10, 12)], strict=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cal.is_working_day(date(2030, 10, 7))
        assert cal.is_working_day(date(2030, 10, 12))
        assert cal.is_working_day(date(2030, 10, 14))
    assert 2030 in cal.known_years
    assert WorkingCalendar(confirmed_years=[2031], strict=True).is_working_day(date(2031, 3, 3))


def test_admin_dates_override_the_library() -> None:
    cal = WorkingCalendar(extra_holidays=[date(2025, 9, 29)], extra_workdays=[date(2025, 10, 8)])
    assert not cal.is_working_day(date(2025, 9, 29))
    assert cal.is_working_day(date(2025, 10, 8))


def test_admin_date_listed_twice_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        WorkingCalendar(extra_holidays=[date(2027, 1, 1)], extra_workdays=[date(2027, 1, 1)])


# -- calendar.toml ------------------------------------------------------------------------


def test_packaged_calendar_loads() -> None:
    cal = load_calendar()
    assert cal.business_start == time(9, 0)
    assert cal.is_working_day(date(2025, 9, 28))


def test_calendar_toml(tmp_path: Path) -> None:
    (tmp_path / "calendar.toml").write_text(
        '[settings]\nstrict = true\nbusiness_start = "08:30"\n'
        '[extra]\nholidays = [2027-03-03, "2027-03-04"]\nworkdays = [2027-02-20]\n',
        encoding="utf-8",
    )
    cal = load_calendar(tmp_path)
    assert cal.strict
    assert not cal.is_working_day(date(2027, 3, 3))
    assert not cal.is_working_day(date(2027, 3, 4))
    assert cal.is_working_day(date(2027, 2, 20))  # a Saturday made a workday
    assert cal.add_working_days(sh(2027, 3, 3, 12, 0), 0) == sh(2027, 3, 5, 8, 30)
    with pytest.raises(CalendarUnknownYear):
        cal.is_working_day(date(2031, 1, 6))
    assert not load_calendar(tmp_path, strict=False).strict


def test_calendar_toml_errors_name_the_key(tmp_path: Path) -> None:
    (tmp_path / "calendar.toml").write_text('[extra]\nholidays = ["next friday"]\n', encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        load_calendar(tmp_path)
    assert info.value.details == {"file": "calendar.toml", "row": "extra.holidays"}


def test_missing_calendar_file_gives_library_calendar(tmp_path: Path) -> None:
    cal = load_calendar(tmp_path)
    assert cal.extra_holidays == frozenset()
    assert cal.is_working_day(date(2026, 2, 28))
