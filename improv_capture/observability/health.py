"""Is the server alive (``/healthz``), and ready to take performers (``/readyz``)? Both answer
anyone (a load balancer or an orchestrator holds no token) and say nothing but ok or which
check failed and why, in a word; the numbers are in /metrics.

Ready means: the data dir takes a new file, its disk keeps ``min_free_bytes`` free, and the
index answers a query. Each look runs in a thread within ``probe_timeout_s``; a look still
running when the next request comes (a hung disk) is awaited again rather than started anew,
so a stuck disk holds one thread per look, not one per probe.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from improv_capture.database.base import Database, DatabaseUnavailable, fetch
from improv_capture.settings import Settings

T = TypeVar("T")

#: The checks of /readyz, in the order they are listed.
CHECKS = ("data_dir_writable", "disk_free", "index")


def probe_write(data_dir: Path) -> None:
    """Create, write and remove a file in ``data_dir`` (blocking); raises OSError if it cannot."""
    path = data_dir / f".ready-probe-{os.getpid()}-{secrets.token_hex(4)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"ready\n")
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _consume(task: asyncio.Future[Any]) -> None:
    """A look that failed after every waiter gave up leaves no 'never retrieved' warning."""
    if not task.cancelled():
        task.exception()


class Probes:
    """The blocking looks at the data dir's disk and the index, shared by /readyz and /metrics."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.data_dir = settings.data_dir
        self.min_free_bytes = settings.min_free_bytes
        self.timeout_s = settings.probe_timeout_s
        self.db = db
        self._running: dict[str, asyncio.Future[Any]] = {}

    async def once(self, name: str, start: Callable[[], Awaitable[T]]) -> T:
        """The result of look ``name``: the one running, or a new one; TimeoutError past
        ``probe_timeout_s`` (the look goes on, for the next caller)."""
        task = self._running.get(name)
        if task is None or task.done():
            task = asyncio.ensure_future(start())
            task.add_done_callback(_consume)
            self._running[name] = task
        return await asyncio.wait_for(asyncio.shield(task), self.timeout_s)  # type: ignore[no-any-return]

    async def free_bytes(self) -> int:
        usage = await self.once("disk_free", lambda: asyncio.to_thread(shutil.disk_usage, self.data_dir))
        return int(usage.free)

    async def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Every check run at once; whether all passed, and each one's result."""
        results = await asyncio.gather(
            self._check(self._writable), self._check(self._disk_free), self._check(self._index)
        )
        checks = dict(zip(CHECKS, results))
        return all(c["ok"] for c in checks.values()), checks

    async def _writable(self) -> None:
        await self.once("data_dir_writable", lambda: asyncio.to_thread(probe_write, self.data_dir))

    async def _disk_free(self) -> str | None:
        if await self.free_bytes() < self.min_free_bytes:
            return "free space below IMPROV_MIN_FREE_BYTES"
        return None

    async def _index(self) -> None:
        await self.once("index", lambda: fetch(self.db, "SELECT 1 FROM sessions LIMIT 1"))

    async def _check(self, look: Callable[[], Awaitable[str | None]]) -> dict[str, Any]:
        try:
            problem = await look()
        except TimeoutError:  # asyncio.wait_for past probe_timeout_s
            problem = f"no answer within {self.timeout_s:g} s"
        except OSError as exc:  # the reason only: no path of the data dir to whoever asks
            problem = exc.strerror or type(exc).__name__
        except (sqlite3.Error, DatabaseUnavailable) as exc:
            problem = str(exc) or type(exc).__name__
        return {"ok": True} if problem is None else {"ok": False, "error": problem}


router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process answers (nothing else is looked at)."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False, response_model=None)
async def readyz(request: Request) -> JSONResponse:
    """Ready for performers: 200 ``{"status": "ready", "checks"}``, or 503 with ``failed``."""
    probes: Probes = request.app.state.probes
    ready, checks = await probes.readiness()
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    failed = [name for name, check in checks.items() if not check["ok"]]
    return JSONResponse({"status": "not ready", "failed": failed, "checks": checks}, status_code=503)
