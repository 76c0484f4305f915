"""Domain errors: each carries a message a dispatcher understands."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule the domain refuses to break."""

    code = "domain-error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "not-found"


class ValidationFailed(DomainError):
    code = "validation-failed"


class IllegalAction(DomainError):
    """An action that the case's current state does not allow (answered 409 by the API)."""

    code = "illegal-action"


class OutsideJurisdiction(DomainError):
    """A point that lies outside every unit of the city."""

    code = "outside-jurisdiction"
