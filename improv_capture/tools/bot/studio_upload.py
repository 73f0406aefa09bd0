"""Uploading a local recording over the HTTP upload routes (docs/api.md, "Uploads"), as a
studio page does: part info first, then every chunk in order until the server acknowledges
it, then the part's end. Nothing unacknowledged is ever dropped: a chunk is retried (network
errors, 5xx, 408, 429) with backoff until it is acknowledged or the bot gives up at its
upload deadline, and that is in the report."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from improv_capture.clock import utc_iso

logger = logging.getLogger(__name__)

#: Statuses after which the same request may succeed later: the server's "keep the chunk and
#: retry" (507 disk full, 503 busy) and a timeout (408), rate limits and server errors.
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504, 507})
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 15.0


class UploadStopped(Exception):
    """The server refused a request for good (a 4xx other than those retried): which request,
    and the server's answer."""

    def __init__(self, request: str, status: int, detail: str) -> None:
        super().__init__(f"{request}: {status} {detail}")
        self.status = status


@dataclass
class UploadStats:
    """The report's ``hq``: what was recorded, what the server acknowledged, how it went."""

    parts: int = 0
    #: frames of the local recording, and frames skipped because encoding fell behind
    video_frames: int = 0
    frames_skipped: int = 0
    chunks_recorded: int = 0
    chunks_acked: int = 0
    bytes: int = 0
    retries: int = 0
    #: what was left undone and why (a refusal, the deadline); a retried error is not one
    errors: list[str] = field(default_factory=list)
    first_chunk_at: float | None = None  # when the first chunk's upload began (epoch s)
    last_chunk_at: float | None = None  # when the last acknowledgement came

    def report(self) -> dict[str, Any]:
        span = (self.last_chunk_at or 0.0) - (self.first_chunk_at or 0.0)
        return {
            "parts": self.parts,
            "video_frames": self.video_frames,
            "frames_skipped": self.frames_skipped,
            "chunks_recorded": self.chunks_recorded,
            "chunks_acked": self.chunks_acked,
            "bytes": self.bytes,
            "retries": self.retries,
            "errors": self.errors,
            "first_chunk_at": utc_iso(self.first_chunk_at) if self.first_chunk_at else None,
            "last_chunk_at": utc_iso(self.last_chunk_at) if self.last_chunk_at else None,
            "upload_kbps": round(self.bytes * 8 / 1000 / span, 1) if span > 0 else None,
        }


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    return str(body["detail"]) if isinstance(body, dict) and "detail" in body else response.text[:200]


#: A paced chunk goes out in pieces this large (11 ms of a 6 Mbit/s uplink each).
TRICKLE_BYTES = 8 * 1024


#: The page's pacing rule (static/js/performer/studio/budget.js; docs/api.md, "Uploads"):
#: start at MIN, +STEP each second the call is healthy, halve when it is not.
MIN_BUDGET_BPS = 250_000
STEP_BPS = 250_000
RTT_SLACK_S = 0.025
MAX_LOSS = 0.02
RTT_FLOOR_SAMPLES = 30


class CallBudget:
    """What the live call leaves free, found as the performer page finds it: the budget
    grows while the call's round-trip time stays within RTT_SLACK_S of its floor and its
    receivers lose under MAX_LOSS, and halves as soon as either shows the upload queuing
    ahead of the call (remote-inbound-rtp of the publish connection, once a second)."""

    def __init__(self, pc: Callable[[], Any], max_bps: float) -> None:
        self.pc = pc
        self.max_bps = max_bps
        self.bps = float(MIN_BUDGET_BPS)
        self.rtts: list[float] = []

    async def sample(self) -> None:
        pc = self.pc()
        if pc is None or pc.connectionState == "closed":
            self.bps = float(MIN_BUDGET_BPS)
            return
        rtt, loss = None, 0.0
        for stats in (await pc.getStats()).values():
            if stats.type == "remote-inbound-rtp":
                if stats.roundTripTime is not None:
                    rtt = max(rtt or 0.0, float(stats.roundTripTime))
                loss = max(loss, float(stats.fractionLost or 0.0))
        if rtt is not None:
            self.rtts = (self.rtts + [rtt])[-RTT_FLOOR_SAMPLES:]
        floor = min(self.rtts) if self.rtts else None
        healthy = loss < MAX_LOSS and (rtt is None or floor is None or rtt <= floor + RTT_SLACK_S)
        self.bps = (min(self.max_bps, self.bps + STEP_BPS) if healthy
                    else max(float(MIN_BUDGET_BPS), self.bps / 2))


