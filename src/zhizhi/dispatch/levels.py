"""Handling level (处置层级) as data: which level handles a case, and why, in words for the timeline.

琐事不出网格、小事不出村社、大事不出镇街、难事区镇会商. The responsibility table gives a category's
usual department and level; the rules in `data/dispatch/levels.toml` move the level up for the
category's severity, alarming words, vulnerable people involved, or many linked reports. Pure
functions over plain data: no storage, no clock.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from zhizhi.domain.places import Level


class LevelRulesError(ValueError):
    """A rules file that cannot be used; the message names the rule."""


@dataclass(frozen=True)
class LevelRule:
    name: str
    words: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    linked_reports: int | None = None
    at_least: Level | None = None
    raise_by: int = 0
    at_most: Level | None = None

    def matches(self, *, text: str, severity: str | None, category_code: str, linked_reports: int) -> str | None:
        """The reason this rule applies, or None."""
        if self.words:
            hit = next((w for w in self.words if w in text), None)
            return f"文本含「{hit}」" if hit else None
        if self.severity:
            return f"类别风险等级为 {severity}" if severity in self.severity else None
        if self.categories:
            hit = next((c for c in self.categories if category_code.startswith(c)), None)
            return f"类别 {category_code} 属于 {hit}" if hit else None
        if self.linked_reports is not None:
            return f"已有 {linked_reports} 件重复反映" if linked_reports >= self.linked_reports else None
        return None


@dataclass(frozen=True)
class LevelDecision:
    level: Level
    department_code: str
    tier: str  # 琐事不出网格 …
    reasons: list[str] = field(default_factory=list)

    def explain(self, department_name: str) -> str:
        why = "；".join(self.reasons) if self.reasons else "按责任清单默认层级"
        return f"派遣至{department_name}（{self.level.label_zh}级处置，{self.tier}），因为：{why}"


@dataclass(frozen=True)
class LevelRules:
    rules: tuple[LevelRule, ...]
    ceiling: Level = Level.DISTRICT
    tiers: Mapping[Level, str] = field(default_factory=dict)
    fallback_department: Mapping[Level, str] = field(default_factory=dict)
    raised_tiers: Mapping[Level, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> LevelRules:
        env = os.environ.get("ZHIZHI_DISPATCH_LEVEL_RULES")
        if path is None and env:
            path = Path(env)
        if path is None:
            text = resources.files("zhizhi.data.dispatch").joinpath("levels.toml").read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(tomllib.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LevelRules:
        def lv(value: Any, where: str) -> Level:
            try:
                return Level.parse(value)
            except ValueError as exc:
                raise LevelRulesError(f"{where}: {exc}") from None

        rules = []
        for i, r in enumerate(data.get("rule", []), start=1):
            name = r.get("name") or f"rule {i}"
            conditions = [k for k in ("words", "severity", "categories", "linked_reports") if k in r]
            if len(conditions) != 1:
                raise LevelRulesError(f"规则「{name}」需要恰好一个条件 / rule {name!r} needs exactly one condition, "
                                      f"has {conditions}")
            if not any(k in r for k in ("at_least", "raise", "at_most")):
                raise LevelRulesError(f"规则「{name}」没有效果 / rule {name!r} has no effect (at_least|raise|at_most)")
            rules.append(LevelRule(
                name=name, words=tuple(r.get("words", ())), severity=tuple(r.get("severity", ())),
                categories=tuple(r.get("categories", ())),
                linked_reports=int(r["linked_reports"]) if "linked_reports" in r else None,
                at_least=lv(r["at_least"], name) if "at_least" in r else None, raise_by=int(r.get("raise", 0)),
                at_most=lv(r["at_most"], name) if "at_most" in r else None))
        return cls(tuple(rules), lv(data.get("ceiling", "district"), "ceiling"),
                   {lv(k, "tiers"): v for k, v in data.get("tiers", {}).items()},
                   {lv(k, "fallback_department"): v for k, v in data.get("fallback_department", {}).items()},
                   {lv(k, "raised_tiers"): v for k, v in data.get("raised_tiers", {}).items()})

    def decide(self, *, category_code: str, category_name: str, parent_code: str | None, severity: str | None,
               text: str, linked_reports: int, default_department: str, default_level: Level,
               department_levels: Mapping[str, frozenset[Level]]) -> LevelDecision:
        """Apply every matching rule in order to the table's default level; explain each change."""
        level = default_level
        reasons: list[str] = []
        cap_low: Level | None = None
        for rule in self.rules:
            why = rule.matches(text=text, severity=severity, category_code=category_code,
                               linked_reports=linked_reports)
            if why is None:
                continue
            before = level
            if rule.at_least is not None and level > rule.at_least:
                level = rule.at_least
            if rule.raise_by:
                level = Level(max(int(self.ceiling), int(level) - rule.raise_by))
            if rule.at_most is not None:
                cap_low = rule.at_most
            if level != before:
                reasons.append(f"{rule.name}（{why}）：{before.label_zh}→{level.label_zh}")
        if level < self.ceiling and default_level >= self.ceiling:
            level = self.ceiling
        if cap_low is not None and level < cap_low:
            level = cap_low
        department = default_department
        if level not in department_levels.get(department, frozenset({level})):
            fallback = self.fallback_department.get(level)
            if fallback:
                reasons.append(f"{default_department} 在{level.label_zh}级没有处置单位，交{fallback}")
                department = fallback
        if not reasons:
            reasons.append(f"{category_name}按责任清单由{level.label_zh}级处置")
        tier = self.tiers.get(level, level.label_zh)
        if level < default_level:
            tier = self.raised_tiers.get(level, tier)
        return LevelDecision(level, department, tier, reasons)
