"""Every mapped table, imported in one place so that Alembic and tests see the whole schema.

Each capability keeps its tables in its own module (`orm_dispatch`, `orm_sensing`,
`orm_access`) on the one declarative `Base`; importing this module registers them all.
"""

from __future__ import annotations

from zhizhi.adapters import orm_access, orm_dispatch, orm_sensing  # noqa: F401  (registers tables)
from zhizhi.adapters.orm import Base

metadata = Base.metadata

__all__ = ["Base", "metadata"]
