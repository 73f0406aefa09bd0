"""A recording that went on here after its node died gets the part recorded there: when that
node is back and has recovered it (it says so through Redis: nodes/service.py), this node
fetches the part's files from it, over the files API with the operator token the nodes share,
checks each against the part's manifest (size and SHA-256), and joins them to the session
(recorder/continued.py): a new revision, announced as ``session.updated``.

A studio part is fetched once its performers' high-quality copies have settled there (their
pages upload them to the node they were loaded from, which places them by its own deadline).

Bounds: the session is waited for while it still records, and the part while its copies
upload, each looked at every POLL_S, at most ``node_part_wait_s`` in all; a fetch is tried
FETCH_TRIES times with a doubling pause; each file is read to at most the size
its manifest gives, each read within READ_TIMEOUT_S. Files are fetched into
``<data-dir>/incoming/<session>/`` (outside the sessions directory), removed afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from improv_capture.api.auth import SESSION_ID
from improv_capture.background import Background
from improv_capture.recorder.continued import (
    PartRefused,
    join_earlier_part,
    part_files,
    waiting_for,
)
from improv_capture.recorder.manifest import read_manifest
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)

FETCH_TRIES = 5
FIRST_PAUSE_S = 2.0
READ_TIMEOUT_S = 30.0
#: how often a session still recording, or a part whose copies still upload, is looked at again
POLL_S = 2.0


class PartNotSettled(Exception):
    """The earlier part's high-quality copies are still uploading to its node."""

Updated = Callable[[Path, dict[str, Any]], Awaitable[None]]


class EarlierParts:
    def __init__(self, settings: Settings, operator_token: str, updated: Updated) -> None:
        """updated: the downstream side's ``session_updated``."""
        self.settings = settings
        self._token = operator_token
        self._updated = updated
        self._background = Background()
        #: earlier parts being fetched: a notice heard again (the node restarted twice) is
        #: not fetched twice into the same place
        self._joining: set[str] = set()

    def heard(self, action: dict[str, Any]) -> None:
        """A node's notice (PART_RECOVERED): ``session_id`` recovered there, ``continued_by``
        here, ``url`` its public URL."""
        earlier, session_id, url = (action.get(k) for k in ("session_id", "continued_by", "url"))
        if not (isinstance(earlier, str) and isinstance(session_id, str) and isinstance(url, str)
                and SESSION_ID.fullmatch(earlier) and SESSION_ID.fullmatch(session_id)):
            logger.warning("a part-recovered notice not understood: %r", action)
            return
        if earlier not in self._joining:
            self._joining.add(earlier)
            self._background.spawn(self._join_once(earlier, session_id, url))

    async def _join_once(self, earlier: str, session_id: str, url: str) -> None:
        try:
            await self.join(earlier, session_id, url)
        finally:
            self._joining.discard(earlier)

    async def stop(self) -> None:
        await self._background.cancel()

    async def join(self, earlier: str, session_id: str, url: str) -> bool:
        """Fetch ``earlier`` from the node at ``url`` and join it to ``session_id``; whether
        it joined (False: logged why)."""
        session_dir = self.settings.sessions_dir / session_id
        deadline = time.monotonic() + self.settings.node_part_wait_s
        if not await self._finalised(session_dir, deadline):
            logger.error("session %s: not finalised here within the wait; its earlier part %s "
                         "stays apart", session_id, earlier)
            return False
        manifest = await asyncio.to_thread(read_manifest, session_dir)
        if waiting_for(manifest) != earlier:
            return False  # joined already, or not the part it waits for
        incoming = self.settings.data_dir / "incoming" / earlier
        pause = FIRST_PAUSE_S
        failures = 0
        try:
            while True:
                try:
                    part = await self._fetch(url, earlier, incoming)
                    await asyncio.to_thread(join_earlier_part, session_dir, part, incoming)
                except PartNotSettled:
                    if time.monotonic() > deadline:
                        logger.error("session %s: its earlier part %s kept uploading past the "
                                     "wait; it stays apart", session_id, earlier)
                        return False
                    await asyncio.sleep(POLL_S)  # not a failure: asked again until it settles
                    continue
                except PartRefused as exc:
                    logger.error("session %s: its earlier part %s refused: %s", session_id, earlier, exc)
                    return False
                except (httpx.HTTPError, OSError, ValueError) as exc:
                    failures += 1
                    logger.warning("session %s: fetching its earlier part %s from %s failed "
                                   "(try %d of %d): %s", session_id, earlier, url, failures,
                                   FETCH_TRIES, exc)
                    if failures == FETCH_TRIES:
                        logger.error("session %s: its earlier part %s could not be fetched",
                                     session_id, earlier)
                        return False
                    await asyncio.sleep(pause)
                    pause *= 2
                    continue
                except Exception:  # a manifest not as a node writes it: nothing was written
                    logger.exception("session %s: joining its earlier part %s failed",
                                     session_id, earlier)
                    return False
                logger.warning("session %s: its earlier part %s joined", session_id, earlier)
                await self._updated(session_dir, {"continues": {"session_id": earlier,
                                                                "state": "merged"}})
                return True
        finally:
            await asyncio.to_thread(shutil.rmtree, incoming, True)

    async def _finalised(self, session_dir: Path, deadline: float) -> bool:
        while time.monotonic() < deadline:
            try:
                manifest = await asyncio.to_thread(read_manifest, session_dir)
            except FileNotFoundError:
                return False
            if manifest.get("state") != "recording":
                return True
            await asyncio.sleep(POLL_S)
        return False

    async def _fetch(self, url: str, earlier: str, incoming: Path) -> dict[str, Any]:
        """The earlier session's manifest, its part files fetched into ``incoming`` and
        checked. ValueError when a file is not what the manifest says."""
        base = f"{url.rstrip('/')}/api/v1/sessions/{earlier}"
        headers = {"Authorization": f"Bearer {self._token}"}
        timeout = httpx.Timeout(READ_TIMEOUT_S)
        # the files API may answer a file kept in S3 only with a presigned URL (307)
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            answer = await client.get(base, headers=headers)
            answer.raise_for_status()
            part = answer.json()
            if not isinstance(part, dict) or part.get("session_id") != earlier:
                raise ValueError(f"{base}: not the manifest of {earlier}")
            if any((p.get("hq") or {}).get("state") == "uploading" for p in part.get("performers", [])):
                raise PartNotSettled(earlier)
            for entry in part_files(part):
                await self._fetch_file(client, f"{base}/files/{entry['path']}", headers,
                                       incoming / entry["path"], entry)
        return part

    @staticmethod
    async def _fetch_file(client: httpx.AsyncClient, url: str, headers: dict[str, str],
                          target: Path, entry: dict[str, Any]) -> None:
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        async with client.stream("GET", url, headers=headers) as answer:
            answer.raise_for_status()
            f = await asyncio.to_thread(open, target, "wb")
            try:
                async for chunk in answer.aiter_bytes():
                    size += len(chunk)
                    if size > entry["bytes"]:
                        raise ValueError(f"{entry['path']}: more than its {entry['bytes']} bytes")
                    digest.update(chunk)
                    await asyncio.to_thread(f.write, chunk)
            finally:
                await asyncio.to_thread(f.close)
        if size != entry["bytes"] or digest.hexdigest() != entry["sha256"]:
            raise ValueError(f"{entry['path']}: not the file its manifest lists")
