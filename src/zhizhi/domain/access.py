"""Who is acting: the principal, its roles and its scope (分权分域).

A scope is a set of place subtrees and/or departments. This module is the contract
every capability codes against and the one place where the rules live: which role
may do which action (分权), and which cases a principal may see at all (分域).
It is pure: the service layer asks it, the repository turns a `Scope` into SQL.

Out of scope is answered as "not found" by the service layer, so that the
existence of another street's case does not leak; in scope but not permitted is
`Forbidden`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from zhizhi.domain.errors import DomainError


class Forbidden(DomainError):
    """The caller sees the thing but its role may not do this (answered 403)."""

    code = "forbidden"


class Unauthenticated(DomainError):
    """No valid credentials (answered 401)."""

    code = "unauthenticated"


class Throttled(DomainError):
    """Too many failed logins (answered 429 with Retry-After)."""

    code = "throttled"


@dataclass(frozen=True)
class Principal:
    """An authenticated user or integration, as the service layer sees it."""

    user_id: int | None
    username: str
    roles: frozenset[str] = field(default_factory=frozenset)
    places: tuple[str, ...] = ()        # place codes whose subtrees are in scope; () = no place limit
    departments: tuple[str, ...] = ()   # department codes in scope; () = no department limit
    display_name: str = ""
    origin: str = ""                    # where the request came from (client address), for the audit log
    via: str = ""                       # "token", "api_key", "cli" …

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def role(self) -> str:
        """The principal's most powerful role, for timelines and the audit log ("system" for jobs)."""
        if self.via == SYSTEM_VIA:
            return "system"
        for r in ROLES:
            if r in self.roles:
                return r
        return next(iter(sorted(self.roles)), "none")


# Until accounts exist, entry points act as this principal.
SYSTEM_PRINCIPAL = Principal(user_id=None, username="system", roles=frozenset({"admin"}), display_name="系统")
#: `Principal.via` of the system's own jobs.
SYSTEM_VIA = "system"


def system_principal(job: str) -> Principal:
    """Who writes when no person does: an import, triage, the overdue job, an alarm, a key rotation.

    The audit log records these writes as `system:<job>` with the role "system", so an auditor
    can tell what the machine did from what a person did. Jobs act with an administrator's
    rights (they run on the server, started by an operator or a schedule).
    """
    return Principal(user_id=None, username=f"system:{job}", roles=frozenset({"admin"}), display_name="系统",
                     via=SYSTEM_VIA)

# --------------------------------------------------------------------------------------------
# Roles (分权)
# --------------------------------------------------------------------------------------------
#: Role codes, most powerful first.
ROLES: tuple[str, ...] = ("admin", "leader", "dispatcher", "auditor", "handler", "grid_worker", "integrator",
                          "citizen")
ROLE_ZH = {"admin": "系统管理员", "leader": "领导/督查", "dispatcher": "调度员", "auditor": "审计员",
           "handler": "部门处置人员", "grid_worker": "网格员", "integrator": "系统对接/集成商", "citizen": "市民"}

_CASE_ACTIONS_ALL = frozenset({
    "register", "reject", "dispatch", "accept", "return", "reassign", "handle", "verify", "evaluate",
    "escalate", "suspend", "resume", "supervise", "reopen", "locate", "categorise",
})

#: Perception rights (感知): reading devices, readings and alarms; acknowledging or clearing an alarm by hand;
#: registering, changing and retiring devices; posting readings. Each is further limited by the sensing scope.
_SENSING_ALL = frozenset({"read_sensing", "acknowledge_alarms", "manage_devices", "ingest_observations"})

#: Which permissions each role has. Case-loop actions use the action code; other rights are named.
#: Perception: the people on duty (dispatcher, leader, the owning department's handler) read and acknowledge
#: alarms in their places; the auditor and the grid worker only read; devices are registered and changed by
#: the administrator and by the integrator that connects them (系统对接), which also posts their readings.
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": _CASE_ACTIONS_ALL | _SENSING_ALL | {"report", "read_cases", "unmask", "manage_users", "read_audit",
                                                 "read_records", "edit_records", "unmask_records"},
    "leader": frozenset({"read_cases", "supervise", "escalate", "reopen", "verify", "read_records",
                         "read_sensing", "acknowledge_alarms"}),
    "dispatcher": frozenset({"report", "read_cases", "unmask", "register", "reject", "dispatch", "reassign",
                             "escalate", "supervise", "verify", "evaluate", "reopen", "locate", "categorise",
                             "suspend", "resume", "read_records", "edit_records", "unmask_records",
                             "read_sensing", "acknowledge_alarms"}),
    "auditor": frozenset({"read_cases", "read_audit", "read_records", "read_sensing"}),
    "handler": frozenset({"read_cases", "unmask", "accept", "return", "handle", "suspend", "resume",
                          "escalate", "read_sensing", "acknowledge_alarms"}),
    "grid_worker": frozenset({"report", "read_cases", "unmask", "accept", "return", "handle", "escalate",
                              "locate", "categorise", "read_records", "edit_records", "unmask_records",
                              "read_sensing"}),
    "integrator": frozenset({"read_sensing", "ingest_observations", "manage_devices"}),
    "citizen": frozenset({"report"}),
}

