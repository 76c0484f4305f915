"""The sensing catalogue: quantities, device types, scenes and rules, read from TOML data."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhizhi.domain.alarms import AlarmRule, parse_rule
from zhizhi.domain.devices import DeviceType, Quantity, Scene, ScenePolicy
from zhizhi.domain.errors import ValidationFailed

PACKAGED_FILE = Path(__file__).resolve().parent.parent / "data" / "sensing" / "scenes.toml"


@dataclass(frozen=True)
class SensingCatalogue:
    quantities: dict[str, Quantity]
    device_types: dict[str, DeviceType]
    scenes: dict[str, Scene]
    rules: tuple[AlarmRule, ...]

    def rules_for(self, device_type: str, scene: str) -> list[AlarmRule]:
        return [r for r in self.rules if r.device_type == device_type and r.scene == scene]

    def rule(self, code: str) -> AlarmRule:
        for r in self.rules:
            if r.code == code:
                return r
        raise ValidationFailed(f"未知规则 {code!r} / unknown rule")


def load_sensing_catalogue(path: Path | None = None) -> SensingCatalogue:
    """The packaged scenes, or a city's own file."""
    raw = tomllib.loads(Path(path or PACKAGED_FILE).read_text("utf-8"))
    return parse_catalogue(raw)


def parse_catalogue(raw: dict[str, Any]) -> SensingCatalogue:
    quantities = {code: Quantity(code, q.get("name_zh", code), q.get("unit", ""), float(q["min"]), float(q["max"]))
                  for code, q in raw.get("quantities", {}).items()}
    types = {code: DeviceType(code, t.get("name_zh", code), tuple(t["quantities"]))
             for code, t in raw.get("device_types", {}).items()}
    for t in types.values():
        unknown = [q for q in t.quantities if q not in quantities]
        if unknown:
            raise ValidationFailed(f"设备类型 {t.code} 引用了未知量 {unknown} / unknown quantities")
    scenes: dict[str, Scene] = {}
    for code, s in raw.get("scenes", {}).items():
        case = s.get("case")
        policy = ScenePolicy(case["category"], case["department"], case.get("level", "street"),
                             int(case["deadline_minutes"]), case.get("min_severity", "major"),
                             case.get("title", "")) if case else None
        scenes[code] = Scene(code, s.get("name_zh", code), policy)
    rules = tuple(parse_rule(r) for r in raw.get("rules", []))
    codes = [r.code for r in rules]
    if len(set(codes)) != len(codes):
        raise ValidationFailed("规则编码重复 / duplicate rule codes")
    for r in rules:
        if r.device_type not in types or r.scene not in scenes:
            raise ValidationFailed(f"规则 {r.code} 引用了未知设备类型或场景 / unknown device type or scene")
        missing = [q for q in r.quantities() if q not in types[r.device_type].quantities]
        if missing:
            raise ValidationFailed(f"规则 {r.code}: 设备类型 {r.device_type} 不测量 {missing}")
    return SensingCatalogue(quantities, types, scenes, rules)
