"""The one PostgreSQL harness of the tests: Debian's server binaries (postgresql), a cluster
initialised in a temporary directory and listening on 127.0.0.1 at a free port, stopped and
removed at the end, pass or fail. Run as root (scripts/test), the server runs as Debian's
`postgres` user (PostgreSQL refuses root).

Usage::

    from tests.postgres import Postgres, index_db, postgres_fixture  # noqa: F401 - fixtures

    def test_catalog(postgres: Postgres) -> None:
        url = postgres.new_database()        # a fresh database of this cluster
        ...
        postgres.stop(); postgres.start()    # an outage (same port, same data)

    async def test_index(index_db: Database) -> None:   # SQLite, then PostgreSQL
        ...
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from improv_capture.database.base import Database
from improv_capture.database.postgres import PostgresDatabase
from improv_capture.database.sqlite import SqliteDatabase

#: what a test waits for the server at most
START_TIMEOUT_S = 30.0


def binaries() -> Path:
    """Debian keeps each major version's server binaries off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (scripts/test installs Debian's postgresql)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    def __init__(self) -> None:
        self.bin = binaries()
        # not under pytest's tmp_path: its parents are root's alone, and the server is not root
        self.root = Path(tempfile.mkdtemp(prefix="improv-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "improv", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        self.log = self.root / "server.log"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr or done.stdout}")
        return done

    def start(self) -> Postgres:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(int(START_TIMEOUT_S)),
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200",
                  "start")
        return self

    def stop(self) -> None:
        """Fast shutdown: connections are cut, as in an outage."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://improv@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        done = subprocess.run([str(self.bin / "psql"), self.url(database), "-At", "-c", statement],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr}")
        return done.stdout.strip()

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t_{secrets.token_hex(6)}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_until_up(postgres: Postgres) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            postgres.sql("SELECT 1")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(name="postgres", scope="module")
def postgres_fixture() -> Iterator[Postgres]:
    """A PostgreSQL cluster for the module's tests (each takes a fresh database of it)."""
    server = Postgres()
    try:
        yield server.start()
    finally:
        server.remove()



@pytest.fixture(params=["sqlite", "postgresql"])
async def index_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The downstream index on each backend: SQLite in tmp_path, and a fresh database of the
    module's PostgreSQL cluster (migrated at start, as a node does)."""
    db: Database
    if request.param == "sqlite":
        db = SqliteDatabase(tmp_path / "index.sqlite3")
    else:
        db = PostgresDatabase(request.getfixturevalue("postgres").new_database())
    await db.start()
    try:
        yield db
    finally:
        await db.close()