#: Roles whose empty place list means the whole city; the others see nothing without a scope.
CITY_WIDE_WHEN_UNSCOPED = frozenset({"admin", "leader", "dispatcher", "auditor"})


def permissions(principal: Principal) -> frozenset[str]:
    out: set[str] = set()
    for r in principal.roles:
        out |= PERMISSIONS.get(r, frozenset())
    return frozenset(out)


def may(principal: Principal, permission: str) -> bool:
    return permission in permissions(principal)


def require(principal: Principal, permission: str) -> None:
    """Raise `Forbidden` unless one of the principal's roles grants `permission`."""
    if not may(principal, permission):
        raise Forbidden(f"当前角色无权执行 {permission} / your role may not {permission}",
                        permission=permission, roles=sorted(principal.roles))


# --------------------------------------------------------------------------------------------
# Scope (分域)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scope:
    """Which cases (and records) a principal sees: the conjunction of a place and a department limit.

    `places`: a case is in scope when one of its place codes (city … grid) is listed;
    `departments`: when its department is listed. An empty tuple means no limit of that
    kind; `nothing` means the principal sees no case at all.
    """

    places: tuple[str, ...] = ()
    departments: tuple[str, ...] = ()
    nothing: bool = False

    @property
    def unlimited(self) -> bool:
        return not self.nothing and not self.places and not self.departments

    def admits(self, lineage: Iterable[str | None], department: str | None) -> bool:
        if self.nothing:
            return False
        if self.places and not set(self.places).intersection(c for c in lineage if c):
            return False
        return not (self.departments and department not in self.departments)

    def admits_place(self, lineage: Iterable[str | None]) -> bool:
        """For things that belong to a place only (records): the place limit alone."""
        if self.nothing:
            return False
        return not self.places or bool(set(self.places).intersection(c for c in lineage if c))


NO_SCOPE = Scope(nothing=True)


def scope_of(principal: Principal) -> Scope:
    """The principal's case scope, from its roles, places and departments.

    A department handler sees what is assigned to its departments (within its places, if
    any); a grid worker its grids; city-level roles the whole city when no place is given.
    Several roles widen nothing: the scope is the one of the account's places/departments.
    """
    if not principal.roles.intersection(p for p, perms in PERMISSIONS.items() if "read_cases" in perms):
        return NO_SCOPE
    places, departments = tuple(principal.places), tuple(principal.departments)
    if principal.has_role(*CITY_WIDE_WHEN_UNSCOPED) and not principal.has_role("handler"):
        return Scope(places=places, departments=departments)
    if principal.has_role("handler"):
        if not departments:
            return NO_SCOPE
        return Scope(places=places, departments=departments)
    # grid workers (and other field roles) need places
    if not places:
        return NO_SCOPE
    return Scope(places=places, departments=departments)


def sensing_scope_of(principal: Principal) -> Scope:
    """Which devices (and their datastreams, readings and alarms) a principal sees: 感知分域.

    A device is in scope when its grid lies under one of the scope's places and its owner department is one of
    the scope's departments (each limit only when given, as for cases). City-level roles without places see the
    whole city; a handler needs departments (it sees its department's devices); an integrator needs places or
    departments (the devices it connects); a grid worker needs places. Anyone else sees no device.
    """
    perms = permissions(principal)
    if not perms.intersection(_SENSING_ALL):
        return NO_SCOPE
    places, departments = tuple(principal.places), tuple(principal.departments)
    if principal.has_role(*CITY_WIDE_WHEN_UNSCOPED) and not principal.has_role("handler"):
        return Scope(places=places, departments=departments)
    if principal.has_role("handler"):
        return Scope(places=places, departments=departments) if departments else NO_SCOPE
    if principal.has_role("integrator"):
        return Scope(places=places, departments=departments) if places or departments else NO_SCOPE
    return Scope(places=places, departments=departments) if places else NO_SCOPE


def allowed_case_actions(principal: Principal, state_allowed: Iterable[str]) -> list[str]:
    """The actions this principal may do on an in-scope case whose state allows `state_allowed`."""
    perms = permissions(principal)
    return [a for a in state_allowed if a in perms]


# --------------------------------------------------------------------------------------------
# Personal data shown masked
# --------------------------------------------------------------------------------------------
def mask_phone(phone: str | None) -> str | None:
    """138****1234."""
    if not phone:
        return None
    digits = "".join(ch for ch in phone if ch.isdigit())
    if len(digits) < 7:
        return "*" * len(digits)
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


def mask_name(name: str | None) -> str | None:
    """张*, 欧阳** — the family name only."""
    if not name:
        return None
    return name[0] + "*" * max(1, len(name) - 1)


def mask_address(address: str | None, keep: int = 6) -> str | None:
    """The first characters (usually district and street), the rest starred."""
    if not address:
        return None
    if len(address) <= keep:
        return address[:2] + "*" * max(1, len(address) - 2)
    return address[:keep] + "****"


def mask_id_number(value: str | None) -> str | None:
    """5001**********1234."""
    if not value:
        return None
    if len(value) <= 8:
        return "*" * len(value)
    return value[:4] + "*" * (len(value) - 8) + value[-4:]
