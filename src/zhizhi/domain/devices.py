"""Sensing devices (感知设备) and what they measure: quantities, device types, scenes.

Plain data, no storage. A device is located in the place hierarchy when it is
registered, so every alarm it raises (and every case that alarm opens) already
knows its grid without a look-up on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from zhizhi.domain.errors import ValidationFailed


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"      # kept on record, readings refused
    MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class Quantity:
    """A measured quantity with its physical range: a reading outside it is refused, not stored."""

    code: str
    name_zh: str
    unit: str
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class DeviceType:
    code: str
    name_zh: str
    quantities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScenePolicy:
    """How a scene turns an alarm into a case (category, department, level, deadline)."""

    category: str
    department: str
    level: str
    deadline_minutes: int
    min_severity: str = "major"
    title: str = ""


@dataclass(frozen=True, slots=True)
class Scene:
    code: str
    name_zh: str
    case: ScenePolicy | None = None


@dataclass
class Device:
    """One registered device. `place_code` is the grid it lies in (located at registration)."""

    code: str
    type: str
    scene: str
    lon: float
    lat: float
    id: int | None = None
    model: str = ""
    name: str = ""
    department_code: str | None = None
    place_code: str | None = None
    district_code: str | None = None
    status: DeviceStatus = DeviceStatus.ACTIVE
    last_seen: datetime | None = None
    rule_overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    registered_at: datetime | None = None


def validate_device(device: Device, types: dict[str, DeviceType], scenes: dict[str, Scene]) -> None:
    """The checks a device passes before it is registered (its location is checked by the gazetteer)."""
    if not device.code or len(device.code) > 64 or any(c in device.code for c in " /#+'\"()"):
        raise ValidationFailed(f"设备编码无效 {device.code!r} / device code must be 1–64 chars without spaces, "
                               "quotes, parentheses, '/', '#', '+'", field="code")
    if device.type not in types:
        raise ValidationFailed(f"未知设备类型 {device.type!r} / unknown device type", field="type",
                               allowed=sorted(types))
    if device.scene not in scenes:
        raise ValidationFailed(f"未知场景 {device.scene!r} / unknown scene", field="scene", allowed=sorted(scenes))
    if not (-180 <= device.lon <= 180 and -90 <= device.lat <= 90):
        raise ValidationFailed("经纬度超出范围 / longitude or latitude out of range", field="lon")
