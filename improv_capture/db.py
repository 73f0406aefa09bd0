"""A SQLite file in the data dir, opened in WAL mode: the rooms store's (rooms/store.py) and
the embedded index's (database/sqlite.py). Calls block: run them in a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: opening the same file as another process at the same moment is tried again this often, 0.1 s apart
OPEN_TRIES = 50


def add_columns(conn: sqlite3.Connection, added: tuple[tuple[str, str, str], ...]) -> None:
    """Columns added after a table first shipped, as (table, column, declaration): each is
    added once to a database that lacks it (SQLite's ALTER TABLE ADD COLUMN; CREATE TABLE IF
    NOT EXISTS leaves an existing table as it was)."""
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
    survive a power cut; otherwise a crash may lose the last commits, never consistency.
    Every call holds the connection's lock: one thread at a time uses it."""

    def __init__(self, path: Path, schema: str, durable: bool = False,
                 added: tuple[tuple[str, str, str], ...] = ()) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        for attempt in range(OPEN_TRIES):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._conn.executescript(schema)
                add_columns(self._conn, added)
                break
            except sqlite3.OperationalError as exc:
                # another process (a cluster's worker) opening the same file at the same
                # moment: switching to WAL does not wait for its lock as statements do
                if "locked" not in str(exc) or attempt == OPEN_TRIES - 1:
                    raise
                time.sleep(0.1)
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

    # a transaction spread over several calls (database/sqlite.py: its statements are awaited
    # one by one), kept one at a time by its caller

    def begin(self) -> None:
        with self._lock:
            if self._conn.in_transaction:  # one whose rollback was cut short
                self._conn.execute("ROLLBACK")
            self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        with self._lock:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        with self._lock:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def fetch(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._lock:
            return rows(self._conn.execute(sql, args))

    def execute(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    return [dict(r) for r in cursor.fetchall()]
