"""Alembic environment: runs against the engine the caller passes (no URL in a file)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from zhizhi.adapters.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine")
    if engine is None:  # `alembic` command line: take the URL from the option
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///var/zhizhi.db")
    with engine.begin() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        context.run_migrations()


run_migrations_online()
