"""City vital signs (体征指标): the indicator tree, formulas over facts, thresholds and time grains.

Why the tree is data: a city re-weighs what it watches every year, so sectors (版块), runways (跑道),
sub-runways (子跑道) and their indicators are read from a file, not written in code.

Why formulas are ``numerator / denominator × scale`` over named *facts*: every fact is a plain sum
over cases or alarms (a count, a sum of seconds, residents), so a district's value is computed from
the sums of its streets, never by averaging their ratios, and the whole tree for every area at every
level comes out of one set-based roll-up (see ``zhizhi.analytics``). Counts, rates, mean durations
and "per 10,000 residents" are all this one shape:

* count:     reported                                  (no denominator)
* rate:      closed_on_time / closed × 100             (%)
* duration:  response_seconds / responded × 1/3600     (hours)
* per 10 k:  reported / population × 10000

A ratio with a zero or unknown denominator has no value ("no data"), never 0.

Pure: no SQL, no clock. Periods are computed from a time the caller passes in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from zhizhi.domain.errors import ValidationFailed


class Source(StrEnum):
    """What a fact counts."""

    CASES = "cases"  # 案件
    ALARMS = "alarms"  # 感知预警
    OBSERVATIONS = "observations"  # 监测值: sensing devices and their readings


class Grain(StrEnum):
    """The length of the period an indicator is read over (its time grain)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"

    @property
    def label_zh(self) -> str:
        return {"day": "日", "week": "周", "month": "月", "quarter": "季", "year": "年"}[self.value]

    @classmethod
    def parse(cls, value: str | Grain) -> Grain:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValidationFailed(f"未知的时间粒度 / unknown grain {value!r}; use one of "
                                   f"{[g.value for g in cls]}") from None


class Status(StrEnum):
    """The light an indicator shows."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"
    NONE = "none"  # a value but no thresholds set
    NO_DATA = "no_data"  # no value: nothing to divide by, or the source does not exist here


class Direction(StrEnum):
    HIGHER_IS_BETTER = "higher_is_better"
    LOWER_IS_BETTER = "lower_is_better"


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval [start, end) in UTC, with its label in the city's calendar."""

    grain: Grain
    start: datetime
    end: datetime
    label: str


