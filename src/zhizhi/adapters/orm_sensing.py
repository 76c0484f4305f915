"""Tables for perception: devices, their datastreams, observations, alarms and alarm steps.

Observations are the big data: a log of accepted batches and the blocks that compaction makes of
them, keyed by (datastream, start time) — see adapters/observations_store.py for why not a row per
reading. Time is an integer of epoch milliseconds (cheap to bulk-write and to compare).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zhizhi.adapters.orm import Base, BigId, UtcDateTime


class DeviceRow(Base):
    __tablename__ = "sensing_devices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    type: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(String(100), default="")
    scene: Mapped[str] = mapped_column(String(64), index=True)
    place_code: Mapped[str | None] = mapped_column(String(32), index=True)  # the grid
    district_code: Mapped[str | None] = mapped_column(String(32))
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    department_code: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    rule_overrides: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DatastreamRow(Base):
    """One measured quantity of one device (a SensorThings Datastream)."""

    __tablename__ = "sensing_datastreams"
    __table_args__ = (UniqueConstraint("device_id", "quantity", name="uq_sensing_datastreams"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("sensing_devices.id", ondelete="CASCADE"), index=True)
    quantity: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    unit: Mapped[str] = mapped_column(String(32), default="")
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ObservationLogRow(Base):
    """One accepted batch of readings, durable before it is acknowledged; compaction moves it into blocks
    (see adapters/observations_store.py). The arrays are little-endian int64 / int64 / float64."""

    __tablename__ = "sensing_observation_log"
    # Ids are never reused (SQLite would reuse them once the log is emptied): blocks take theirs from them.
    __table_args__: ClassVar[dict[str, Any]] = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    n: Mapped[int] = mapped_column(Integer)
    min_time: Mapped[int] = mapped_column(BigInteger)  # epoch ms
    max_time: Mapped[int] = mapped_column(BigInteger)
    datastreams: Mapped[bytes] = mapped_column(LargeBinary)
    times: Mapped[bytes] = mapped_column(LargeBinary)
    results: Mapped[bytes] = mapped_column(LargeBinary)


class ObservationClaimRow(Base):
    """A compactor's claim on one log row (see adapters/observations_store.py): who took it, when (epoch
    ms). A table of its own: setting a column of the log row would rewrite the row's arrays."""

    __tablename__ = "sensing_observation_claims"

    log_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    claimed_by: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[int] = mapped_column(BigInteger)


class ObservationBlockRow(Base):
    """Readings of one stream group (64 datastreams) from one compaction, sorted by (datastream, time):
    the primary key and the end-time index are the sparse (datastream, time) index of the series."""

    __tablename__ = "sensing_observation_blocks"
    __table_args__ = (Index("ix_sensing_observation_blocks_end", "end_time"), {"sqlite_with_rowid": False})

    stream_group: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    start_time: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # epoch ms
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    end_time: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(Integer)
    datastreams: Mapped[bytes] = mapped_column(LargeBinary)
    times: Mapped[bytes] = mapped_column(LargeBinary)
    results: Mapped[bytes] = mapped_column(LargeBinary)


class AlarmRow(Base):
    __tablename__ = "sensing_alarms"
    __table_args__ = (
        Index("ix_sensing_alarms_active", "device_id", "rule_code", "state"),
        Index("ix_sensing_alarms_raised_at", "raised_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[int] = mapped_column(BigInteger, index=True)
    device_code: Mapped[str] = mapped_column(String(64))
    rule_code: Mapped[str] = mapped_column(String(64))
    scene: Mapped[str] = mapped_column(String(64), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime)
    reading_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100))
    cleared_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    grid_code: Mapped[str | None] = mapped_column(String(32), index=True)
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    case_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    value: Mapped[float | None] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer, default=1)
    message: Mapped[str] = mapped_column(Text, default="")


class AlarmStepRow(Base):
    """Every step of an alarm, append-only."""

    __tablename__ = "sensing_alarm_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("sensing_alarms.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    action: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[float | None] = mapped_column(Float)


class DeviceLocationRow(Base):
    """Where a device was from `time` on (a SensorThings Location and HistoricalLocation, one row each move).

    Written at registration and at every move, in the transaction of the move; the device's current position
    is its newest row (by time, then id). A row without a device is a Location a client created on its own,
    not yet linked to a Thing.
    """

    __tablename__ = "sensing_device_locations"
    __table_args__ = (Index("ix_sensing_device_locations_device_time", "device_id", "time"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("sensing_devices.id", ondelete="CASCADE"))
    time: Mapped[datetime] = mapped_column(UtcDateTime)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    place_code: Mapped[str | None] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
