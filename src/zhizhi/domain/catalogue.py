"""The catalogue: what a case can be about, who handles it, and how fast.

Three tables, all data a city replaces without touching code:

* categories — a two-level tree (大类/小类) of two kinds, after GB/T 30428:
  部件 (components, city assets) and 事件 (incidents). Codes are stable ASCII:
  ``C01``/``C0101`` for components, ``I01``/``I0101`` for incidents (two digits
  for the 大类, two more for the 小类, as in the standard's 部件 id). Each carries
  Chinese keywords the text classifier uses as hints and a default severity.
* departments (职能部门) and the levels at which they exist.
* responsibility rules: (category, area) → department and handling level. An
  area is a place-code prefix or ``*`` (the whole city). The most specific rule
  wins: the longest matching area first, then a 小类 rule over its 大类 rule —
  so a district can take over a whole 大类 without listing every 小类.

Deadlines per step (dispatch, handle, verify, optional accept), the reopen window
and the overdue escalation policy are set for the whole catalogue and overridden
per 大类 and 小类, field by field.

Everything is checked when the catalogue is built, and every record may carry the
file and row it came from, so a city's data error names its line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

from zhizhi.domain.calendar import Duration
from zhizhi.domain.errors import NotFound, ValidationFailed
from zhizhi.domain.places import Level

WHOLE_CITY = "*"
STEPS: tuple[str, ...] = ("dispatch", "handle", "verify", "accept")
REQUIRED_STEPS: tuple[str, ...] = ("dispatch", "handle", "verify")
ESCALATION_KEYS: tuple[str, ...] = ("after_overdue_hours", "levels_up", "repeat_every_hours")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from, for error messages: a file and a row (or TOML key)."""

    file: str
    row: int | str

    def __str__(self) -> str:
        return f"{self.file}:{self.row}"


def _fail(message: str, source: Source | None, **details: object) -> ValidationFailed:
    if source is None:
        return ValidationFailed(message, **details)
    return ValidationFailed(f"{source}: {message}", file=source.file, row=source.row, **details)


class Kind(StrEnum):
    """GB/T 30428's two classes of case."""

    COMPONENT = "component"  # 部件
    INCIDENT = "incident"  # 事件

    @property
    def label_zh(self) -> str:
        return "部件" if self is Kind.COMPONENT else "事件"

    @classmethod
    def parse(cls, value: str | Kind) -> Kind:
        text = str(value).strip().lower()
        for kind in cls:
            if text in (kind.value, kind.label_zh):
                return kind
        raise ValueError(f"unknown kind {value!r}; use 'component' (部件) or 'incident' (事件)")


