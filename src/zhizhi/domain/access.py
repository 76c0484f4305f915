"""Who is acting: the principal, its roles and its scope (分权分域).

A scope is a set of place subtrees and/or departments. This module is the contract
every capability codes against; the people-and-access capability fills in roles,
permissions and enforcement.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """An authenticated user or integration, as the service layer sees it."""

    user_id: int | None
    username: str
    roles: frozenset[str] = field(default_factory=frozenset)
    places: tuple[str, ...] = ()        # place codes whose subtrees are in scope; () = no place limit
    departments: tuple[str, ...] = ()   # department codes in scope; () = no department limit
    display_name: str = ""

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


# Until accounts exist, entry points act as this principal.
SYSTEM_PRINCIPAL = Principal(user_id=None, username="system", roles=frozenset({"admin"}), display_name="系统")
