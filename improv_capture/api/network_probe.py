"""The performer page's network check, server side (docs/signaling.md, "Network check").

Before joining, the page opens a short-lived peer connection to the server with one data
channel and nothing else, over the ICE servers its call would use (TURN included): whether it
connects, and over which candidate pair (its own side: UDP direct or a TURN relay), the page
reads from its own stats; how fast it can send, it learns from here: what this side saw arrive
while the page sent for ~2 s.

The rate is that of the datagrams arriving, not of the messages delivered: on a congested
link the channel's retransmissions cross the link too (a capped home uplink loses a burst,
and the page's SCTP sends much of it twice), and the media the call will send is not
retransmitted, so what crossed the link is the figure that says whether the call fits. The page
paces itself at ``max_kbps``: a link faster than that is plenty, and a probe takes a bounded
share of the event loop that carries every room's media.

A probe makes the server build a peer connection and read bytes on a client's say-so, so every
part of it is bounded (:class:`ProbeLimits`): one at a time per performer (a new one replaces
it), a few a minute per invite, a handful per process; a hard time limit from the offer on; the
counting window and the bytes counted; the bytes on the wire. It is closed on every path (its
result sent and the page closing its side, the time limit, the socket's end, a replacement, the
server's shutdown). It carries no media and records nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from improv_capture.media import aiortc_hooks
from improv_capture.media.connections import rtc_configuration, validate_sdp
from improv_capture.media.sdp_policy import NegotiationError, SdpPolicy
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)

#: The one data channel a probe takes; any other channel is closed at once.
CHANNEL_LABEL = "probe"
#: What the page sends on the channel when it has sent all it will.
END_MESSAGE = "end"


@dataclass(frozen=True)
class ProbeLimits:
    """What one probe, one invite and one process may use."""

    #: The counting window, from the first byte counted: the page sends for this long.
    window_s: float = 2.0
    #: The start of the window, not measured: a link's token bucket lets a burst through at
    #: first, and the sender's congestion window is still growing.
    warmup_s: float = 0.5
    #: The rate the page sends at most: above it an uplink is plenty for a call (the standard
    #: profile sends 1.2 Mbit/s of video), and a probe's work for the server stays bounded.
    max_kbps: int = 5000
    #: Message bytes counted at most (a page that does not pace itself); the window ends there.
    max_bytes: int = 2 * 1024 * 1024
    #: From the offer to the close, whatever happens meanwhile (gathering, connecting,
    #: counting, the page never closing its side).
    timeout_s: float = 15.0
    #: After the result is sent, how long the page has to read it and close its side.
    linger_s: float = 2.0
    #: Probes one invite (performer) may start in a minute; more: `probe_limited`
    #: (IMPROV_PROBES_PER_MINUTE).
    per_minute: int = 4
    #: Probes running at once in this process; more: `probe_busy` (IMPROV_MAX_PROBES).
    max_running: int = 8
    #: How often the bytes on the wire are read (:attr:`max_wire_bytes`).
    watch_interval_s: float = 0.25

    @property
    def max_wire_bytes(self) -> int:
        """Datagrams' bytes a probe may receive in all (the counted bytes, their headers,
        retransmissions, fragments of a message never finished): past it, it is closed."""
        return 2 * self.max_bytes + 1024 * 1024


class ProbeRefused(Exception):
    """A probe not started; ``code`` and the message go to the page in an ``error``."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s

    def message(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "error", "code": self.code, "message": str(self)}
        if self.retry_after_s is not None:
            out["retry_after_s"] = round(self.retry_after_s, 2)
        return out


