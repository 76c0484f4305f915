"""Person and enterprise records per community (一人一档 / 一企一档): data given back to communities (数据反哺).

A record belongs to a community (and possibly a grid). The community edits it
inside its own scope; the street and district above see it. Every field keeps its
provenance: where the value came from (a file, a person's edit), when, and who.
Sensitive values (a person's name, ID number, phone, address) are encrypted at
rest and shown masked unless a permitted role asks for them (audited). Cases can
be linked to the records of the people and places involved.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from zhizhi.adapters import audit_log
from zhizhi.adapters.orm_access import CaseRecordLinkRow, RecordRow
from zhizhi.domain.access import (
    Forbidden,
    Principal,
    mask_address,
    mask_id_number,
    mask_name,
    mask_phone,
    permissions,
    require,
    scope_of,
)
from zhizhi.domain.errors import NotFound, ValidationFailed
from zhizhi.domain.personal import parse_id_number
from zhizhi.domain.places import Level
from zhizhi.service.data_keys import SENSITIVE_RECORD_FIELDS
from zhizhi.service.scope import ensure_visible

if TYPE_CHECKING:
    from zhizhi.service.bootstrap import Zhizhi

KINDS = ("person", "enterprise")
MASKS = {"id_number": mask_id_number, "legal_person_id": mask_id_number, "phone": mask_phone,
         "contact_phone": mask_phone, "address": mask_address}
#: CSV headers understood without a mapping (Chinese or English) → field.
HEADERS = {
    "external_id": ("external_id", "id", "编号", "档案编号", "统一社会信用代码"),
    "community_code": ("community_code", "社区编码", "村社编码"),
    "grid_code": ("grid_code", "网格编码"),
    "name": ("name", "姓名", "企业名称", "名称"),
    "id_number": ("id_number", "身份证号", "身份证号码"),
    "phone": ("phone", "电话", "联系电话", "手机"),
    "address": ("address", "地址", "住址", "经营地址"),
    "tags": ("tags", "标签", "人群类别"),
}


@dataclass(frozen=True)
class _Place:
    community: str
    street: str | None
    district: str | None
    grid: str | None


def _place_of(zz: Zhizhi, community_code: str | None, grid_code: str | None) -> _Place:
    grid = zz.gazetteer.place(grid_code) if grid_code else None
    if grid_code and (grid is None or grid.level is not Level.GRID):
        raise ValidationFailed(f"未知网格 {grid_code!r} / unknown grid", field="grid_code")
    community_code = community_code or (grid.parent_code if grid else None)
    community = zz.gazetteer.place(community_code) if community_code else None
    if community is None or community.level is not Level.COMMUNITY:
        raise ValidationFailed(f"未知社区 {community_code!r} / unknown community", field="community_code")
    if grid is not None and grid.parent_code != community.code:
        raise ValidationFailed("网格不属于该社区 / the grid is not in that community", field="grid_code")
    street = zz.gazetteer.place(community.parent_code) if community.parent_code else None
    return _Place(community.code, street.code if street else None, street.parent_code if street else None,
                  grid.code if grid else None)


def _lineage(row: RecordRow) -> tuple[str | None, ...]:
    return (row.district_code, row.street_code, row.community_code, row.grid_code)


def _visible(principal: Principal, row: RecordRow | None, record_id: int) -> RecordRow:
    # A role without the right to read records has no records in scope: the same 404 as another street's.
    visible = row is not None and "read_records" in permissions(principal) \
        and scope_of(principal).admits_place(_lineage(row))
    if row is None or not visible:
        raise NotFound(f"档案 {record_id} 不存在 / record {record_id} not found")
    return row


def _may_edit(principal: Principal, place: _Place) -> None:
    """The community edits its own records: an account whose places name the community or its grid."""
    require(principal, "edit_records")
    if principal.has_role("admin") and not principal.places:
        return
    if not set(principal.places) & {place.community, place.grid}:
        raise Forbidden("只有本社区（网格）可以编辑档案 / only the community itself edits its records")


def _cipher(zz: Zhizhi) -> Any:
    return zz.sessions.kw["info"]["cipher"]


def _seal(zz: Zhizhi, kind: str, name: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    c = _cipher(zz)
    sealed = {k: c.encrypt(str(v)) if k in SENSITIVE_RECORD_FIELDS and v not in (None, "") else v
              for k, v in fields.items()}
    return (c.encrypt(name) if kind == "person" else name), sealed


def view(zz: Zhizhi, row: RecordRow, unmask: bool = False) -> dict[str, Any]:
    """A record as the API shows it: sensitive values masked unless `unmask` (checked and audited before)."""
    c = _cipher(zz)
    name = c.decrypt(row.name) if row.kind == "person" else row.name
    fields: dict[str, Any] = {}
    for k, v in (row.fields or {}).items():
        plain = c.decrypt(v) if k in SENSITIVE_RECORD_FIELDS and isinstance(v, str) else v
        fields[k] = plain if unmask or k not in SENSITIVE_RECORD_FIELDS else MASKS.get(k, mask_phone)(plain)
    return {"id": row.id, "kind": row.kind, "external_id": row.external_id,
            "name": name if unmask or row.kind != "person" else mask_name(name),
            "community_code": row.community_code, "street_code": row.street_code,
            "district_code": row.district_code, "grid_code": row.grid_code, "tags": list(row.tags or []),
            "fields": fields, "provenance": row.provenance, "updated_at": row.updated_at, "version": row.version}


def _provenance(keys: list[str], source: str, editor: str, at: datetime) -> dict[str, Any]:
    return {k: {"source": source, "at": at.isoformat(), "editor": editor} for k in keys}


def upsert(zz: Zhizhi, principal: Principal, kind: str, external_id: str, name: str, community_code: str | None,
           grid_code: str | None = None, tags: list[str] | None = None, fields: dict[str, Any] | None = None,
           source: str = "manual") -> tuple[int, bool]:
    """Create or update one record by (kind, community, external id); returns (id, created)."""
    if kind not in KINDS:
        raise ValidationFailed(f"kind 为 person 或 enterprise / kind must be one of {KINDS}", field="kind")
    if not external_id or not name:
        raise ValidationFailed("编号和名称必填 / external_id and name are required")
    place = _place_of(zz, community_code, grid_code)
    _may_edit(principal, place)
    fields = {k: v for k, v in (fields or {}).items() if v not in (None, "")}
    if kind == "person" and "id_number" in fields:  # the same GB 11643 check as a case's reporter
        fields["id_number"] = parse_id_number(str(fields["id_number"]), field="id_number")
    now = zz.clock.now()
    with zz.uow() as uow:
        row = uow.session.scalar(select(RecordRow).where(RecordRow.kind == kind,
                                                         RecordRow.community_code == place.community,
                                                         RecordRow.external_id == external_id))
        sealed_name, sealed = _seal(zz, kind, name, fields)
        changed = ["name", *fields, *(["tags"] if tags is not None else [])]
        created = row is None
        if row is None:
            row = RecordRow(kind=kind, external_id=external_id[:128], community_code=place.community,
                            street_code=place.street, district_code=place.district, grid_code=place.grid,
                            name=sealed_name, tags=list(tags or []), fields=sealed,
                            provenance=_provenance(changed, source, principal.username, now),
                            created_at=now, updated_at=now, version=1)
            uow.session.add(row)
        else:
            row.name = sealed_name
            row.fields = {**(row.fields or {}), **sealed}
            if tags is not None:
                row.tags = list(tags)
            row.grid_code = place.grid or row.grid_code
            row.provenance = {**(row.provenance or {}), **_provenance(changed, source, principal.username, now)}
            row.updated_at = now
            row.version += 1
        uow.session.flush()
        audit_log.append(uow.session, principal, "record.create" if created else "record.update",
                         f"record:{row.id}", {"kind": kind, "fields": sorted(changed), "source": source[:100]}, at=now)
        uow.session.commit()
        return row.id, created


def get(zz: Zhizhi, principal: Principal, record_id: int, unmask: bool = False) -> dict[str, Any]:
    with zz.uow() as uow:
        row = _visible(principal, uow.session.get(RecordRow, record_id), record_id)
        if unmask:
            require(principal, "unmask_records")
            audit_log.append(uow.session, principal, "record.unmask", f"record:{record_id}", {}, at=zz.clock.now())
            uow.session.commit()
        return view(zz, row, unmask)


def edit(zz: Zhizhi, principal: Principal, record_id: int, fields: dict[str, Any], tags: list[str] | None,
         name: str | None = None, source: str = "manual") -> dict[str, Any]:
    with zz.uow() as uow:
        row = _visible(principal, uow.session.get(RecordRow, record_id), record_id)
        kind, external_id, community, grid = row.kind, row.external_id, row.community_code, row.grid_code
        current = view(zz, row, unmask=True)["name"]
    upsert(zz, principal, kind, external_id, name or current, community, grid, tags, fields, source)
    return get(zz, principal, record_id)


def search(zz: Zhizhi, principal: Principal, kind: str | None = None, area: str | None = None,
           tag: str | None = None, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Records in the principal's scope (SQL), optionally of one kind, place subtree or tag."""
    require(principal, "read_records")
    scope = scope_of(principal)
    if scope.nothing:
        return []
    stmt = select(RecordRow)
    cols = (RecordRow.district_code, RecordRow.street_code, RecordRow.community_code, RecordRow.grid_code)
    from sqlalchemy import or_

    if scope.places:
        stmt = stmt.where(or_(*(c.in_(list(scope.places)) for c in cols)))
    if kind:
        stmt = stmt.where(RecordRow.kind == kind)
    if area:
        stmt = stmt.where(or_(*(c == area for c in cols)))
    with zz.uow() as uow:
        rows = uow.session.scalars(stmt.order_by(RecordRow.id).offset(offset).limit(limit if not tag else 10_000))
        out = [view(zz, r) for r in rows if not tag or tag in (r.tags or [])]
    return out[:limit]


