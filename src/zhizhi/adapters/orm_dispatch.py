"""Tables for smart dispatch: model registry, dispatcher decisions, duplicate links, whistle tasks."""

from __future__ import annotations

from zhizhi.adapters.orm import Base  # noqa: F401
