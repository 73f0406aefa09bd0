"""What the downstream stores (catalog, events, webhooks, reader tokens, revocations) need of a
database, whichever it is: SQLite in the data dir (the embedded default) or PostgreSQL shared by
every node (IMPROV_DATABASE_URL). Statements are written once, in the SQL both understand, with
``?`` placeholders; what differs lives in :class:`Dialect`."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol


class DatabaseUnavailable(Exception):
    """The database cannot be reached (PostgreSQL down or restarting): the caller queues what
    must not be lost (storage.outbox) and answers 503 to what can be asked again."""


@dataclass(frozen=True)
class Dialect:
    name: str
    #: appended to a SELECT whose rows an UPDATE claims, so that two nodes claiming at once
    #: take different rows (PostgreSQL); SQLite's write transactions are serial already
    skip_locked: str = ""
    #: run first in a transaction that appends events: ids then commit in the order they were
    #: given, so a reader who resumes after id N never misses a smaller id committed later
    lock_events: str | None = None


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgresql", skip_locked=" FOR UPDATE SKIP LOCKED",
                   lock_events="SELECT pg_advisory_xact_lock(7316001)")


class Connection(Protocol):
    """One transaction's statements."""

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row (None without rows)."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""


class Database(Protocol):
    dialect: Dialect

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A transaction: committed when the block ends, rolled back if it raises.
        DatabaseUnavailable when the database cannot be reached."""

    async def start(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...


async def fetch(db: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    """One statement in its own transaction."""
    async with db.transaction() as c:
        return await c.fetch(sql, *args)


async def fetchval(db: Database, sql: str, *args: Any) -> Any:
    async with db.transaction() as c:
        return await c.fetchval(sql, *args)


async def execute(db: Database, sql: str, *args: Any) -> int:
    async with db.transaction() as c:
        return await c.execute(sql, *args)