def link_case(zz: Zhizhi, principal: Principal, case_id: int, record_id: int, note: str = "") -> None:
    """Link a case to a record; both must be in the principal's scope."""
    now = zz.clock.now()
    with zz.uow() as uow:
        ensure_visible(principal, uow.cases.get(case_id), case_id)
        _visible(principal, uow.session.get(RecordRow, record_id), record_id)
        require(principal, "read_cases")
        if uow.session.get(CaseRecordLinkRow, (case_id, record_id)) is None:
            uow.session.add(CaseRecordLinkRow(case_id=case_id, record_id=record_id, note=note[:200],
                                              linked_by=principal.username[:64], linked_at=now))
            audit_log.append(uow.session, principal, "record.link", f"case:{case_id}", {"record_id": record_id},
                             at=now)
        uow.session.commit()


def case_records(zz: Zhizhi, principal: Principal, case_id: int) -> list[dict[str, Any]]:
    """The records linked to a case that the principal may see (masked)."""
    with zz.uow() as uow:
        ensure_visible(principal, uow.cases.get(case_id), case_id)
        rows = uow.session.scalars(select(RecordRow).join(CaseRecordLinkRow,
                                                          CaseRecordLinkRow.record_id == RecordRow.id)
                                   .where(CaseRecordLinkRow.case_id == case_id)).all()
        if not rows:
            return []
        scope = scope_of(principal)
        return [view(zz, r) for r in rows if scope.admits_place(_lineage(r))]


