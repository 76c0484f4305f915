"""Working days in China, and deadline arithmetic on them.

Case deadlines (派遣、处置、核查时限) are set either on the natural clock ("24h") or
in working days ("3wd"). A Chinese working day is not simply Monday to Friday:
statutory holidays are moved around each year by a State Council notice, which
turns some weekends into make-up workdays (调休上班). The `holidays` package
knows those notices up to the year it was released for; it exposes the make-up
days as ``China().weekend_workdays``. Next year's notice appears each autumn,
so an administrator can add dates the library does not yet know, and every year
with no data is guarded: strict calendars refuse it, lenient ones estimate it and
say so (``estimated_years``), because a silently wrong deadline is worse than a
visible warning.

All arithmetic is done on timezone-aware datetimes in Asia/Shanghai; the domain
never reads the clock, callers pass the start time in.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo

from zhizhi.domain.errors import DomainError, ValidationFailed

SHANGHAI = ZoneInfo("Asia/Shanghai")
BUSINESS_START = time(9, 0)

# A calendar in which no working day can be found within this many days is broken
# (an administrator marked a whole year as holidays); fail instead of looping.
_MAX_SEARCH_DAYS = 400


class CalendarUnknownYear(DomainError):
    """A date falls in a year for which neither the library nor the administrator has data."""

    code = "calendar-unknown-year"


class CalendarEstimateWarning(UserWarning):
    """Working days of a year were estimated (statutory holidays only, no 调休 known)."""


DurationUnit = Literal["h", "wd"]
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|d|wd)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Duration:
    """A time limit: hours on the natural clock ("h") or whole working days ("wd").

    Written in data files as "24h", "0.5h", "3wd"; "2d" is accepted as shorthand for
    48 natural hours. Working days stay whole because half a working day has no
    agreed meaning across departments.
    """

    value: float
    unit: DurationUnit

    def __post_init__(self) -> None:
        if self.unit not in ("h", "wd"):
            raise ValueError(f"unknown duration unit {self.unit!r}; use 'h' or 'wd'")
        if self.value < 0 or math.isnan(self.value):
            raise ValueError(f"a duration cannot be negative: {self.value!r}")
        if self.unit == "wd" and self.value != int(self.value):
            raise ValueError(f"working days must be whole: {self.value!r}")

    @classmethod
    def of_hours(cls, hours: float) -> Duration:
        return cls(float(hours), "h")

    @classmethod
    def of_working_days(cls, days: int) -> Duration:
        return cls(int(days), "wd")

    @classmethod
    def parse(cls, text: str | Duration) -> Duration:
        """Read "24h", "0.5h", "2d" (= 48h) or "3wd"; raise ValueError otherwise."""
        if isinstance(text, Duration):
            return text
        match = _DURATION_RE.match(str(text))
        if not match:
            raise ValueError(f"cannot read duration {text!r}; write e.g. '24h' or '3wd'")
        number, unit = float(match.group(1)), match.group(2).lower()
        if unit == "d":
            return cls.of_hours(number * 24)
        if unit == "wd":
            if number != int(number):
                raise ValueError(f"working days must be whole: {text!r}")
            return cls.of_working_days(int(number))
        return cls.of_hours(number)

    @property
    def in_working_days(self) -> bool:
        return self.unit == "wd"

    def __str__(self) -> str:
        if self.unit == "wd":
            return f"{int(self.value)}wd"
        return f"{self.value:g}h"


@cache
def library_years() -> frozenset[int]:
    """Years whose 调休 arrangement the installed `holidays` package knows.

    The library keeps estimating statutory holidays for any year, so "known" is
    judged by the make-up workdays it carries: every State Council notice since
    2001 has had some. Computed once, on first use (not at import).
    """
    import holidays  # imported lazily: building holiday tables is not import-time work

    probe = holidays.China(years=range(1990, 2101))
    years = {day.year for day in probe.weekend_workdays}
    if not years:
        return frozenset()
    return frozenset(range(min(years), max(years) + 1))


@cache
def _library_year(year: int) -> tuple[frozenset[date], frozenset[date]]:
    """(holidays, make-up workdays) of one year according to the library.

    The next year is loaded too because a notice may move a weekend of late
    December into the following year's arrangement (e.g. 2001-12-29 for 2002).
    """
    import holidays

    table = holidays.China(years=(year, year + 1))
    days_off = frozenset(day for day in table if day.year == year)
    workdays = frozenset(day for day in table.weekend_workdays if day.year == year)
    return days_off, workdays


def _as_date(value: date | datetime, tz: ZoneInfo) -> date:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware datetime (Asia/Shanghai)")
        return value.astimezone(tz).date()
    return value


class WorkingCalendar:
    """China's working days, with administrator additions and an unknown-year guard.

    A date is a working day when it is an administrator workday, or else not an
    administrator holiday and either a library make-up workday or a Monday–Friday
    that is not a library holiday. Administrator dates win over the library so that
    a correction never needs a code change.

    For a year with no data (outside ``library_years()``, no administrator date in it
    and not listed in ``confirmed_years``): ``strict=True`` raises
    `CalendarUnknownYear`; otherwise the year is answered from the library's
    statutory-holiday estimates without any 调休, a `CalendarEstimateWarning` is
    issued once, and the year is listed in ``estimated_years``. Estimates keep
    statutory days such as 1–3 October off, which plain Monday–Friday would not.
    """

    def __init__(
        self,
        extra_holidays: Iterable[date] = (),
        extra_workdays: Iterable[date] = (),
        *,
        confirmed_years: Iterable[int] = (),
        strict: bool = False,
        tz: ZoneInfo = SHANGHAI,
        business_start: time = BUSINESS_START,
    ) -> None:
        self.extra_holidays = frozenset(extra_holidays)
        self.extra_workdays = frozenset(extra_workdays)
        both = self.extra_holidays & self.extra_workdays
        if both:
            listed = ", ".join(sorted(day.isoformat() for day in both))
            raise ValidationFailed(
                f"dates listed both as holiday and as workday: {listed}", dates=sorted(both)
            )
        self.strict = strict
        self.tz = tz
        self.business_start = business_start
        self._admin_years = frozenset(
            {day.year for day in self.extra_holidays | self.extra_workdays} | set(confirmed_years)
        )
        self._estimated: set[int] = set()

    # -- what the calendar knows -------------------------------------------------

    @property
    def known_years(self) -> frozenset[int]:
        """Years answered from published arrangements (library or administrator)."""
        return library_years() | self._admin_years

    @property
    def estimated_years(self) -> frozenset[int]:
        """Years that were answered from estimates so far (lenient calendars only)."""
        return frozenset(self._estimated)

    def is_known_year(self, year: int) -> bool:
        return year in self._admin_years or year in library_years()

    def _check_year(self, year: int) -> None:
        if self.is_known_year(year):
            return
        if self.strict:
            known = library_years()
            span = f"{min(known)}–{max(known)}" if known else "none"
            raise CalendarUnknownYear(
                f"no working-day data for {year} (library covers {span}); add the State Council "
                f"arrangement to calendar.toml [extra] holidays/workdays",
                year=year,
            )
        if year not in self._estimated:
            self._estimated.add(year)
            warnings.warn(
                f"working days of {year} are estimated (statutory holidays only, no 调休); "
                f"add the year's arrangement to calendar.toml",
                CalendarEstimateWarning,
                stacklevel=3,
            )

    # -- days --------------------------------------------------------------------

    def is_working_day(self, day: date | datetime) -> bool:
        """Whether the (Shanghai) date of `day` is a working day."""
        d = _as_date(day, self.tz)
        if d in self.extra_workdays:
            return True
        if d in self.extra_holidays:
            return False
        self._check_year(d.year)
        days_off, workdays = _library_year(d.year)
        if d in workdays:
            return True
        return d.weekday() < 5 and d not in days_off

    def next_working_day(self, day: date | datetime) -> date:
        """The first working day strictly after `day`."""
        d = _as_date(day, self.tz)
        for _ in range(_MAX_SEARCH_DAYS):
            d += timedelta(days=1)
            if self.is_working_day(d):
                return d
        raise ValidationFailed(f"no working day within {_MAX_SEARCH_DAYS} days after {day}")

    # -- arithmetic --------------------------------------------------------------

    def _local(self, moment: datetime) -> datetime:
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            raise ValueError("pass a timezone-aware datetime (Asia/Shanghai)")
        return moment.astimezone(self.tz)

    def add_working_days(self, start: datetime, n: int) -> datetime:
        """The same clock time `n` working days later.

        Rule: if `start` falls on a non-working day, the clock starts at the next
        working day's start of business (09:00) and `n` working days are counted
        from there, so a report made on Saturday with one working day allowed is due
        on the following working day after Monday, at 09:00. ``n == 0`` returns the
        (possibly moved) start. The result is in Asia/Shanghai.
        """
        if n < 0:
            raise ValueError(f"cannot add a negative number of working days: {n}")
        local = self._local(start)
        day = local.date()
        clock = local.timetz().replace(tzinfo=None)
        if not self.is_working_day(day):
            day = self.next_working_day(day)
            clock = self.business_start
        for _ in range(n):
            day = self.next_working_day(day)
        return datetime.combine(day, clock, tzinfo=self.tz)

    def add(self, start: datetime, duration: Duration | str) -> datetime:
        """`start` plus a Duration: natural hours, or working days by `add_working_days`."""
        duration = Duration.parse(duration)
        if duration.in_working_days:
            return self.add_working_days(start, int(duration.value))
        return self._local(start) + timedelta(hours=duration.value)

    def working_days_between(self, a: date | datetime, b: date | datetime) -> int:
        """Working days in the half-open range of dates [a, b); negative when b < a.

        Counting the start date and not the end date makes this the inverse of
        `add_working_days`: ``working_days_between(s, add_working_days(s, n)) == n``
        for any start, working day or not.
        """
        first, last = _as_date(a, self.tz), _as_date(b, self.tz)
        if last < first:
            return -self.working_days_between(last, first)
        count = 0
        d = first
        while d < last:
            if self.is_working_day(d):
                count += 1
            d += timedelta(days=1)
        return count
