"""SQLAlchemy 2 tables: the system of record. Alembic migrations mirror this module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite wants INTEGER PRIMARY KEY for autoincrement; PostgreSQL gets BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class PlaceRow(Base):
    __tablename__ = "places"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    full_name: Mapped[str | None] = mapped_column(String(200))
    level: Mapped[int] = mapped_column(Integer, index=True)
    parent_code: Mapped[str | None] = mapped_column(String(32), index=True)
    approximate: Mapped[bool] = mapped_column(Boolean, default=False)
    population: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(200))
    geometry_wkb: Mapped[bytes | None] = mapped_column(LargeBinary)


class CaseRow(Base):
    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("source", "source_id", name="uq_cases_source"),
        Index("ix_cases_state_due", "state", "due_at"),
        Index("ix_cases_reported_at", "reported_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    source_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    category_code: Mapped[str | None] = mapped_column(String(32), index=True)
    department_code: Mapped[str | None] = mapped_column(String(64), index=True)
    level: Mapped[int | None] = mapped_column(Integer, index=True)
    city_code: Mapped[str | None] = mapped_column(String(32))
    district_code: Mapped[str | None] = mapped_column(String(32), index=True)
    street_code: Mapped[str | None] = mapped_column(String(32), index=True)
    community_code: Mapped[str | None] = mapped_column(String(32), index=True)
    grid_code: Mapped[str | None] = mapped_column(String(32), index=True)
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    location_method: Mapped[str] = mapped_column(String(16), default="unknown")
    location_confidence: Mapped[float] = mapped_column(Float, default=0.0)
    location_extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Personal data: ciphertext at rest (see adapters/crypto.py), hence Text (migration 0004).
    address: Mapped[str | None] = mapped_column(Text)
    reporter_name: Mapped[str | None] = mapped_column(Text)
    reporter_phone: Mapped[str | None] = mapped_column(Text)
    reporter_id_number: Mapped[str | None] = mapped_column(Text)  # 身份证号, ciphertext (migration 0006)
    photos: Mapped[list[str]] = mapped_column(JSON, default=list)
    reported_at: Mapped[datetime] = mapped_column(UtcDateTime)
    registered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    overdue_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    suspended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    suspended_from: Mapped[str | None] = mapped_column(String(16))
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    evaluation_comment: Mapped[str | None] = mapped_column(Text)
    supervise_count: Mapped[int] = mapped_column(Integer, default=0)
    return_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Optimistic locking: the repository writes `… WHERE id = :id AND version = :read_version`.
    version: Mapped[int] = mapped_column(Integer, default=1)


class CaseEventRow(Base):
    """The timeline: append-only."""

    __tablename__ = "case_events"
    __table_args__ = (UniqueConstraint("case_id", "seq", name="uq_case_events_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")
    attachments: Mapped[list[str]] = mapped_column(JSON, default=list)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxRow(Base):
    """Messages to the outside world, written in the same transaction as the change that caused them."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    topic: Mapped[str] = mapped_column(String(64))
    case_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    recipient: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))  # log | webhook
    target: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