def import_csv(zz: Zhizhi, path: Path, kind: str, source: str,
               principal: Principal | None = None) -> dict[str, Any]:
    """Import records from CSV (UTF-8 or GB18030); every row keeps `source` as its provenance.

    Without a principal the rows are written (and audited) as the system job `system:import`.
    """
    from zhizhi.domain.access import system_principal

    principal = principal or system_principal("import")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030")
    reader = csv.DictReader(io.StringIO(text))
    columns = {h: next((f for f, names in HEADERS.items() if h.strip() in names), h.strip())
               for h in reader.fieldnames or []}
    created = updated = rejected = 0
    errors: list[str] = []
    for i, raw_row in enumerate(reader, start=1):
        row = {columns[k]: (v or "").strip() for k, v in raw_row.items() if k in columns}
        try:
            tags = [t for t in row.pop("tags", "").replace("、", ";").replace(",", ";").split(";") if t]
            _, was_created = upsert(
                zz, principal, kind, row.pop("external_id", ""), row.pop("name", ""), row.pop("community_code", "")
                or None, row.pop("grid_code", "") or None, tags, row, source)
            created += was_created
            updated += not was_created
        except (ValidationFailed, Forbidden) as exc:
            rejected += 1
            errors.append(f"row {i}: {exc.message}")
    return {"created": created, "updated": updated, "rejected": rejected, "errors": errors}