class Severity(IntEnum):
    """Default urgency of a category; dispatchers may raise it case by case."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    URGENT = 4

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        text = str(value).strip()
        if text.isdigit():
            return cls(int(text))
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {value!r}; use one of {[s.name.lower() for s in cls]}"
            ) from None


@dataclass(frozen=True, slots=True)
class Category:
    """A 大类 (no parent) or 小类. `severity` None means: inherit from the 大类."""

    code: str
    name_zh: str
    name_en: str
    kind: Kind
    parent_code: str | None = None
    keywords: tuple[str, ...] = ()
    severity: Severity | None = None
    source: Source | None = field(default=None, compare=False, repr=False)

    @property
    def is_major(self) -> bool:
        """True for a 大类."""
        return self.parent_code is None


@dataclass(frozen=True, slots=True)
class Department:
    """A 职能部门 and the levels of government at which it has a unit."""

    code: str
    name_zh: str
    name_en: str
    levels: frozenset[Level]
    source: Source | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ResponsibilityRule:
    """(category, area) → department at a handling level. `area` is a code prefix or "*"."""

    category_code: str
    area: str
    department_code: str
    level: Level
    note: str = ""
    source: Source | None = field(default=None, compare=False, repr=False)

    def covers(self, place_codes: Iterable[str]) -> bool:
        return self.area == WHOLE_CITY or any(code.startswith(self.area) for code in place_codes)

    @property
    def area_specificity(self) -> int:
        return 0 if self.area == WHOLE_CITY else len(self.area)


@dataclass(frozen=True, slots=True)
class Responsibility:
    """The answer to "who handles this here": a department, a level and the rule that said so."""

    department_code: str
    level: Level
    rule: ResponsibilityRule


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """When an overdue case goes up a level (督办/上报).

    After `after_overdue_hours` overdue the case moves up `levels_up` levels; with
    `repeat_every_hours` it moves up again each time that much more has passed.
    It never goes above the city.
    """

    after_overdue_hours: float = 24.0
    levels_up: int = 1
    repeat_every_hours: float | None = None

    def steps(self, overdue_hours: float) -> int:
        """How many escalations `overdue_hours` past the deadline have earned."""
        if overdue_hours < self.after_overdue_hours:
            return 0
        if not self.repeat_every_hours:
            return 1
        return 1 + math.floor((overdue_hours - self.after_overdue_hours) / self.repeat_every_hours)

    def target_level(self, current: Level, overdue_hours: float) -> Level:
        """The level a case handled at `current` should now be supervised from."""
        up = self.steps(overdue_hours) * self.levels_up
        return Level(max(Level.CITY, current - up))


@dataclass(frozen=True, slots=True)
class DeadlineSettings:
    """Deadline fields as written for the whole catalogue (category_code None) or one category.

    Any field may be left out; it is then inherited from the 大类, then the defaults.
    """

    category_code: str | None
    steps: Mapping[str, Duration] = field(default_factory=dict)
    reopen_days: int | None = None
    escalation: Mapping[str, float | int | None] = field(default_factory=dict)
    source: Source | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DeadlinePolicy:
    """The resolved time limits of one category."""

    dispatch: Duration
    handle: Duration
    verify: Duration
    accept: Duration | None
    reopen_days: int
    escalation: EscalationPolicy

    def step(self, name: str) -> Duration | None:
        if name not in STEPS:
            raise NotFound(f"unknown step {name!r}; steps are {list(STEPS)}", step=name)
        return getattr(self, name)


class Catalogue:
    """Categories, departments, responsibility rules and deadlines, checked as a whole.

    Built from plain records (see `zhizhi.adapters.catalogue_files` for the files).
    Raises ValidationFailed, naming the file and row where known, for duplicate
    codes, unknown or wrong-kind parents, trees deeper than two levels, rules that
    name unknown categories or departments or a level the department lacks,
    duplicate rules, a 小类 with no citywide handler, and deadline settings for
    unknown categories or missing required steps.
    """

    def __init__(
        self,
        categories: Iterable[Category],
        departments: Iterable[Department],
        rules: Iterable[ResponsibilityRule],
        deadlines: Iterable[DeadlineSettings],
    ) -> None:
        self._categories = self._check_categories(list(categories))
        self._children: dict[str | None, list[Category]] = {}
        for category in self._categories.values():
            self._children.setdefault(category.parent_code, []).append(category)
        self._departments = self._check_departments(list(departments))
        self._rules = self._check_rules(list(rules))
        self._rules_by_category: dict[str, list[ResponsibilityRule]] = {}
        for rule in self._rules:
            self._rules_by_category.setdefault(rule.category_code, []).append(rule)
        self._check_citywide_coverage()
        self._policies = self._resolve_deadlines(list(deadlines))

    # -- validation --------------------------------------------------------------

    @staticmethod
    def _check_categories(categories: list[Category]) -> dict[str, Category]:
        by_code: dict[str, Category] = {}
        for category in categories:
            if not category.code.strip():
                raise _fail("category without a code", category.source)
            if category.code in by_code:
                first = by_code[category.code].source
                raise _fail(
                    f"duplicate category code {category.code!r} (first at {first})",
                    category.source,
                    code=category.code,
                )
            if not category.name_zh.strip():
                raise _fail(f"category {category.code!r} has no Chinese name", category.source)
            by_code[category.code] = category
        resolved: dict[str, Category] = {}
        for category in categories:
            if category.is_major:
                if category.severity is None:
                    category = replace(category, severity=Severity.NORMAL)
                resolved[category.code] = category
                continue
            parent = by_code.get(category.parent_code or "")
            if parent is None:
                raise _fail(
                    f"category {category.code!r} names unknown parent {category.parent_code!r}",
                    category.source,
                    code=category.code,
                )
            if not parent.is_major:
                raise _fail(
                    f"category {category.code!r}: parent {parent.code!r} is itself a 小类 "
                    f"(the tree has two levels)",
                    category.source,
                    code=category.code,
                )
            if parent.kind is not category.kind:
                raise _fail(
                    f"category {category.code!r} is a {category.kind} but its parent "
                    f"{parent.code!r} is a {parent.kind}",
                    category.source,
                    code=category.code,
                )
            if category.severity is None:
                category = replace(category, severity=parent.severity or Severity.NORMAL)
            resolved[category.code] = category
        return resolved

    @staticmethod
    def _check_departments(departments: list[Department]) -> dict[str, Department]:
        by_code: dict[str, Department] = {}
        for department in departments:
            if department.code in by_code:
                raise _fail(
                    f"duplicate department code {department.code!r}",
                    department.source,
                    code=department.code,
                )
            if not department.levels:
                raise _fail(f"department {department.code!r} exists at no level", department.source)
            by_code[department.code] = department
        return by_code

    def _check_rules(self, rules: list[ResponsibilityRule]) -> list[ResponsibilityRule]:
        seen: dict[tuple[str, str], ResponsibilityRule] = {}
        for rule in rules:
            if rule.category_code not in self._categories:
                raise _fail(
                    f"rule names unknown category {rule.category_code!r}",
                    rule.source,
                    category=rule.category_code,
                )
            department = self._departments.get(rule.department_code)
            if department is None:
                raise _fail(
                    f"rule names unknown department {rule.department_code!r}",
                    rule.source,
                    department=rule.department_code,
                )
            if rule.level not in department.levels:
                levels = sorted(level.name.lower() for level in department.levels)
                raise _fail(
                    f"department {rule.department_code!r} has no unit at level "
                    f"{rule.level.name.lower()} (it has {levels})",
                    rule.source,
                    department=rule.department_code,
                )
            if not rule.area.strip():
                raise _fail("rule with an empty area (use '*' for the whole city)", rule.source)
            key = (rule.category_code, rule.area)
            if key in seen:
                raise _fail(
                    f"second rule for category {rule.category_code!r} in area {rule.area!r} "
                    f"(first at {seen[key].source})",
                    rule.source,
                    category=rule.category_code,
                )
            seen[key] = rule
        return rules

    def _check_citywide_coverage(self) -> None:
        for category in self._categories.values():
            if category.is_major:
                continue
            if self._candidates(category.code, []) == []:
                raise _fail(
                    f"小类 {category.code!r} ({category.name_zh}) has no citywide ('*') rule, "
                    f"neither for itself nor for its 大类 {category.parent_code!r}",
                    category.source,
                    code=category.code,
                )

    def _resolve_deadlines(self, settings: list[DeadlineSettings]) -> dict[str, DeadlinePolicy]:
        by_key: dict[str | None, DeadlineSettings] = {}
        for item in settings:
            if item.category_code is not None and item.category_code not in self._categories:
                raise _fail(
                    f"deadlines for unknown category {item.category_code!r}",
                    item.source,
                    category=item.category_code,
                )
            if item.category_code in by_key:
                raise _fail(f"deadlines given twice for {item.category_code!r}", item.source)
            unknown = set(item.steps) - set(STEPS)
            if unknown:
                raise _fail(f"unknown deadline steps {sorted(unknown)}; use {list(STEPS)}", item.source)
            unknown = set(item.escalation) - set(ESCALATION_KEYS)
            if unknown:
                raise _fail(
                    f"unknown escalation keys {sorted(unknown)}; use {list(ESCALATION_KEYS)}", item.source
                )
            by_key[item.category_code] = item
        defaults = by_key.get(None)
        if defaults is None:
            raise ValidationFailed("deadlines: no defaults given")
        missing = [step for step in REQUIRED_STEPS if step not in defaults.steps]
        if missing:
            raise _fail(f"deadline defaults lack steps {missing}", defaults.source)
        policies: dict[str, DeadlinePolicy] = {}
        for category in self._categories.values():
            chain = [by_key.get(category.code), by_key.get(category.parent_code), defaults]
            layers = [layer for layer in chain if layer is not None]
            try:
                policies[category.code] = _merge(layers)
            except (TypeError, ValueError) as exc:
                raise _fail(f"deadlines of {category.code!r}: {exc}", layers[0].source) from exc
        return policies

    # -- categories --------------------------------------------------------------

    def category(self, code: str) -> Category:
        try:
            return self._categories[code]
        except KeyError:
            raise NotFound(f"no category {code!r}", code=code) from None

    def children(self, code: str | None) -> list[Category]:
        """The 小类 of a 大类; with None, the 大类 themselves."""
        if code is not None:
            self.category(code)
        return list(self._children.get(code, []))

    def categories(self, kind: Kind | str | None = None) -> list[Category]:
        """All categories (大类 and 小类, in file order), optionally of one kind."""
        wanted = Kind.parse(kind) if kind is not None else None
        return [c for c in self._categories.values() if wanted is None or c.kind is wanted]

    def leaves(self, kind: Kind | str | None = None) -> list[Category]:
        """The 小类 only — what a case is filed under."""
        return [c for c in self.categories(kind) if not c.is_major]

    def find_category(self, text: str) -> Category | None:
        """A category by code, exact Chinese or English name, or a name fragment that is unique.

        Exact matches win over fragments; a fragment matching several names gives
        None rather than a guess.
        """
        query = text.strip()
        if not query:
            return None
        folded = query.casefold()
        for category in self._categories.values():
            if category.code.casefold() == folded:
                return category
        for category in self._categories.values():
            if category.name_zh == query or category.name_en.casefold() == folded:
                return category
        fragments = [
            c
            for c in self._categories.values()
            if query in c.name_zh or (len(folded) >= 3 and folded in c.name_en.casefold())
        ]
        return fragments[0] if len(fragments) == 1 else None

    # -- departments and responsibility -------------------------------------------

    def department(self, code: str) -> Department:
        try:
            return self._departments[code]
        except KeyError:
            raise NotFound(f"no department {code!r}", code=code) from None

    def departments(self) -> list[Department]:
        return list(self._departments.values())

    @property
    def rules(self) -> list[ResponsibilityRule]:
        return list(self._rules)

    def _candidates(self, category_code: str, place_codes: list[str]) -> list[ResponsibilityRule]:
        category = self.category(category_code)
        codes = [category.code] if category.parent_code is None else [category.code, category.parent_code]
        rules = [rule for code in codes for rule in self._rules_by_category.get(code, [])]
        return [rule for rule in rules if rule.covers(place_codes)]

    def responsible(self, category_code: str, place_codes_top_down: Iterable[str]) -> Responsibility:
        """Who handles `category_code` at the place given by its codes from city to grid.

        The longest matching area prefix wins, then a 小类 rule over a 大类 rule;
        among equals the rule listed first wins. With no place codes only citywide
        rules apply.
        """
        places = [code for code in place_codes_top_down if code]
        candidates = self._candidates(category_code, places)
        if not candidates:
            raise NotFound(f"no department handles category {category_code!r}", code=category_code)

        def rank(indexed: tuple[int, ResponsibilityRule]) -> tuple[int, int, int]:
            index, rule = indexed
            return (rule.area_specificity, int(rule.category_code == category_code), -index)

        _, best = max(enumerate(candidates), key=rank)
        return Responsibility(best.department_code, best.level, best)

    # -- deadlines ---------------------------------------------------------------

    def policy(self, category_code: str) -> DeadlinePolicy:
        self.category(category_code)
        return self._policies[category_code]

    def deadline(self, category_code: str, step: str) -> Duration:
        """The time limit of `step` for a category; NotFound if the step has none (e.g. accept)."""
        duration = self.policy(category_code).step(step)
        if duration is None:
            raise NotFound(f"category {category_code!r} sets no {step!r} deadline", step=step)
        return duration

    def reopen_days(self, category_code: str) -> int:
        return self.policy(category_code).reopen_days

    def escalation(self, category_code: str) -> EscalationPolicy:
        return self.policy(category_code).escalation


def _merge(layers: list[DeadlineSettings]) -> DeadlinePolicy:
    """Resolve each field from the most specific layer that sets it."""

    def step(name: str) -> Duration | None:
        return next((layer.steps[name] for layer in layers if name in layer.steps), None)

    def escalation_value(name: str) -> float | int | None:
        return next((layer.escalation[name] for layer in layers if name in layer.escalation), None)

    def required(name: str) -> Duration:
        duration = step(name)
        if duration is None:  # the defaults are checked to hold every required step
            raise ValueError(f"no {name!r} deadline")
        return duration

    defaults = EscalationPolicy()
    after = escalation_value("after_overdue_hours")
    levels_up = escalation_value("levels_up")
    repeat = escalation_value("repeat_every_hours")
    escalation = EscalationPolicy(
        after_overdue_hours=float(after) if after is not None else defaults.after_overdue_hours,
        levels_up=int(levels_up) if levels_up is not None else defaults.levels_up,
        repeat_every_hours=float(repeat) if repeat else None,
    )
    if escalation.after_overdue_hours < 0 or escalation.levels_up < 0:
        raise ValueError("escalation hours and levels cannot be negative")
    reopen = next((layer.reopen_days for layer in layers if layer.reopen_days is not None), 0)
    if reopen < 0:
        raise ValueError("reopen_days cannot be negative")
    return DeadlinePolicy(
        dispatch=required("dispatch"),
        handle=required("handle"),
        verify=required("verify"),
        accept=step("accept"),
        reopen_days=int(reopen),
        escalation=escalation,
    )
