"""Migrations: upgrade head on both databases matches the models exactly (no drift), and
every migration downgrades cleanly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

import postroom.models  # noqa: F401
from postroom.db import migrate
from postroom.models.base import Base
from tests.support.databases import admin_pg_url, fresh_pg_database, pg_answers, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    if not pg_answers(admin_pg_url()):
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL must answer under CI")
        pytest.skip("PostgreSQL does not answer")
    with fresh_pg_database("postroom_migr") as url:
        yield url


def _diff(url: str) -> list[object]:
    engine = migrate.sync_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": migrate.include_object_for(conn.dialect.name),
                },
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_head_has_no_drift(empty_db: str) -> None:
    migrate.upgrade(empty_db)
    assert _diff(empty_db) == []


def test_every_migration_downgrades(empty_db: str) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(empty_db))
    revisions = list(reversed(list(script.walk_revisions())))
    assert revisions, "no migrations found"
    for revision in revisions:
        migrate.upgrade(empty_db, revision.revision)
    for revision in reversed(revisions):
        migrate.downgrade(empty_db, revision.down_revision or "base")  # type: ignore[arg-type]
    engine = migrate.sync_engine(empty_db)
    try:
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert left == set()
    migrate.upgrade(empty_db)
    assert _diff(empty_db) == []


def test_migration_files_are_date_prefixed() -> None:
    versions = Path(migrate.MIGRATIONS_DIR) / "versions"
    files = [p.name for p in versions.glob("*.py") if p.name != "__init__.py"]
    assert files
    for name in files:
        year, month, day = name.split("_")[:3]
        assert len(year) == 4 and year.isdigit(), name
        assert month.isdigit() and day.isdigit(), name
