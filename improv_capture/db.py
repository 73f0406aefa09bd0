"""The server's SQLite index in the data dir: reader tokens, the session catalog, events,
webhook deliveries and revocations. Session directories stay the source of truth for
sessions: the catalog is rebuilt from them when it is missing or stale. Every call runs in
a worker thread (sqlite3 blocks)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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

#: Columns added after a table first shipped, as (table, column, declaration): each is added
#: once to a database that lacks it (SQLite's ALTER TABLE ADD COLUMN; CREATE TABLE IF NOT
#: EXISTS leaves an existing table as it was). Append only.
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # where a session's current copy is in S3-compatible storage (improv_capture/storage/)
    ("sessions", "s3_bucket", "TEXT"),
    ("sessions", "s3_key", "TEXT"),
    ("sessions", "s3_revision", "INTEGER"),
    ("sessions", "s3_stored_at", "TEXT"),
    ("sessions", "s3_error", "TEXT"),
    # 1 once the media files were removed from the data dir after a verified upload
    ("sessions", "local_removed", "INTEGER NOT NULL DEFAULT 0"),
)


def add_columns(conn: sqlite3.Connection, added: tuple[tuple[str, str, str], ...]) -> None:
    for table, column, declaration in added:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if have and column not in have:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            except sqlite3.OperationalError as exc:  # another process of a cluster was first
                if "duplicate column" not in str(exc):
                    raise


class Database:
    """One SQLite file in WAL mode: a write appends the pages it changes, so its cost does not
    grow with the database. ``durable`` syncs every commit (synchronous=FULL), for what must
    survive a power cut; otherwise a crash may lose the last commits, never consistency."""

    def __init__(self, path: Path, schema: str = SCHEMA, durable: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._conn.executescript(schema)
        if schema is SCHEMA:
            add_columns(self._conn, ADDED_COLUMNS)
        self._lock = threading.Lock()

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` with the connection, in one transaction (blocking: use ``call``)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self.run, fn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [dict(r) for r in cursor.fetchall()]
