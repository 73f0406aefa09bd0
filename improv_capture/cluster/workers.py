"""The worker processes of a cluster: started, watched, restarted when they die, stopped.

Each worker is a whole `improv-capture serve` on a loopback port with its own event loop;
media flows straight between performers and the worker's ICE candidates, never through the
router. Workers run in their own session, so that a signal to the router's process group
reaches the router alone and it stops them in order; they get SIGTERM when the router dies
(PR_SET_PDEATHSIG), so a killed router leaves no orphan.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable

import httpx

from improv_capture.media.sdp_policy import server_gathering_addresses
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0  # stopping finalises the worker's recordings
RESTART_MAX_S = 30.0


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class Worker:
    def __init__(self, index: int, port: int) -> None:
        self.index = index
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None


class WorkerPool:
    """``settings.workers`` workers; ``on_ready(worker)`` runs after every (re)start."""

    def __init__(
        self, settings: Settings, on_ready: Callable[[Worker], Awaitable[None]]
    ) -> None:
        self.settings = settings
        self.workers = [Worker(i, free_loopback_port()) for i in range(settings.workers)]
        # a worker's public URL is always the router's: the router applies the public-URL
        # rule for its own address and hands the workers where to gather
        self._ice_addresses = server_gathering_addresses(settings)
        self._on_ready = on_ready
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def primary(self) -> Worker:
        return self.workers[0]

    async def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._keep_running(w)) for w in self.workers]
        await asyncio.wait_for(
            asyncio.gather(*(w.ready.wait() for w in self.workers)), READY_TIMEOUT_S
        )

    async def stop(self) -> None:
        """The other workers first: stopping finalises their recordings, which they report
        to the primary; then the primary."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await self._stop([w for w in self.workers if w.index])
        await self._stop([self.primary])

    async def _stop(self, workers: list[Worker]) -> None:
        procs = [w.proc for w in workers if w.proc is not None and w.proc.returncode is None]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    def _env(self, worker: Worker) -> dict[str, str]:
        s = self.settings
        env = {**os.environ, "IMPROV_WORKER_INDEX": str(worker.index),
               "IMPROV_PUBLIC_URL": s.base_url, "IMPROV_WORKERS": "1"}
        if worker.index:
            env["IMPROV_PRIMARY_URL"] = self.primary.url
        if self._ice_addresses:
            env["IMPROV_ICE_ADDRESSES"] = json.dumps(self._ice_addresses)
        return env

    async def _keep_running(self, worker: Worker) -> None:
        delay = 1.0
        while not self._stopping:
            worker.ready.clear()
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "improv_capture.cli", "serve", "--host", "127.0.0.1",
                "--port", str(worker.port), "--data-dir", str(self.settings.data_dir),
                env=self._env(worker), stdin=subprocess.DEVNULL, preexec_fn=die_with_parent,
                start_new_session=True,  # a Ctrl-C reaches the router, which stops workers in order
            )
            if await self._wait_ready(worker):
                logger.info("worker %d ready on %s (pid %d)", worker.index, worker.url, worker.pid)
                delay = 1.0
                await self._on_ready(worker)
                worker.ready.set()
            code = await worker.proc.wait()
            worker.ready.clear()
            if self._stopping:
                return
            logger.error("worker %d exited with %s; restarting it in %.0f s", worker.index, code, delay)
            await asyncio.sleep(delay)
            worker.restarts += 1
            delay = min(delay * 2, RESTART_MAX_S)

    async def _wait_ready(self, worker: Worker) -> bool:
        assert worker.proc is not None
        async with httpx.AsyncClient(timeout=2) as client:
            while worker.proc.returncode is None:
                try:
                    if (await client.get(f"{worker.url}/healthz")).status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        return False
