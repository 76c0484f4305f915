"""Reads and checks under the caller's scope (分域): the one place entry points go through.

A case outside the principal's scope does not exist for it (`NotFound`), so that
the answer does not reveal that another street has such a case. In scope but not
permitted by the role is `Forbidden`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from zhizhi.domain.access import Principal, allowed_case_actions, scope_of
from zhizhi.domain.case import Case
from zhizhi.domain.errors import IllegalAction, NotFound

if TYPE_CHECKING:
    from zhizhi.adapters.repository import CaseFilter
    from zhizhi.service.uow import UnitOfWork


def _lineage(case: Case) -> tuple[str | None, ...]:
    loc = case.location
    return (loc.city, loc.district, loc.street, loc.community, loc.grid)


def case_in_scope(principal: Principal, case: Case) -> bool:
    return scope_of(principal).admits(_lineage(case), case.department_code)


def ensure_visible(principal: Principal, case: Case | None, case_id: int) -> Case:
    """The case, or `NotFound` when it is missing or outside the principal's scope (same answer)."""
    if case is None or not case_in_scope(principal, case):
        raise NotFound(f"案件 {case_id} 不存在 / case {case_id} not found")
    return case


def get_case(uow: UnitOfWork, principal: Principal, case_id: int) -> Case:
    """One case as the principal may see it (inside an open unit of work)."""
    return ensure_visible(principal, uow.cases.get(case_id), case_id)


def list_cases(uow: UnitOfWork, principal: Principal, flt: CaseFilter) -> tuple[list[Case], int]:
    """A page of the cases in the principal's scope; the scope is a SQL condition, not a post-filter."""
    return uow.cases.list(replace(flt, scope=scope_of(principal)))


def allowed_actions(principal: Principal, case: Case) -> list[str]:
    """The actions this principal may do on this case now (state × role)."""
    if not case_in_scope(principal, case):
        return []
    return allowed_case_actions(principal, [a.value for a in case.allowed_actions()])


def report_answer(uow: UnitOfWork, principal: Principal, case_id: int, created: bool) -> Case:
    """The case to show after a report: a new one to its reporter; a repeat (same source id) only to
    whom sees it or reported it first, else `Conflict` without content (the source id is taken)."""
    from sqlalchemy import select

    from zhizhi.adapters.orm_access import AuditRow

    case = uow.cases.get(case_id)
    assert case is not None
    if created or case_in_scope(principal, case):
        return case
    reporter = uow.session.scalar(select(AuditRow.user_id).where(AuditRow.target == f"case:{case_id}",
                                                                AuditRow.action == "case.report").limit(1))
    if principal.user_id is not None and reporter == principal.user_id:
        return case
    raise IllegalAction("来源编号已被使用 / this source and source_id were already reported", allowed=[])
