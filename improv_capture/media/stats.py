"""Per-second live statistics of each performer: what the console shows and the recorder logs."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from improv_capture.media import aiortc_hooks
from improv_capture.media.connections import PublishConnection, SubscribeConnection
from improv_capture.media.relay import Publication

FROZEN_AFTER_S = 1.0
SILENT_DBOV = -60.0
SILENT_AFTER_S = 3.0
LOSSY_PCT = 5.0


@dataclass
class _Last:
    at: float
    packets: int
    bytes: int
    received: int = 0
    lost: int = 0
    loud_at: float = 0.0


class SampledMember(Protocol):
    """A performer's seat as the sampler reads it (rooms/model.py's Member)."""

    @property
    def state(self) -> str: ...

    @property
    def publisher(self) -> PublishConnection | None: ...

    @property
    def subscriber(self) -> SubscribeConnection | None: ...

    @property
    def publications(self) -> list[Publication]: ...


class StatsSampler:
    """Turns counters into rates; one sampler per server (the hub's stats fan-out), called
    once a second."""

    def __init__(self) -> None:
        # keyed weakly: a publication that ended takes its counters with it
        self._last: weakref.WeakKeyDictionary[Publication, _Last] = weakref.WeakKeyDictionary()

    async def sample(self, member: SampledMember) -> dict[str, Any]:
        """One performer's second: what it publishes and the round trip of what it receives;
        problems are flagged only while its socket is there (state "joined")."""
        now = time.time()
        inbound: dict[str, Any] = {}
        if member.publisher is not None:
            for item in (await member.publisher.pc.getStats()).values():
                if getattr(item, "type", None) == "inbound-rtp":
                    inbound[item.kind] = item
        stats: dict[str, Any] = {"state": member.state, "video": None, "audio": None}
        flags = []
        for publication in member.publications:
            track, track_flags = self._track(publication, inbound.get(publication.kind), now)
            stats[publication.kind] = track
            flags += track_flags if member.state == "joined" else []
        rtts = [
            rtt
            for t in (member.subscriber.pc.getTransceivers() if member.subscriber else [])
            if (rtt := aiortc_hooks.sender_rtt(t.sender)) is not None
        ]
        stats["rtt_ms"] = round(min(rtts) * 1000, 2) if rtts else None
        # how the performer reaches the server: host/srflx/prflx direct, relay through TURN
        stats["path"] = aiortc_hooks.ice_path(member.publisher.pc) if member.publisher else None
        stats["flags"] = flags
        return stats

    def _track(
        self, publication: Publication, inbound: Any, now: float
    ) -> tuple[dict[str, Any], list[str]]:
        last = self._last.get(publication)
        if last is None:
            last = self._last[publication] = _Last(now - 1.0, 0, 0, loud_at=now)
        elapsed = max(now - last.at, 1e-3)
        received = getattr(inbound, "packetsReceived", 0) or 0
        lost = getattr(inbound, "packetsLost", 0) or 0
        new_received, new_lost = received - last.received, max(lost - last.lost, 0)
        loss = 100.0 * new_lost / (new_received + new_lost) if new_received + new_lost else 0.0
        track: dict[str, Any] = {
            "bitrate_kbps": round((publication.bytes - last.bytes) * 8 / 1000 / elapsed, 1),
            "packets_lost": lost,
            "loss_pct": round(loss, 2),
            "jitter_ms": round(1000 * (getattr(inbound, "jitter", 0) or 0)
                               / (90000 if publication.kind == "video" else 48000), 2),
        }
        flags = ["lossy"] if loss > LOSSY_PCT else []
        quiet_for = now - (publication.last_packet_at or 0)
        if publication.kind == "video":
            track["fps"] = round((publication.packets - last.packets) / elapsed, 1)
            size = publication.frame_size
            track["width"], track["height"] = size if size else (None, None)
            if quiet_for > FROZEN_AFTER_S:
                flags.append("frozen")
        else:
            level = publication.take_audio_level()
            track["level_dbov"] = level
            if level is not None and level > SILENT_DBOV:
                last.loud_at = now
            if quiet_for > FROZEN_AFTER_S or now - last.loud_at > SILENT_AFTER_S:
                flags.append("silent")
        self._last[publication] = _Last(
            now, publication.packets, publication.bytes, received, lost, last.loud_at
        )
        return track, flags
