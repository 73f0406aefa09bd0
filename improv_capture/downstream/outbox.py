"""What must reach the index although the database is unavailable (PostgreSQL restarting, a
network cut): catalog writes and events wait here, in the data dir, and are replayed in order
once it answers again. Kept on disk, so that a node restarted meanwhile still replays them.

While anything waits, new writes queue behind it (order is kept: a session is indexed before
its ``session.finalized`` is stored). The file is bounded by IMPROV_OUTBOX_MAX_BYTES: past it
a write is refused and logged (the catalog row comes back from the session's directory at the
next start; the event is lost, which the log says)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from improv_capture.database.base import DatabaseUnavailable

logger = logging.getLogger(__name__)

Apply = Callable[[dict[str, Any]], Awaitable[None]]


class Outbox:
    def __init__(self, path: Path, apply: Apply, max_bytes: int, retry_s: float) -> None:
        self.path = path
        self._apply = apply
        self._max_bytes = max_bytes
        self._retry_s = retry_s
        self._waiting: list[dict[str, Any]] = []
        self._bytes = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        """Take up what a previous run left, and replay it in the background."""
        self._waiting = await asyncio.to_thread(self._read)
        self._bytes = sum(len(json.dumps(e)) + 1 for e in self._waiting)
        if self._waiting:
            logger.warning("outbox: %d index writes left by the last run, replaying", len(self._waiting))
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, entry: dict[str, Any]) -> None:
        """Apply ``entry`` now, or keep it for later when the database is unavailable (SQLite
        on a full disk too) or earlier entries still wait. Never raises: the recording that
        asked is done whatever the index does."""
        async with self._lock:
            if not self._waiting:
                try:
                    await self._apply(entry)
                    return
                except DatabaseUnavailable as exc:
                    logger.warning("database unavailable (%s): index writes wait in %s", exc, self.path.name)
                except Exception:
                    logger.exception("index write failed: it waits in %s", self.path.name)
            line = len(json.dumps(entry)) + 1
            if self._bytes + line > self._max_bytes:
                logger.error("outbox full (IMPROV_OUTBOX_MAX_BYTES %d): %s not kept", self._max_bytes,
                             entry.get("op"))
                return
            self._waiting.append(entry)
            self._bytes += line
            try:
                await asyncio.to_thread(self._write, self._waiting)
            except OSError as exc:  # the disk is full too: kept in memory, tried again
                logger.error("outbox: %s not written (%s); kept in memory meanwhile", self.path.name, exc)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                await self._wake.wait()
            self._wake.clear()
            async with self._lock:
                await self._replay()
            if self._waiting:
                await asyncio.sleep(self._retry_s)

    async def _replay(self) -> None:
        done = 0
        for entry in self._waiting:
            try:
                await self._apply(entry)
            except DatabaseUnavailable:
                break
            except Exception:
                logger.exception("outbox: %s dropped", entry.get("op"))
            done += 1
        if done:
            left = self._waiting[done:]
            try:
                await asyncio.to_thread(self._write, left)
            except OSError as exc:
                logger.error("outbox: %s not rewritten (%s)", self.path.name, exc)
            self._waiting = left
            self._bytes = sum(len(json.dumps(e)) + 1 for e in left)
            logger.info("outbox: %d index writes replayed, %d wait", done, len(left))

    def _read(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line cut by a crash mid-write
                logger.error("outbox: unreadable line skipped")
        return entries

    def _write(self, entries: list[dict[str, Any]]) -> None:
        """Replace the file (written aside, synced, renamed): a crash leaves the old or the new."""
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as out:
            out.writelines(json.dumps(e) + "\n" for e in entries)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
