"""Rotation of the personal-data key: a new key in front, every stored value re-encrypted, old keys retired.

The key file always holds every key still needed to read the database: the new
key is added before anything is re-encrypted, and old keys are removed only
after a pass has found every value under the new key. An interrupted rotation
is therefore safe to run again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from zhizhi.adapters import audit_log
from zhizhi.adapters.crypto import Cipher, generate_key, key_file_path, read_key_file, write_key_file
from zhizhi.adapters.orm import CaseRow
from zhizhi.adapters.orm_access import RecordRow
from zhizhi.config import Settings
from zhizhi.domain.access import system_principal

#: Fields of a person/enterprise record kept encrypted (besides `name` of a person).
SENSITIVE_RECORD_FIELDS = frozenset({"id_number", "phone", "address", "contact_phone", "legal_person_id"})


@dataclass(frozen=True)
class RotationResult:
    cases: int
    records: int
    keys: int


def _key_file(settings: Settings) -> Path:
    if settings.data_keys.strip():
        raise ValueError("keys come from ZHIZHI_DATA_KEYS: put the new key first there, run `zhizhi keys "
                         "rotate --reencrypt-only`, then drop the old key from the variable")
    return key_file_path(settings.data_dir, settings.data_key_file)


def _audit(engine: Engine, action: str, detail: dict[str, int]) -> None:
    """A key change is a write on every personal value: one audit row per pass, by `system:keys`."""
    with Session(engine) as session:
        audit_log.append(session, system_principal("keys"), action, "data:personal", detail)
        session.commit()


def reencrypt(engine: Engine, cipher: Cipher, batch: int = 500, audit: bool = True) -> tuple[int, int]:
    """Re-encrypt every personal value not yet under the primary key; returns (cases, records) changed.

    Case columns: address, reporter name, phone and ID number; record fields: `SENSITIVE_RECORD_FIELDS`
    and a person's name. With `audit`, the pass is recorded (counts only) after it committed.
    """
    cols = (CaseRow.address, CaseRow.reporter_name, CaseRow.reporter_phone, CaseRow.reporter_id_number)
    n_cases = n_records = 0
    with engine.begin() as conn:
        last = 0
        while True:
            rows = conn.execute(select(CaseRow.id, *cols).where(CaseRow.id > last).order_by(CaseRow.id)
                                .limit(batch)).all()
            if not rows:
                break
            for r in rows:
                values = {c.key: getattr(r, c.key) for c in cols}
                if all(cipher.is_current(v) for v in values.values()):
                    continue
                conn.execute(update(CaseRow).where(CaseRow.id == r.id)
                             .values({k: cipher.rotate(v) for k, v in values.items()}))
                n_cases += 1
            last = rows[-1].id
        for r in conn.execute(select(RecordRow.id, RecordRow.kind, RecordRow.name, RecordRow.fields)).all():
            fields = dict(r.fields or {})
            stale = [k for k in SENSITIVE_RECORD_FIELDS if k in fields and not cipher.is_current(fields[k])]
            name_stale = r.kind == "person" and not cipher.is_current(r.name)
            if not stale and not name_stale:
                continue
            for k in stale:
                fields[k] = cipher.rotate(fields[k])
            conn.execute(update(RecordRow).where(RecordRow.id == r.id)
                         .values(fields=fields, name=cipher.rotate(r.name) if r.kind == "person" else r.name))
            n_records += 1
    if audit:
        _audit(engine, "keys.reencrypt", {"cases": n_cases, "records": n_records, "keys": cipher.key_count})
    return n_cases, n_records


def rotate(settings: Settings, engine: Engine, retire_old: bool = True) -> RotationResult:
    path = _key_file(settings)
    old = read_key_file(path) if path.exists() else []
    ring = [generate_key(), *old]
    write_key_file(path, ring)  # first: from now on new writes use the new key, old values still read
    cipher = Cipher(ring)
    n_cases, n_records = reencrypt(engine, cipher, audit=False)
    if retire_old:
        assert reencrypt(engine, cipher, audit=False) == (0, 0)
        write_key_file(path, ring[:1])
    result = RotationResult(n_cases, n_records, 1 if retire_old else len(ring))
    _audit(engine, "keys.rotate", {"cases": n_cases, "records": n_records, "keys": result.keys})
    return result
