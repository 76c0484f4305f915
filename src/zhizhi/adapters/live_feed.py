"""The live feed read from the store: what changed on cases and alarms since a mark.

Why read the store rather than only listen on the message bus: a case or an alarm may be written by another
process — the MQTT consumer (`zhizhi sensing consume`), an import run from the CLI, a second server worker — whose
bus the server never sees. The timeline (`case_events`) and the alarm steps (`sensing_alarm_steps`) are append-only
tables keyed by increasing ids, so "everything after id N" is one index range scan whichever process wrote it.

PostgreSQL draws ids from a sequence before commit, so a transaction may commit a smaller id after a larger one
has been read. The reader therefore looks back `LOOKBACK` ids behind its mark and skips the ids it has already
seen; a row that commits more than `LOOKBACK` ids late would be missed by the screens (never by the store).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from zhizhi.adapters.orm import CaseEventRow
from zhizhi.adapters.orm_sensing import AlarmRow, AlarmStepRow, DeviceRow

LOOKBACK = 512
#: Alarm steps that screens show; repeats of an active alarm ("updated") only refresh it and are not pushed.
ALARM_STEPS = ("raised", "acknowledged", "cleared")


@dataclass(frozen=True, slots=True)
class CaseEntry:
    id: int
    case_id: int
    action: str
    from_state: str | None
    to_state: str
    at: datetime


@dataclass(frozen=True, slots=True)
class AlarmEntry:
    id: int
    action: str
    at: datetime
    alarm_id: int
    device_id: int
    device_code: str
    rule_code: str
    scene: str
    severity: str
    grid_code: str | None
    lon: float | None
    lat: float | None
    case_id: int | None
    department_code: str | None  # the device's owner: what a department's screen is checked against


@dataclass
class _Cursor:
    """A mark and the ids already delivered in the look-back window behind it."""

    floor: int  # nothing at or below the mark taken when the feed started is ever delivered
    mark: int
    seen: set[int] = field(default_factory=set)

    def lower_bound(self) -> int:
        return max(self.floor, self.mark - LOOKBACK)

    def take(self, ids: list[int]) -> list[int]:
        fresh = [i for i in ids if i not in self.seen]
        self.seen.update(fresh)
        if fresh:
            self.mark = max(self.mark, *fresh)
        low = self.lower_bound()
        self.seen = {i for i in self.seen if i > low}
        return fresh


class LiveFeed:
    """Reads new timeline entries and alarm steps, each delivered once, in id order."""

    def __init__(self, engine: Engine, batch: int = 1000) -> None:
        self.engine = engine
        self.batch = batch
        with engine.connect() as conn:
            case_mark = int(conn.execute(select(func.coalesce(func.max(CaseEventRow.id), 0))).scalar_one())
            alarm_mark = int(conn.execute(select(func.coalesce(func.max(AlarmStepRow.id), 0))).scalar_one())
        self._cases = _Cursor(case_mark, case_mark)
        self._alarms = _Cursor(alarm_mark, alarm_mark)

    def read(self) -> tuple[list[CaseEntry], list[AlarmEntry]]:
        """Everything committed since the last read (at most `batch` of each kind; the rest on the next read)."""
        e, s, a = CaseEventRow, AlarmStepRow, AlarmRow
        with self.engine.connect() as conn:
            case_rows = conn.execute(
                select(e.id, e.case_id, e.action, e.from_state, e.to_state, e.at)
                .where(e.id > self._cases.lower_bound()).order_by(e.id).limit(self.batch + LOOKBACK)).all()
            alarm_rows = conn.execute(
                select(s.id, s.action, s.at, a.id, a.device_id, a.device_code, a.rule_code, a.scene, a.severity,
                       a.grid_code, a.lon, a.lat, a.case_id, DeviceRow.department_code)
                .join(a, a.id == s.alarm_id).outerjoin(DeviceRow, DeviceRow.id == a.device_id)
                .where(s.id > self._alarms.lower_bound(), s.action.in_(ALARM_STEPS))
                .order_by(s.id).limit(self.batch + LOOKBACK)).all()
        fresh_cases = set(self._cases.take([int(r[0]) for r in case_rows]))
        fresh_alarms = set(self._alarms.take([int(r[0]) for r in alarm_rows]))
        cases = [CaseEntry(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5]) for r in case_rows if int(r[0]) in fresh_cases]
        alarms = [AlarmEntry(*_alarm_fields(r)) for r in alarm_rows if int(r[0]) in fresh_alarms]
        return cases, alarms


def _alarm_fields(r: Any) -> tuple[Any, ...]:
    return (int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], r[11],
            int(r[12]) if r[12] is not None else None, r[13])
