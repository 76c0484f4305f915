"""Tables for people and access: accounts, sessions, API keys, audit log, person and enterprise records."""

from __future__ import annotations

from zhizhi.adapters.orm import Base  # noqa: F401
