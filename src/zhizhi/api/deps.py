"""Shared FastAPI dependencies: who is calling (`CurrentPrincipal`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from zhizhi.domain.access import SYSTEM_PRINCIPAL, Principal


def current_principal(request: Request) -> Principal:
    """The caller. Placeholder until the access capability authenticates requests."""
    return SYSTEM_PRINCIPAL


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