def period_of(grain: Grain, at: datetime, tz: str | ZoneInfo = "Asia/Shanghai") -> Period:
    """The period of `grain` that contains `at`, cut at local midnight (weeks start on Monday)."""
    if at.tzinfo is None:
        raise ValidationFailed("时间必须带时区 / `at` must carry a time zone")
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    local = at.astimezone(zone).date()
    if grain is Grain.DAY:
        first, nxt, label = local, local + timedelta(days=1), local.isoformat()
    elif grain is Grain.WEEK:
        first = local - timedelta(days=local.weekday())
        nxt = first + timedelta(days=7)
        iso = first.isocalendar()
        label = f"{iso.year}-W{iso.week:02d}"
    elif grain is Grain.MONTH:
        first = local.replace(day=1)
        nxt = _add_months(first, 1)
        label = f"{first.year}-{first.month:02d}"
    elif grain is Grain.QUARTER:
        first = date(local.year, 3 * ((local.month - 1) // 3) + 1, 1)
        nxt = _add_months(first, 3)
        label = f"{first.year}-Q{(first.month - 1) // 3 + 1}"
    else:
        first, nxt, label = date(local.year, 1, 1), date(local.year + 1, 1, 1), str(local.year)

    def utc(d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=zone).astimezone(UTC)

    return Period(grain, utc(first), utc(nxt), label)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, 1)


@dataclass(frozen=True, slots=True)
class Fact:
    """A named sum the engine computes per area and period. `basis` says which time puts a row in the period."""

    code: str
    source: Source
    name_zh: str
    description: str
    basis: str  # "reported", "closed", "raised", "now" (a stock at snapshot time), "static"


#: The vocabulary formulas are written in. The engine must compute each of these (tests check it does).
FACTS: dict[str, Fact] = {f.code: f for f in (
    Fact("reported", Source.CASES, "上报数", "cases reported in the period (rejected ones included)", "reported"),
    Fact("registered", Source.CASES, "立案数", "cases reported in the period and not rejected", "reported"),
    Fact("rejected", Source.CASES, "不予立案数", "cases reported in the period and rejected", "reported"),
    Fact("closed_of_reported", Source.CASES, "已结案数(当期上报)",
         "cases reported in the period that are closed or evaluated now", "reported"),
    Fact("responded", Source.CASES, "已派遣数", "cases reported in the period that have been dispatched", "reported"),
    Fact("response_seconds", Source.CASES, "响应时长合计",
         "sum over responded cases of (first dispatch − report), seconds", "reported"),
    Fact("repeats", Source.CASES, "重复投诉数",
         "cases reported in the period that repeat an earlier case of the same category from the same reporter "
         "(same phone; without a phone, the same grid) within the 30 days before", "reported"),
    Fact("closed", Source.CASES, "结案数", "cases closed in the period", "closed"),
    Fact("closed_on_time", Source.CASES, "按时办结数",
         "cases closed in the period that were never marked overdue at any step", "closed"),
    Fact("closing_seconds", Source.CASES, "办结时长合计",
         "sum over cases closed in the period of (closure − report), seconds", "closed"),
    Fact("evaluated", Source.CASES, "评价数", "cases closed in the period that carry a satisfaction score", "closed"),
    Fact("satisfaction_sum", Source.CASES, "满意度分值合计", "sum of their satisfaction scores (1–5)", "closed"),
    Fact("satisfied", Source.CASES, "满意数", "of those, scores of 4 or 5 (满意、非常满意)", "closed"),
    Fact("open_now", Source.CASES, "在办数", "cases open when the snapshot was taken", "now"),
    Fact("overdue_now", Source.CASES, "超期在办数", "open cases marked overdue when the snapshot was taken", "now"),
    Fact("population", Source.CASES, "常住人口", "residents of the area (the place's population)", "static"),
    Fact("alarms_raised", Source.ALARMS, "预警数", "alarms raised in the period", "raised"),
    Fact("alarms_acknowledged", Source.ALARMS, "已确认预警数",
         "alarms raised in the period and acknowledged", "raised"),
    Fact("alarm_ack_seconds", Source.ALARMS, "预警确认时长合计",
         "sum over acknowledged alarms of (acknowledgement − raise), seconds", "raised"),
    Fact("alarms_to_case", Source.ALARMS, "转案件预警数", "alarms raised in the period that opened a case", "raised"),
    Fact("alarms_active_now", Source.ALARMS, "未解除预警数",
         "alarms not cleared when the snapshot was taken", "now"),
    Fact("devices", Source.OBSERVATIONS, "感知设备数",
         "active sensing devices (of the slice's scenes; with a quantity, those measuring it)", "now"),
    Fact("devices_online", Source.OBSERVATIONS, "在线设备数",
         "of those, devices heard from within `online_minutes` before the snapshot was taken", "now"),
    Fact("readings", Source.OBSERVATIONS, "监测读数", "readings of the slice's quantity taken in the period",
         "observed"),
    Fact("readings_over", Source.OBSERVATIONS, "超限读数",
         "of those, readings beyond the slice's limit (e.g. water level ≥ 20 cm)", "observed"),
    Fact("reading_sum", Source.OBSERVATIONS, "读数合计", "sum of those readings (for a mean: ÷ readings)", "observed"),
)}
#: Facts that count devices: allowed next to alarm facts too (alarms per device), over the same scenes.
DEVICE_FACTS = frozenset({"devices", "devices_online"})
LIMIT_OPS = (">", ">=", "<", "<=")


@dataclass(frozen=True, slots=True)
class Slice:
    """Which rows an indicator counts: category prefixes (I04 covers I0401 …), sources, scenes, severities.

    An empty tuple means "no restriction". Category and source apply to cases; scene and severity to alarms.
    """

    source: Source = Source.CASES
    categories: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    scenes: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    quantity: str | None = None  # observations: the measured quantity (water_level, methane …)
    limit_op: str | None = None  # observations: a reading is over the limit when `value <op> limit`
    limit: float | None = None
    online_minutes: float = 60.0  # observations: heard from within this long = online

    def matches_category(self, code: str | None) -> bool:
        if not self.categories:
            return True
        return code is not None and any(code.startswith(p) for p in self.categories)

    def matches_source(self, source: str | None) -> bool:
        return not self.sources or source in self.sources

    def matches_alarm(self, scene: str | None, severity: str | None) -> bool:
        return (not self.scenes or scene in self.scenes) and (not self.severities or severity in self.severities)

    def matches_device(self, scene: str | None, quantities: frozenset[str] | set[str]) -> bool:
        """A device counts when its scene is one of the slice's and, with a quantity, it measures it."""
        return (not self.scenes or scene in self.scenes) and (self.quantity is None or self.quantity in quantities)


@dataclass(frozen=True, slots=True)
class Formula:
    """value = numerator / denominator × scale (denominator None: value = numerator × scale)."""

    numerator: str
    denominator: str | None = None
    scale: float = 1.0

    def facts(self) -> tuple[str, ...]:
        return (self.numerator,) if self.denominator is None else (self.numerator, self.denominator)

    def apply(self, facts: Mapping[str, float | None]) -> float | None:
        num = facts.get(self.numerator)
        if num is None:
            return None
        if self.denominator is None:
            return float(num) * self.scale
        den = facts.get(self.denominator)
        if den is None or den == 0:
            return None
        return float(num) * self.scale / float(den)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where yellow and red start. For lower-is-better: value ≥ red is red, ≥ yellow is yellow."""

    direction: Direction
    yellow: float
    red: float

    def __post_init__(self) -> None:
        ok = self.red >= self.yellow if self.direction is Direction.LOWER_IS_BETTER else self.red <= self.yellow
        if not ok:
            raise ValidationFailed(f"阈值顺序错误 / thresholds out of order for {self.direction.value}: "
                                   f"yellow={self.yellow}, red={self.red}")

    def judge(self, value: float | None) -> Status:
        if value is None:
            return Status.NO_DATA
        if self.direction is Direction.LOWER_IS_BETTER:
            return Status.RED if value >= self.red else Status.YELLOW if value >= self.yellow else Status.GREEN
        return Status.RED if value <= self.red else Status.YELLOW if value <= self.yellow else Status.GREEN


@dataclass(frozen=True, slots=True)
class Indicator:
    """One vital sign: what it counts (slice), how (formula), how it is judged, over which grain."""

    code: str
    name_zh: str
    name_en: str
    unit: str
    slice: Slice
    formula: Formula
    thresholds: Thresholds | None
    grain: Grain
    description: str = ""
    path: tuple[str, ...] = ()  # codes of the sector, runway, sub-runway above it

    @property
    def source(self) -> Source:
        return self.slice.source

    def judge(self, value: float | None) -> Status:
        if value is None:
            return Status.NO_DATA
        return self.thresholds.judge(value) if self.thresholds else Status.NONE


@dataclass(frozen=True, slots=True)
class Node:
    """A sector (版块), runway (跑道) or sub-runway (子跑道)."""

    code: str
    kind: str  # "sector" | "runway" | "subrunway"
    name_zh: str
    name_en: str
    children: tuple[Node, ...] = ()
    indicators: tuple[Indicator, ...] = ()

    def walk(self) -> Iterator[Indicator]:
        yield from self.indicators
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class IndicatorTree:
    sectors: tuple[Node, ...]
    by_code: dict[str, Indicator] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.by_code:
            for ind in (i for s in self.sectors for i in s.walk()):
                if ind.code in self.by_code:
                    raise ValidationFailed(f"指标编码重复 / duplicate indicator code {ind.code!r}")
                self.by_code[ind.code] = ind

    def indicators(self) -> list[Indicator]:
        return list(self.by_code.values())

    def get(self, code: str) -> Indicator:
        try:
            return self.by_code[code]
        except KeyError:
            raise ValidationFailed(f"未知指标 / unknown indicator {code!r}") from None

    def slices(self) -> list[Slice]:
        """Distinct slices in first-use order: the engine computes facts once per slice."""
        seen: dict[Slice, None] = {}
        for ind in self.by_code.values():
            seen.setdefault(ind.slice, None)
        return list(seen)


_KINDS = ("sector", "runway", "subrunway")
_CHILD_KEY = {"sector": "runways", "runway": "subrunways"}


def parse_tree(data: Mapping[str, Any]) -> IndicatorTree:
    """Build and validate a tree from plain data (as read from TOML); errors name the offending node."""
    sectors = data.get("sectors")
    if not isinstance(sectors, list) or not sectors:
        raise ValidationFailed("指标树至少需要一个版块 / the tree needs at least one sector ([[sectors]])")
    defaults = data.get("defaults", {})
    return IndicatorTree(tuple(_parse_node(s, 0, (), defaults) for s in sectors))


def _parse_node(raw: Mapping[str, Any], depth: int, path: tuple[str, ...], defaults: Mapping[str, Any]) -> Node:
    kind = _KINDS[depth]
    code = _text(raw, "code", kind)
    where = "/".join((*path, code))
    inherited = {**defaults, **{k: raw[k] for k in ("grain", "categories", "scenes") if k in raw}}
    children_raw = raw.get(_CHILD_KEY.get(kind, ""), []) if kind in _CHILD_KEY else []
    if kind == "subrunway" and any(k in raw for k in ("subrunways", "runways")):
        raise ValidationFailed(f"{where}: 子跑道下不能再分层 / a sub-runway holds only indicators")
    children = tuple(_parse_node(c, depth + 1, (*path, code), inherited) for c in children_raw)
    indicators = tuple(_parse_indicator(i, (*path, code), inherited) for i in raw.get("indicators", []))
    if not children and not indicators:
        raise ValidationFailed(f"{where}: 没有指标 / holds no indicators")
    return Node(code, kind, _text(raw, "name_zh", where), str(raw.get("name_en", "")), children, indicators)


def _parse_indicator(raw: Mapping[str, Any], path: tuple[str, ...], inherited: Mapping[str, Any]) -> Indicator:
    code = _text(raw, "code", "/".join(path))
    where = "/".join((*path, code))
    formula_raw = raw.get("formula")
    if not isinstance(formula_raw, Mapping):
        raise ValidationFailed(f"{where}: 缺少公式 / missing [formula] (numerator, denominator, scale)")
    formula = Formula(str(formula_raw.get("numerator", "")), formula_raw.get("denominator"),
                      float(formula_raw.get("scale", 1.0)))
    unknown = [f for f in formula.facts() if f not in FACTS]
    if unknown:
        raise ValidationFailed(f"{where}: 未知的事实 / unknown fact(s) {unknown}; known: {sorted(FACTS)}")
    sources = {FACTS[f].source for f in formula.facts() if f != "population"}
    if Source.ALARMS in sources and all(f in DEVICE_FACTS for f in formula.facts()
                                         if FACTS[f].source is Source.OBSERVATIONS):
        sources.discard(Source.OBSERVATIONS)  # alarms per device: the devices of the same scenes
    if len(sources) > 1:
        raise ValidationFailed(f"{where}: 公式混用了案件与预警 / a formula mixes sources {sorted(sources)}")
    source = sources.pop() if sources else Source.CASES
    scope = {**inherited, **raw}
    sensing = source is not Source.CASES
    quantity, limit_op, limit, online = None, None, None, 60.0
    if source is Source.OBSERVATIONS:
        quantity, limit_op, limit, online = _observation_scope(raw, formula, where)
    sl = Slice(
        source=source,
        categories=tuple(scope.get("categories", ())) if source is Source.CASES else (),
        sources=tuple(raw.get("sources", ())) if source is Source.CASES else (),
        scenes=tuple(scope.get("scenes", ())) if sensing else (),
        severities=tuple(raw.get("severities", ())) if source is Source.ALARMS else (),
        quantity=quantity, limit_op=limit_op, limit=limit, online_minutes=online,
    )
    th = raw.get("thresholds")
    thresholds = None
    if th is not None:
        try:
            thresholds = Thresholds(Direction(th["direction"]), float(th["yellow"]), float(th["red"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValidationFailed(f"{where}: 阈值无效 / bad thresholds {th!r} ({exc})") from None
    try:
        grain = Grain.parse(scope.get("grain", "month"))
    except ValidationFailed as exc:
        raise ValidationFailed(f"{where}: {exc.message}") from None
    return Indicator(
        code=code, name_zh=_text(raw, "name_zh", where), name_en=str(raw.get("name_en", "")),
        unit=str(raw.get("unit", "")), slice=sl, formula=formula, thresholds=thresholds,
        grain=grain, description=str(raw.get("description", "")),
        path=path,
    )


def _observation_scope(raw: Mapping[str, Any], formula: Formula,
                       where: str) -> tuple[str | None, str | None, float | None, float]:
    """quantity, limit (op, value) and online_minutes of an observation indicator, checked.

    Readings of different quantities do not add up, so reading facts need a quantity; "over the limit"
    needs the limit.
    """
    quantity = raw.get("quantity")
    if quantity is not None and (not isinstance(quantity, str) or not quantity.strip()):
        raise ValidationFailed(f"{where}: quantity 必须是文本 / quantity must be a name")
    facts = set(formula.facts())
    if facts & {"readings", "readings_over", "reading_sum"} and not quantity:
        raise ValidationFailed(f"{where}: 读数指标需要 quantity / reading facts need a quantity")
    limit_raw = raw.get("limit")
    limit_op, limit = None, None
    if limit_raw is not None:
        try:
            limit_op, limit = str(limit_raw["op"]), float(limit_raw["value"])
        except (KeyError, TypeError, ValueError):
            raise ValidationFailed(f"{where}: limit 应为 {{op, value}} / limit must be {{op, value}}") from None
        if limit_op not in LIMIT_OPS:
            raise ValidationFailed(f"{where}: 未知的比较 {limit_op!r} / limit op must be one of {LIMIT_OPS}")
    if "readings_over" in facts and limit is None:
        raise ValidationFailed(f"{where}: readings_over 需要 limit / readings_over needs a limit = {{op, value}}")
    try:
        online = float(raw.get("online_minutes", 60.0))
    except (TypeError, ValueError):
        online = -1.0
    if online <= 0:
        raise ValidationFailed(f"{where}: online_minutes 必须为正数 / online_minutes must be positive")
    return (quantity.strip() if quantity else None), limit_op, limit, online


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(f"{where}: 缺少 {key} / missing {key!r}")
    return value.strip()


@dataclass(frozen=True, slots=True)
class IndicatorValue:
    """An indicator read for one area and period, with the sums it came from (so anyone can recompute it)."""

    indicator: str
    area: str
    value: float | None
    status: Status
    numerator: float | None
    denominator: float | None


def evaluate(indicator: Indicator, area: str, facts: Mapping[str, float | None]) -> IndicatorValue:
    """Apply the formula and thresholds to one area's facts for the indicator's slice."""
    value = indicator.formula.apply(facts)
    den = indicator.formula.denominator
    return IndicatorValue(indicator.code, area, value, indicator.judge(value),
                          facts.get(indicator.formula.numerator), facts.get(den) if den else None)


def tree_to_dict(tree: IndicatorTree) -> list[dict[str, Any]]:
    """The tree as JSON-ready data (for the API and docs)."""

    def ind(i: Indicator) -> dict[str, Any]:
        return {
            "code": i.code, "name_zh": i.name_zh, "name_en": i.name_en, "unit": i.unit, "grain": i.grain.value,
            "source": i.source.value, "description": i.description,
            "formula": {"numerator": i.formula.numerator, "denominator": i.formula.denominator,
                        "scale": i.formula.scale},
            "slice": {"categories": list(i.slice.categories), "sources": list(i.slice.sources),
                      "scenes": list(i.slice.scenes), "severities": list(i.slice.severities),
                      "quantity": i.slice.quantity,
                      "limit": None if i.slice.limit is None else {"op": i.slice.limit_op, "value": i.slice.limit}},
            "thresholds": None if i.thresholds is None else {
                "direction": i.thresholds.direction.value, "yellow": i.thresholds.yellow, "red": i.thresholds.red},
        }

    def node(n: Node) -> dict[str, Any]:
        return {"code": n.code, "kind": n.kind, "name_zh": n.name_zh, "name_en": n.name_en,
                "indicators": [ind(i) for i in n.indicators], "children": [node(c) for c in n.children]}

    return [node(s) for s in tree.sectors]
