"""The embedded default: the index in the data dir's SQLite file (WAL), for one machine.
Each statement runs in a worker thread (sqlite3 blocks); a transaction holds the process's
one connection from BEGIN IMMEDIATE to COMMIT, and other processes of a cluster wait for the
file lock (sqlite3's busy timeout)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from improv_capture.database.base import (
    SQLITE,
    Connection,
    DatabaseUnavailable,
    Dialect,
)
from improv_capture.db import Database as SyncDatabase

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, role TEXT NOT NULL, label TEXT NOT NULL, token_sha256 TEXT UNIQUE NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, room_id TEXT, state TEXT,
    summary TEXT NOT NULL, manifest_mtime_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_order ON sessions (started_at, session_id);
-- the catalog's filters, each in the listing's order (a rare state or room is a short walk)
CREATE INDEX IF NOT EXISTS sessions_by_state ON sessions (state, started_at, session_id);
CREATE INDEX IF NOT EXISTS sessions_by_room ON sessions (room_id, started_at, session_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, data TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL, url TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL,
    last_status INTEGER, last_error TEXT, created REAL NOT NULL, delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt);
CREATE TABLE IF NOT EXISTS revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, performer_id TEXT NOT NULL, reason TEXT,
    revoked_at TEXT NOT NULL, sessions TEXT NOT NULL
);
"""

#: Columns added after a table first shipped (db.add_columns; append only). PostgreSQL has
#: the same columns through its migrations (migrations/postgres/).
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # where a session's current copy is in S3-compatible storage (improv_capture/storage/)
    ("sessions", "s3_bucket", "TEXT"),
    ("sessions", "s3_key", "TEXT"),
    ("sessions", "s3_revision", "INTEGER"),
    ("sessions", "s3_stored_at", "TEXT"),
    ("sessions", "s3_error", "TEXT"),
    # 1 once the media files were removed from the data dir after a verified upload
    ("sessions", "local_removed", "INTEGER NOT NULL DEFAULT 0"),
    # the manifest's revision (NULL: indexed before this column, indexed again at start)
    ("sessions", "revision", "INTEGER"),
    # the node whose data dir holds the session, and its public URL (docs/architecture.md)
    ("sessions", "node_id", "TEXT"),
    ("sessions", "node_url", "TEXT"),
    # a delivery being attempted by a node, until this time (webhooks.py: claimed, not shared)
    ("deliveries", "lease_until", "REAL"),
)


#: what SQLite says when the disk, not the statement, is at fault: the index is unavailable
#: for now (the outbox keeps the write), as PostgreSQL is when it cannot be reached
UNAVAILABLE = ("database or disk is full", "disk i/o error", "database is locked")


def unavailable(exc: sqlite3.OperationalError) -> bool:
    return any(text in str(exc).lower() for text in UNAVAILABLE)


class _Statements:
    """A transaction's statements on the shared connection, each in a worker thread."""

    def __init__(self, db: SyncDatabase) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._db.fetch, sql, args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        found = await self.fetch(sql, *args)
        return next(iter(found[0].values())) if found else None

    async def execute(self, sql: str, *args: Any) -> int:
        return await asyncio.to_thread(self._db.execute, sql, args)


class SqliteDatabase:
    dialect: Dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: SyncDatabase | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._db = await asyncio.to_thread(SyncDatabase, self.path, SCHEMA, added=ADDED_COLUMNS)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        db = self._db
        if db is None:
            raise RuntimeError("the index is not open: start() it first")
        async with self._lock:
            try:
                await asyncio.to_thread(db.begin)
                try:
                    yield _Statements(db)
                except BaseException:
                    await asyncio.shield(asyncio.to_thread(db.rollback))
                    raise
                await asyncio.shield(asyncio.to_thread(db.commit))
            except sqlite3.OperationalError as exc:
                if unavailable(exc):
                    raise DatabaseUnavailable(f"the index cannot be written: {exc}") from exc
                raise

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self._db.close)