class Probe:
    """One network check: a peer connection that counts what arrives on its data channel."""

    def __init__(self, performer_id: str, owner: object, ice_servers: list[dict[str, Any]],
                 limits: ProbeLimits, on_closed: Callable[[Probe], None]) -> None:
        self.performer_id = performer_id
        self.owner = owner
        self.limits = limits
        self.bytes = 0
        self.result: dict[str, Any] | None = None
        self.closed = False
        self._on_closed = on_closed
        self._channel: RTCDataChannel | None = None
        self._first_at: float | None = None
        self._from: tuple[float, int] | None = None  # (time, wire bytes) the rate runs from
        self._last: tuple[float, int] = (0.0, 0)
        loop = asyncio.get_running_loop()
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("connectionstatechange", self._on_state)
        self._timers = [loop.call_later(limits.timeout_s, self._close_soon, "time limit")]
        self._watch = asyncio.ensure_future(self._watch_wire())
        self._closing: asyncio.Future[None] | None = None

    async def answer(self, offer_sdp: str) -> str:
        """Answer an offer the SDP policy has passed (SdpPolicy.datachannel_offer)."""
        sdp = validate_sdp(offer_sdp, "offer")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError, OperationError and others
            raise NegotiationError(f"cannot use this offer: {exc}") from exc
        if self.closed:
            raise NegotiationError("the probe ended while it was being set up")
        return str(self.pc.localDescription.sdp)

    def _on_channel(self, channel: RTCDataChannel) -> None:
        if self._channel is not None or channel.label != CHANNEL_LABEL:
            channel.close()
            return
        self._channel = channel
        channel.on("message", self._on_message)

    def _on_message(self, data: bytes | str) -> None:
        if self.result is not None:
            return
        if isinstance(data, str):
            if data == END_MESSAGE:
                self._finish("end")
            return
        now, wire = time.monotonic(), self._wire_bytes()
        if self._first_at is None:
            self._first_at = now
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(self.limits.window_s, self._finish, "window"))
        if self._from is None and now - self._first_at >= self.limits.warmup_s:
            self._from = (now, wire)
        self._last = (now, wire)
        self.bytes += len(data)
        if self.bytes >= self.limits.max_bytes:
            self._finish("max_bytes")

    def _finish(self, reason: str) -> None:
        """Send the count, once; the page closes its side on reading it (else the linger)."""
        if self.result is not None or self.closed:
            return
        (since, wire_then), (until, wire_now) = self._from or self._last, self._last
        span, wire = until - since, wire_now - wire_then  # after the warm-up, to the last message
        rate = wire * 8 / span / 1000 if span > 0 else None
        capped = reason == "max_bytes" or (rate or 0) >= 0.9 * self.limits.max_kbps
        self.result = {"type": "result", "bytes": self.bytes, "wire_bytes": wire,
                       "seconds": round(span, 3),
                       "kbps": round(rate) if rate is not None else None, "capped": capped}
        logger.info("network check of %s: %d bytes (%d on the wire) in %.2f s (%s kbit/s, %s)",
                    self.performer_id, self.bytes, wire, span,
                    "?" if rate is None else round(rate), reason)
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(json.dumps(self.result))
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.limits.linger_s, self._close_soon, "done"))

    def _wire_bytes(self) -> int:
        sctp = self.pc.sctp
        return aiortc_hooks.dtls_bytes_received(sctp.transport) if sctp is not None else 0

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._close_soon(self.pc.connectionState)

    async def _watch_wire(self) -> None:
        """Close a probe whose transport took more than ``max_wire_bytes``."""
        while True:
            await asyncio.sleep(self.limits.watch_interval_s)
            received = self._wire_bytes()
            if received > self.limits.max_wire_bytes:
                logger.warning("network check of %s: %d bytes on the wire, over %d: closed",
                               self.performer_id, received, self.limits.max_wire_bytes)
                self._close_soon("too many bytes")
                return

    def _close_soon(self, reason: str) -> None:
        if self._closing is None:
            logger.debug("network check of %s closes: %s", self.performer_id, reason)
            self._closing = asyncio.ensure_future(self.close())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for timer in self._timers:
            timer.cancel()
        if self._watch is not asyncio.current_task():
            self._watch.cancel()
        try:
            await self.pc.close()
        finally:
            self._on_closed(self)


class NetworkProbes:
    """The probes of this process, and who may start one."""

    def __init__(self, settings: Settings, limits: ProbeLimits | None = None) -> None:
        # the server's own side of a relayed path: never through TURN (media/turn.py)
        self._ice_servers = settings.ice_servers
        self._policy = SdpPolicy.from_settings(settings)
        self.limits = limits or ProbeLimits(per_minute=settings.probes_per_minute,
                                            max_running=settings.max_probes)
        self._running: dict[str, Probe] = {}
        self._starts: dict[str, deque[float]] = {}

    @property
    def running(self) -> int:
        return len(self._running)

    async def start(self, performer_id: str, owner: object, offer: object) -> dict[str, Any]:
        """The ``probe_answer`` to ``offer`` from ``performer_id``'s socket ``owner``;
        :class:`ProbeRefused` when it may not run or the offer is refused."""
        limits = self.limits
        now = time.monotonic()
        self._forget_starts_before(now - 60.0)
        starts = self._starts.setdefault(performer_id, deque())
        if len(starts) >= limits.per_minute:
            raise ProbeRefused("probe_limited",
                               f"at most {limits.per_minute} network checks a minute",
                               starts[0] + 60.0 - now)
        starts.append(now)
        previous = self._running.get(performer_id)
        if previous is not None:  # one at a time: the newer replaces it
            await previous.close()
        if len(self._running) >= limits.max_running:
            raise ProbeRefused("probe_busy", "the server is running as many network checks as "
                               "it may; try again in a few seconds", limits.timeout_s)
        try:
            sdp = self._policy.datachannel_offer(offer)
        except NegotiationError as exc:
            raise ProbeRefused("probe_failed", str(exc)) from exc
        probe = Probe(performer_id, owner, self._ice_servers, limits, self._closed)
        self._running[performer_id] = probe
        try:
            answer = await probe.answer(sdp)
        except NegotiationError as exc:
            await probe.close()
            raise ProbeRefused("probe_failed", str(exc)) from exc
        except BaseException:
            await probe.close()
            raise
        return {"type": "probe_answer", "sdp": answer, "window_s": limits.window_s,
                "max_kbps": limits.max_kbps, "max_bytes": limits.max_bytes}

    async def stop(self, performer_id: str, owner: object) -> None:
        """The probe ``owner`` (a socket) started, if it still runs: its socket ended."""
        probe = self._running.get(performer_id)
        if probe is not None and probe.owner is owner:
            await probe.close()

    async def close(self) -> None:
        """Every probe (the server stops)."""
        for probe in list(self._running.values()):
            await probe.close()

    def _closed(self, probe: Probe) -> None:
        if self._running.get(probe.performer_id) is probe:
            del self._running[probe.performer_id]

    def _forget_starts_before(self, cutoff: float) -> None:
        for performer_id in list(self._starts):
            starts = self._starts[performer_id]
            while starts and starts[0] < cutoff:
                starts.popleft()
            if not starts:
                del self._starts[performer_id]
