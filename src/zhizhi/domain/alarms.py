"""Alarm rules (预警规则) as data and the alarm (预警) lifecycle.

One active alarm per (device, rule): a repeat of the condition updates it
(count, latest value) instead of raising another. An alarm goes
raised → acknowledged → cleared (acknowledging is optional), each step recorded
with who and when, and announced as an event for the bus (cases, live console).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

from zhizhi.domain.errors import IllegalAction, ValidationFailed
from zhizhi.domain.events import Event


class Severity(IntEnum):
    INFO = 1
    MINOR = 2
    MAJOR = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | int) -> Severity:
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValidationFailed(f"未知严重程度 {value!r} / unknown severity",
                                   allowed=[s.name.lower() for s in cls]) from None

    @property
    def label(self) -> str:
        return self.name.lower()


class RuleKind(StrEnum):
    THRESHOLD = "threshold"
    RATE = "rate"
    DURATION = "duration"
    OFFLINE = "offline"
    COMBINATION = "combination"


OPS = (">", ">=", "<", "<=", "abs>")


@dataclass(frozen=True, slots=True)
class Term:
    quantity: str
    op: str
    value: float


@dataclass(frozen=True, slots=True)
class AlarmRule:
    """A rule for a device type in a scene. Devices may override `value`, `clear` and `minutes`."""

    code: str
    scene: str
    device_type: str
    kind: RuleKind
    severity: Severity
    message: str = ""
    quantity: str | None = None
    op: str = ">="
    value: float = 0.0
    clear: float | None = None
    minutes: float = 0.0
    mode: str = "all"
    terms: tuple[Term, ...] = ()

    def quantities(self) -> tuple[str, ...]:
        if self.kind is RuleKind.COMBINATION:
            return tuple(t.quantity for t in self.terms)
        return (self.quantity,) if self.quantity else ()


def parse_rule(raw: dict[str, Any]) -> AlarmRule:
    """A rule from its data form (TOML/JSON), refusing anything incomplete or contradictory."""
    try:
        kind = RuleKind(raw["kind"])
    except (KeyError, ValueError):
        raise ValidationFailed(f"规则类型无效 {raw.get('kind')!r} / unknown rule kind",
                               allowed=[k.value for k in RuleKind]) from None
    for key in ("code", "scene", "device_type"):
        if not raw.get(key):
            raise ValidationFailed(f"规则缺少 {key} / rule needs {key}")
    op = str(raw.get("op", ">="))
    if op not in OPS:
        raise ValidationFailed(f"比较符无效 {op!r} / unknown operator", allowed=list(OPS))
    terms = tuple(Term(str(t["quantity"]), str(t.get("op", ">=")), float(t["value"])) for t in raw.get("terms", ()))
    rule = AlarmRule(
        code=str(raw["code"]), scene=str(raw["scene"]), device_type=str(raw["device_type"]), kind=kind,
        severity=Severity.parse(raw.get("severity", "major")), message=str(raw.get("message", "")),
        quantity=raw.get("quantity"), op=op, value=float(raw.get("value", 0.0)),
        clear=float(raw["clear"]) if raw.get("clear") is not None else None,
        minutes=float(raw.get("minutes", 0.0)), mode=str(raw.get("mode", "all")), terms=terms,
    )
    if kind in (RuleKind.THRESHOLD, RuleKind.RATE, RuleKind.DURATION) and not rule.quantity:
        raise ValidationFailed(f"规则 {rule.code} 需要 quantity / rule needs a quantity")
    if kind in (RuleKind.OFFLINE, RuleKind.DURATION) and rule.minutes <= 0:
        raise ValidationFailed(f"规则 {rule.code} 需要 minutes > 0 / rule needs minutes > 0")
    if kind is RuleKind.COMBINATION and (not terms or rule.mode not in ("all", "any")):
        raise ValidationFailed(f"组合规则 {rule.code} 需要 terms 和 mode=all|any / combination needs terms, mode")
    if kind is RuleKind.THRESHOLD and rule.clear is not None:
        upward = op in (">", ">=")
        if (upward and rule.clear > rule.value) or (not upward and rule.clear < rule.value):
            raise ValidationFailed(f"规则 {rule.code} 的解除值应在触发值的另一侧 / clear level must be on the "
                                   "safe side of the trigger level (hysteresis)")
    return rule


class AlarmState(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"

    @property
    def label_zh(self) -> str:
        return {"raised": "已触发", "acknowledged": "已确认", "cleared": "已解除"}[self.value]


# ----------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class AlarmEvent(Event):
    alarm_id: int
    device_id: int
    scene: str
    severity: str
    grid_code: str | None
    lon: float | None
    lat: float | None
    at: datetime


@dataclass(frozen=True)
class AlarmRaised(AlarmEvent):
    rule_code: str = ""


@dataclass(frozen=True)
class AlarmAcknowledged(AlarmEvent):
    by: str = ""


@dataclass(frozen=True)
class AlarmCleared(AlarmEvent):
    case_id: int | None = None


@dataclass(frozen=True, slots=True)
class AlarmStep:
    """One recorded step of an alarm: raised, updated, acknowledged, cleared."""

    at: datetime
    action: str
    by: str
    note: str = ""
    value: float | None = None


@dataclass
class Alarm:
    """The aggregate: one per (device, rule) while active."""

    id: int | None
    device_id: int
    device_code: str
    rule_code: str
    scene: str
    severity: Severity
    raised_at: datetime
    value: float | None
    message: str
    grid_code: str | None = None
    lon: float | None = None
    lat: float | None = None
    state: AlarmState = AlarmState.RAISED
    last_at: datetime | None = None
    count: int = 1
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    cleared_at: datetime | None = None
    case_id: int | None = None
    reading_at: datetime | None = None  # the reading that raised it (latency is measured from here)
    steps: list[AlarmStep] = field(default_factory=list)
    events: list[Event] = field(default_factory=list, repr=False)

    @property
    def active(self) -> bool:
        return self.state is not AlarmState.CLEARED

    def raised(self, by: str = "rule") -> None:
        """Record the raise (called once the alarm has its id)."""
        self.last_at = self.raised_at
        self.steps.append(AlarmStep(self.raised_at, "raised", by, self.message, self.value))
        self.events.append(AlarmRaised(**self._ev(self.raised_at), rule_code=self.rule_code))

    def repeat(self, at: datetime, value: float | None) -> None:
        """The condition holds again: the one active alarm is updated, not duplicated."""
        if not self.active:
            raise IllegalAction("预警已解除 / alarm already cleared", allowed=[])
        self.count += 1
        self.last_at = at
        self.value = value

    def acknowledge(self, at: datetime, by: str, note: str = "") -> None:
        if self.state is not AlarmState.RAISED:
            raise IllegalAction(f"预警处于{self.state.label_zh}状态，不能确认 / only a raised alarm can be "
                                "acknowledged", allowed=["clear"] if self.active else [])
        self.state = AlarmState.ACKNOWLEDGED
        self.acknowledged_at = at
        self.acknowledged_by = by
        self.steps.append(AlarmStep(at, "acknowledged", by, note))
        self.events.append(AlarmAcknowledged(**self._ev(at), by=by))

    def clear(self, at: datetime, by: str = "rule", note: str = "", value: float | None = None) -> None:
        if not self.active:
            raise IllegalAction("预警已解除 / alarm already cleared", allowed=[])
        self.state = AlarmState.CLEARED
        self.cleared_at = at
        self.steps.append(AlarmStep(at, "cleared", by, note or "条件已恢复正常 / condition back to normal", value))
        self.events.append(AlarmCleared(**self._ev(at), case_id=self.case_id))

    def _ev(self, at: datetime) -> dict[str, Any]:
        assert self.id is not None
        return {"alarm_id": self.id, "device_id": self.device_id, "scene": self.scene,
                "severity": self.severity.label, "grid_code": self.grid_code, "lon": self.lon, "lat": self.lat,
                "at": at}
