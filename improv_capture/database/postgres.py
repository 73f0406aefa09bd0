"""PostgreSQL shared by every node (IMPROV_DATABASE_URL, asyncpg): the catalog, events,
webhook deliveries, reader tokens and revocations of all of them. The schema is brought up to
date at start by the numbered files of migrations/postgres/, each applied once, in order, by
whichever node gets the migration lock first."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from improv_capture.database.base import (
    POSTGRES,
    Connection,
    DatabaseUnavailable,
    Dialect,
)

logger = logging.getLogger(__name__)

#: pg_advisory_lock key held while migrations run (nodes starting at once apply them once)
MIGRATION_LOCK = 7316000
MIGRATIONS = "improv_capture.database.migrations.postgres"
#: a pool's graceful close waits this long, then its connections are cut
CLOSE_TIMEOUT_S = 5.0

#: what says the server cannot be reached or is going away (as opposed to a wrong statement)
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, starting up
)


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1, $2, ...`` (no statement here has a ``?`` in a
    string literal)."""
    counter = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def changed(status: str) -> int:
    """Rows changed, from a command status such as ``UPDATE 3`` or ``INSERT 0 1``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _Statements:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._conn.fetch(numbered(sql), *args)]

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(numbered(sql), *args)

    async def execute(self, sql: str, *args: Any) -> int:
        return changed(await self._conn.execute(numbered(sql), *args))


def migrations() -> list[tuple[str, str]]:
    """(version, SQL) of every migration file, in order: ``0001_name.sql`` is version 0001."""
    files = [f for f in resources.files(MIGRATIONS).iterdir() if f.name.endswith(".sql")]
    return [(f.name.split("_", 1)[0], f.read_text()) for f in sorted(files, key=lambda f: f.name)]


class PostgresDatabase:
    dialect: Dialect = POSTGRES

    def __init__(self, url: str, *, pool_size: int = 10, timeout_s: float = 5.0,
                 statement_timeout_s: float = 30.0, start_timeout_s: float = 30.0) -> None:
        self._url = url
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._statement_timeout_s = statement_timeout_s
        self._start_timeout_s = start_timeout_s
        self._pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        """Open the pool and migrate, waiting up to start_timeout_s for the server (it may
        be starting beside this node); then fail with the reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout_s
        while True:
            try:
                self._pool = await asyncpg.create_pool(
                    self._url, min_size=1, max_size=self._pool_size, timeout=self._timeout_s,
                    command_timeout=self._statement_timeout_s)
                break
            except UNREACHABLE as exc:
                if loop.time() > deadline:
                    raise DatabaseUnavailable(f"PostgreSQL unreachable: {exc}") from exc
                await asyncio.sleep(0.5)
        await self._migrate()

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   " version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
                applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for version, sql in migrations():
                    if version in applied:
                        continue
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                    logger.info("database: migration %s applied", version)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        if self._pool is None:
            raise RuntimeError("the database is not open: start() it first")
        try:
            conn = await self._pool.acquire(timeout=self._timeout_s)
        except UNREACHABLE as exc:
            raise DatabaseUnavailable(f"PostgreSQL unreachable: {exc}") from exc
        try:
            async with conn.transaction():
                yield _Statements(conn)
        except UNREACHABLE as exc:
            raise DatabaseUnavailable(f"PostgreSQL unreachable: {exc}") from exc
        finally:
            await self._pool.release(conn)

    async def listen(self, channel: str, wake: asyncio.Event) -> asyncpg.Connection:
        """A connection of its own that sets ``wake`` on each NOTIFY on ``channel`` (close it
        with ``unlisten``); DatabaseUnavailable when the server cannot be reached."""
        try:
            conn = await asyncpg.connect(self._url, timeout=self._timeout_s)
        except UNREACHABLE as exc:
            raise DatabaseUnavailable(f"PostgreSQL unreachable: {exc}") from exc
        try:
            await conn.add_listener(channel, lambda *_: wake.set())
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, UNREACHABLE):
                raise DatabaseUnavailable(f"PostgreSQL unreachable: {exc}") from exc
            raise
        return conn

    async def close(self) -> None:
        """Close the pool gracefully within CLOSE_TIMEOUT_S, else cut its connections (a
        server that went away mid-close would keep a graceful close waiting)."""
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                self._pool.terminate()
