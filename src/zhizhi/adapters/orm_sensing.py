"""Tables for perception: devices, observations, alarm rules and alarms."""

from __future__ import annotations

from zhizhi.adapters.orm import Base  # noqa: F401
