"""Alembic environment: online migrations only, against the URL set by ``migrate.py``."""

from __future__ import annotations

from alembic import context

import postroom.models  # noqa: F401  (registers every table)
from postroom.db.migrate import include_object_for, sync_engine
from postroom.models.base import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = sync_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=include_object_for(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
