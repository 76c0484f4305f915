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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
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


def append(session: Session, principal: Principal, action: str, target: str,
           detail: dict[str, Any] | None = None, at: datetime | None = None) -> None:
    """Add one row in the caller's transaction (it is committed, or not, with the act it records)."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
    values: dict[str, Any] = {
        "at": at, "user_id": principal.user_id, "username": principal.username[:64], "role": principal.role[:32],
        "scope": {"places": list(principal.places), "departments": list(principal.departments)},
        "action": action[:64], "target": target[:128], "detail": _jsonable(detail or {}),
        "origin": (principal.origin or principal.via)[:64],
    }
    row = AuditRow(**values, prev_hash=f"pending-{uuid.uuid4().hex}"[:64], hash="")
    session.add(row)
    session.flush()  # takes the write lock on SQLite; the id orders the chain
    prev = session.scalar(select(AuditRow.hash).where(AuditRow.id < row.id).order_by(AuditRow.id.desc()).limit(1))
    values["prev_hash"] = prev or GENESIS
    session.execute(update(AuditRow).where(AuditRow.id == row.id)
                    .values(prev_hash=values["prev_hash"], hash=seal(values)))
    session.expire(row)


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
