"""The background uploader of the process that owns the catalog (a lone server, or a
cluster's primary): stores every finalised session's current revision in S3-compatible
storage, a few at a time, and retries a failure with doubling delays up to
IMPROV_S3_RETRY_MAX_S, forever: a session stays local until it is stored.

What to do comes from the catalog (its ``s3_revision`` against the manifest's ``revision``)
and from the store itself (objects already there are not sent again), never from memory: a
restart goes on where the last run stopped. Every store call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from improv_capture.downstream.catalog import Catalog
from improv_capture.observability.logs import log_ids
from improv_capture.settings import Settings
from improv_capture.storage import s3_client
from improv_capture.storage.local_copy import remove_local_media
from improv_capture.storage.s3_archive import presigned_get, upload_session

logger = logging.getLogger(__name__)

#: Sessions looked at per pass (ids only; more wait for the next passes).
BATCH = 1000


class ArchiveUploader:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        s3_client.credentials()  # missing credentials stop the start, not the first upload
        self.settings = settings
        self.catalog = catalog
        self.target = s3_client.target(settings)
        self.client: Any = None
        self._wake = asyncio.Event()
        #: set at stop: an upload running in its thread ends between two parts, not at its end
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None
        #: session_id -> (failures in a row, monotonic time of the next try)
        self._backoff: dict[str, tuple[int, float]] = {}

    async def start(self) -> None:
        self.client = await asyncio.to_thread(s3_client.make_client, self.settings)
        self._task = asyncio.create_task(self._run(), name="s3 uploader")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def wake(self, session_id: str | None = None) -> None:
        """Something changed (``session_id`` finalised or revised): look again now."""
        if session_id is not None:
            self._backoff.pop(session_id, None)
        self._wake.set()

    async def presigned(self, key_prefix: str, path: str) -> str:
        return await asyncio.to_thread(presigned_get, self.client, self.target.bucket,
                                       key_prefix + path, self.settings.s3_presign_ttl_s)

    # the loop

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                busy = await self._pass()
            except Exception:  # noqa: BLE001 - the catalog failing must not end the uploader
                logger.exception("s3 uploader: a pass failed")
                busy = False
            if busy:
                continue
            now = time.monotonic()
            waits = [t - now for _, t in self._backoff.values() if t > now]
            timeout = min([self.settings.s3_retry_max_s, *waits])
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.05, timeout))
            except TimeoutError:
                pass

    async def _pass(self) -> bool:
        """Upload what is due, at most s3_concurrency sessions at once; True when it did
        something (look again at once)."""
        now = time.monotonic()
        waiting = await self.catalog.to_store(BATCH)
        for gone in self._backoff.keys() - set(waiting):  # stored, or deleted meanwhile
            del self._backoff[gone]
        due = [s for s in waiting if self._backoff.get(s, (0, 0.0))[1] <= now]
        due = due[: self.settings.s3_concurrency]
        results = await asyncio.gather(*(self._store(s) for s in due))
        removed = 0
        if not self.settings.s3_keep_local:
            removed = await self._remove_local()
        return any(results) or removed > 0

    async def _store(self, session_id: str) -> bool:
        with log_ids(session_id=session_id):
            return await self._store_one(session_id)

    async def _store_one(self, session_id: str) -> bool:
        session_dir = self.catalog.sessions_dir / session_id
        try:
            copy = await asyncio.to_thread(upload_session, self.client, self.target, session_dir,
                                           self._stopping)
        except Exception as exc:  # noqa: BLE001 - any failure is retried; the session stays local
            failures = self._backoff.get(session_id, (0, 0.0))[0] + 1
            delay = min(self.settings.s3_retry_max_s,
                        self.settings.s3_retry_min_s * 2 ** min(failures - 1, 30))
            self._backoff[session_id] = (failures, time.monotonic() + delay)
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("s3: storing %s failed (try %d, next in %.1f s): %s",
                           session_id, failures, delay, error)
            await self.catalog.mark_store_error(session_id, error)
            return False
        self._backoff.pop(session_id, None)
        await self.catalog.mark_stored(session_id, copy.bucket, copy.key, copy.revision)
        logger.info("s3: stored %s revision %d in %s/%s (%d objects written, %d deleted)",
                    session_id, copy.revision, copy.bucket, copy.key, copy.uploaded, copy.deleted)
        return True

    async def _remove_local(self) -> int:
        removed = 0
        for session_id, revision in await self.catalog.to_remove_locally(BATCH):
            session_dir: Path = self.catalog.sessions_dir / session_id
            try:
                done = await asyncio.to_thread(remove_local_media, session_dir, revision)
            except (OSError, ValueError) as exc:
                logger.warning("s3: removing the local copy of %s failed: %s", session_id, exc)
                continue
            if done:
                await self.catalog.mark_local_removed(session_id)
                logger.info("s3: %s removed locally (revision %d is stored)", session_id, revision)
                removed += 1
        return removed
