"""The audit trail (数据铁笼): append-only rows, each sealed with a SHA-256 chained to the one before.

Whoever changes, deletes or inserts a row in the middle breaks the chain, and
`verify` names the first row that no longer matches. Appends are serialised
(an advisory lock on PostgreSQL; SQLite has a single writer, taken by inserting
first), and `prev_hash` is unique, so two writers can never both extend the same
row. What the log cannot show by itself is a cut of its newest rows: `verify`
prints the head hash so an operator can record it elsewhere and compare later.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from zhizhi.adapters.orm_access import AuditRow
from zhizhi.domain.access import Principal

GENESIS = "0" * 64
_LOCK_ID = 5_000_411  # PostgreSQL advisory lock number for appends


def _canonical(row: dict[str, Any]) -> bytes:
    at = row["at"]
    if isinstance(at, datetime):
        at = at.astimezone(UTC).isoformat(timespec="microseconds")
    body = {
        "at": at, "user_id": row["user_id"], "username": row["username"], "role": row["role"],
        "scope": row["scope"], "action": row["action"], "target": row["target"], "detail": row["detail"],
        "origin": row["origin"], "prev_hash": row["prev_hash"],
    }
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def seal(row: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(row)).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One act to record: who, what and on which target (the time is the batch's)."""

    principal: Principal
    action: str
    target: str
    detail: dict[str, Any] | None = None


def append(session: Session, principal: Principal, action: str, target: str,
           detail: dict[str, Any] | None = None, at: datetime | None = None) -> None:
    """Add one row in the caller's transaction (it is committed, or not, with the act it records)."""
    append_many(session, [Entry(principal, action, target, detail)], at=at)


def append_many(session: Session, entries: Sequence[Entry], at: datetime | None = None) -> None:
    """Add rows for a batch of acts (an import, a triage pass) in the caller's transaction.

    The chain is the same as row by row, but only the first row pays for taking the lock and
    reading the head: the rest are sealed in memory and written with one executemany INSERT,
    so auditing every item of a 500-row import batch costs little.
    """
    if not entries:
        return
    at = (at or datetime.now(UTC)).astimezone(UTC)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
    rows = [_values(e, at) for e in entries]
    first = AuditRow(**rows[0], prev_hash=f"pending-{uuid.uuid4().hex}"[:64], hash="")
    session.add(first)
    session.flush()  # takes the write lock on SQLite; the id orders the chain
    prev = session.scalar(select(AuditRow.hash).where(AuditRow.id < first.id).order_by(AuditRow.id.desc())
                          .limit(1))
    rows[0]["prev_hash"] = prev or GENESIS
    head = seal(rows[0])
    session.execute(update(AuditRow).where(AuditRow.id == first.id).values(prev_hash=rows[0]["prev_hash"],
                                                                          hash=head))
    session.expire(first)
    for row in rows[1:]:
        row["prev_hash"] = head
        head = row["hash"] = seal(row)
    if len(rows) > 1:
        # Under the lock taken above no other writer appends, so the ids follow this order.
        session.execute(insert(AuditRow.__table__), rows[1:])


def _values(e: Entry, at: datetime) -> dict[str, Any]:
    p = e.principal
    return {
        "at": at, "user_id": p.user_id, "username": p.username[:64], "role": p.role[:32],
        "scope": {"places": list(p.places), "departments": list(p.departments)},
        "action": e.action[:64], "target": e.target[:128], "detail": _jsonable(e.detail or {}),
        "origin": (p.origin or p.via)[:64],
    }


@dataclass(frozen=True)
class Verification:
    ok: bool
    rows: int
    head: str
    first_bad_id: int | None = None
    reason: str = ""


def _row_dict(r: AuditRow) -> dict[str, Any]:
    return {"at": r.at, "user_id": r.user_id, "username": r.username, "role": r.role, "scope": r.scope,
            "action": r.action, "target": r.target, "detail": r.detail, "origin": r.origin,
            "prev_hash": r.prev_hash}


def verify(session: Session, batch: int = 5000) -> Verification:
    """Walk the chain in id order; the first row whose link or seal does not match fails it."""
    prev, count, last_id = GENESIS, 0, 0
    while True:
        rows = session.scalars(select(AuditRow).where(AuditRow.id > last_id).order_by(AuditRow.id)
                               .limit(batch)).all()
        if not rows:
            return Verification(True, count, prev)
        for r in rows:
            if r.prev_hash != prev:
                return Verification(False, count, prev, r.id, "chain broken: a row before it was changed, "
                                                               "removed or inserted")
            if seal(_row_dict(r)) != r.hash:
                return Verification(False, count, prev, r.id, "row content does not match its hash")
            prev, count, last_id = r.hash, count + 1, r.id


def query(session: Session, *, username: str | None = None, action: str | None = None,
          target: str | None = None, since: datetime | None = None, until: datetime | None = None,
          offset: int = 0, limit: int = 100) -> Iterator[AuditRow]:
    stmt = select(AuditRow)
    if username:
        stmt = stmt.where(AuditRow.username == username)
    if action:
        stmt = stmt.where(AuditRow.action == action)
    if target:
        stmt = stmt.where(AuditRow.target == target)
    if since:
        stmt = stmt.where(AuditRow.at >= since)
    if until:
        stmt = stmt.where(AuditRow.at < until)
    yield from session.scalars(stmt.order_by(AuditRow.id.desc()).offset(offset).limit(limit))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value
    return str(value)
