"""The downstream index (catalog, events, webhook deliveries, reader tokens, revocations):
SQLite in the data dir by default, PostgreSQL shared by every node with IMPROV_DATABASE_URL."""

from __future__ import annotations

from improv_capture.database.base import Database, DatabaseUnavailable
from improv_capture.settings import Settings


def open_database(settings: Settings) -> Database:
    """Not connected yet: ``await db.start()``. asyncpg is imported only with a URL."""
    if settings.database_url:
        from improv_capture.database.postgres import PostgresDatabase

        return PostgresDatabase(settings.database_url.get_secret_value(), pool_size=settings.database_pool_size,
                                timeout_s=settings.database_timeout_s,
                                start_timeout_s=settings.database_start_timeout_s)
    from improv_capture.database.sqlite import SqliteDatabase

    return SqliteDatabase(settings.data_dir / "index.sqlite3")


__all__ = ["Database", "DatabaseUnavailable", "open_database"]
