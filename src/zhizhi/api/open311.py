"""The Open311 GeoReport v2 citizen API at /open311/v2."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi


def install(app: FastAPI, zz: Zhizhi) -> None:
    """Add this capability's routes to the app."""