class Pacer:
    """Spaces uploads so their average stays under the budget while the take runs (the live
    call shares the uplink): a fixed ``kbps``, or a :class:`CallBudget` sampled once a second;
    :meth:`unpace` at the stop lets the rest go at once."""

    def __init__(self, kbps: float | None, budget: CallBudget | None = None) -> None:
        self.kbps = kbps if budget is None else budget.bps / 1000
        self.budget = budget
        self._unpaced = asyncio.Event()
        self._free_at = 0.0
        self._sampler: asyncio.Task[None] | None = None
        if not self.kbps:
            self._unpaced.set()
        elif budget is not None:
            self._sampler = asyncio.ensure_future(self._follow(budget))

    async def _follow(self, budget: CallBudget) -> None:
        while not self._unpaced.is_set():
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):  # a closing connection: keep the last budget
                await budget.sample()
            self.kbps = budget.bps / 1000

    def unpace(self) -> None:
        self._unpaced.set()
        if self._sampler is not None:
            self._sampler.cancel()

    @property
    def unpaced(self) -> bool:
        return self._unpaced.is_set()

    async def wait(self) -> None:
        """Until the budget allows the next upload (at once when unpaced, also mid-wait)."""
        delay = self._free_at - time.monotonic()
        if delay > 0 and not self._unpaced.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unpaced.wait(), delay)

    def sent(self, size: int) -> None:
        if self.kbps:
            self._free_at = max(self._free_at, time.monotonic()) + size * 8 / (self.kbps * 1000)

    async def trickle(self, data: bytes) -> AsyncIterator[bytes]:
        """``data`` in pieces of TRICKLE_BYTES, each when the budget allows: a paced chunk
        never lands in the uplink's queue as one burst ahead of the call's packets (a burst of
        a whole chunk, even rarely, delays the call's packets behind it: scripts/bench_studio.py)."""
        for start in range(0, len(data), TRICKLE_BYTES):
            piece = data[start:start + TRICKLE_BYTES]
            await self.wait()
            yield piece
            self.sent(len(piece))


class Uploader:
    """One performer's uploads into one session's ``hq`` URL."""

    def __init__(self, client: httpx.AsyncClient, url: str, pacer: Pacer, stats: UploadStats) -> None:
        self.client = client
        self.url = url
        self.pacer = pacer
        self.stats = stats

    async def declare(self, part: int, info: dict[str, Any]) -> None:
        await self._send("PUT", f"{self.url}/parts/{part}", json=info)
        self.stats.parts += 1

    async def put_chunk(self, part: int, index: int, chunk: bytes, recorded: int) -> None:
        await self.pacer.wait()
        if self.stats.first_chunk_at is None:
            self.stats.first_chunk_at = time.time()
        await self._send(
            "PUT", f"{self.url}/parts/{part}/chunks/{index}",
            body=lambda: chunk if self.pacer.unpaced else self.pacer.trickle(chunk),
            headers={"X-Chunk-Sha256": hashlib.sha256(chunk).hexdigest(),
                     "X-Recorded-Chunks": str(recorded)},
        )
        self.stats.chunks_acked += 1
        self.stats.bytes += len(chunk)
        self.stats.last_chunk_at = time.time()

    async def end(self, part: int, chunks: int) -> None:
        await self._send("POST", f"{self.url}/parts/{part}/end", json={"chunks": chunks})

    async def _send(
        self, method: str, url: str, body: Callable[[], bytes | AsyncIterator[bytes]] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """The request, repeated with backoff until the server answers 2xx; UploadStopped if
        it refuses for good. Only cancellation (the upload deadline) ends it otherwise.
        ``body`` makes a fresh (paced) body for every attempt."""
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                if body is not None:
                    kw["content"] = body()
                response = await self.client.request(method, url, **kw)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                retry_after = None
            else:
                if response.is_success:
                    return response
                if response.status_code not in RETRYABLE:
                    request = f"{method} {url.rsplit('/hq', 1)[-1] or '/'}"
                    raise UploadStopped(request, response.status_code, _detail(response))
                reason = f"{response.status_code} {_detail(response)}"
                retry_after = response.headers.get("retry-after")
            self.stats.retries += 1
            delay = backoff
            if retry_after and retry_after.isdigit():
                delay = min(max(float(retry_after), 0.1), BACKOFF_MAX_S)
            logger.warning("%s %s: %s; retrying in %.1f s", method, url, reason, delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
