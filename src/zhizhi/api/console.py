"""The operations console (一屏掌控): static pages and live updates (server-sent events)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""
