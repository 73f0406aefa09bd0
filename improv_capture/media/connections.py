"""The two peer connections each performer has with the server.

Like LiveKit, a performer publishes on one connection (the performer offers) and subscribes
on another (the server offers), so offers never collide and the server can re-offer the
subscribe side whenever someone joins or leaves without touching what the performer sends.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as sdp_parser
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from improv_capture.media import aiortc_hooks
from improv_capture.media.downlink import DownlinkGuard
from improv_capture.media.relay import KeyframeRequester, Publication, RelayTrack
from improv_capture.media.sdp_policy import NegotiationError, SdpPolicy, media_kinds

logger = logging.getLogger(__name__)

MIME_TYPES = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}


def rtc_configuration(ice_servers: list[dict[str, Any]]) -> RTCConfiguration:
    servers = [
        RTCIceServer(
            urls=s["urls"], username=s.get("username"), credential=s.get("credential")
        )
        for s in ice_servers
    ]
    # an empty list, never None: with None aiortc falls back to Google's public STUN server
    # (a DNS lookup and packets leaving the host at every gathering, unasked).
    # MAX_BUNDLE: aiortc's default (balanced) leaves a second video transceiver on a
    # transport that bundling never replaces, so its sender never starts
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def codec_preferences(kind: str) -> list[RTCRtpCodecCapability]:
    """VP8 (+RTX) for video and Opus for audio: what the relay can pass through untouched."""
    return [
        c
        for c in RTCRtpSender.getCapabilities(kind).codecs
        if c.mimeType.lower() in MIME_TYPES[kind]
    ]


def validate_sdp(sdp: str, expected_type: str) -> str:
    """Reject what is not a complete session description before aiortc applies it; ``sdp``
    has passed the :class:`SdpPolicy` already (its size and m-lines are bounded)."""
    try:
        parsed = sdp_parser.SessionDescription.parse(sdp)
    except Exception as exc:
        raise NegotiationError(f"{expected_type} sdp does not parse: {exc}") from exc
    if not parsed.media:
        raise NegotiationError(f"{expected_type} sdp has no media section")
    for media in parsed.media:
        if media.kind in ("audio", "video") and (
            media.ice.usernameFragment is None or media.dtls is None or not media.dtls.fingerprints
        ):
            raise NegotiationError(f"{expected_type} sdp lacks ICE or DTLS parameters")
    return sdp


_OPUS_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.MULTILINE | re.IGNORECASE)


def with_audio_nack(answer_sdp: str) -> str:
    """The answer with NACK feedback on Opus, so that a sender keeps its audio packets and
    sends a lost one again (the server asks for them: media/aiortc_hooks.py). Chrome offers no
    NACK for Opus, and aiortc answers only what was offered; Chrome takes what the answer says."""
    def add(section: str) -> str:
        found = _OPUS_RTPMAP.search(section)
        if not section.startswith("audio") or not found or f"a=rtcp-fb:{found[1]} nack" in section:
            return section
        line = found.group(0)
        end = section.index("\n", section.index(line)) + 1
        return section[:end] + f"a=rtcp-fb:{found[1]} nack\r\n" + section[end:]

    head, *sections = re.split(r"(?m)^m=", answer_sdp)
    return "m=".join([head, *(add(section) for section in sections)])


class PublishConnection:
    """Receives one performer's audio and video, passed through undecoded."""

    def __init__(
        self,
        performer_id: str,
        ice_servers: list[dict[str, Any]],
        queue_capacity: dict[str, int],
        pli_interval_s: float,
        on_publication: Callable[[Publication], None],
    ) -> None:
        self.performer_id = performer_id
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.publications: dict[str, Publication] = {}
        self._on_publication = on_publication
        self._capacity = queue_capacity
        self._pli_interval_s = pli_interval_s
        for kind in ("audio", "video"):
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(codec_preferences(kind))
        self.pc.on("track", self._handle_track)

    def _handle_track(self, track: Any) -> None:
        if track.kind in self.publications:
            # one publication per kind (the policy allows one m-line each): a second one
            # would replace the first in the dict and run on unstopped
            logger.warning("%s: ignored a second %s track", self.performer_id, track.kind)
            return
        transceiver = next(
            t for t in self.pc.getTransceivers() if t.receiver.track is track
        )
        receiver = transceiver.receiver
        self._receive(receiver)
        requester = None
        if track.kind == "video":
            requester = KeyframeRequester(
                lambda: aiortc_hooks.send_pli(receiver), self._pli_interval_s
            )
        publication = self._new_publication(track, requester)
        self.publications[track.kind] = publication
        aiortc_hooks.on_sender_report(receiver, publication.sender_report)
        publication.take_audio_level = lambda: aiortc_hooks.take_audio_level(receiver)
        publication.start()
        self._on_publication(publication)

    def _receive(self, receiver: RTCRtpReceiver) -> None:
        """Before the receiver starts: make it hand over encoded frames, never decoding."""
        aiortc_hooks.enable_passthrough(receiver)

    def _new_publication(
        self, track: MediaStreamTrack, requester: KeyframeRequester | None
    ) -> Publication:
        return Publication(self.performer_id, track, requester, self._capacity[track.kind])

    async def answer(self, offer_sdp: str) -> str:
        """Answer an offer the SDP policy has passed (SdpPolicy.publish_offer)."""
        sdp = validate_sdp(offer_sdp, "offer")
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            kinds = {t.kind for t in self.pc.getTransceivers() if t.mid is not None}
            if not kinds:
                raise NegotiationError("offer has no audio or video section")
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except NegotiationError:
            raise
        except Exception as exc:  # aiortc raises ValueError, OperationError and others
            raise NegotiationError(f"cannot use this offer: {exc}") from exc
        return with_audio_nack(self.pc.localDescription.sdp)

    async def close(self) -> None:
        for publication in self.publications.values():
            await publication.stop()
        await self.pc.close()


@dataclass
class Forward:
    """One publisher's audio and video as sent to one subscriber, in one media stream."""

    performer_id: str
    stream_id: str
    transceivers: list[RTCRtpTransceiver] = field(default_factory=list)
    tracks: list[tuple[Publication, RelayTrack]] = field(default_factory=list)


class SubscribeConnection:
    """Sends every other performer's media to one performer; re-offers on every change."""

    def __init__(
        self,
        ice_servers: list[dict[str, Any]],
        send_offer: Callable[[str], Awaitable[None]],
        answer_timeout_s: float,
        policy: SdpPolicy,
    ) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.policy = policy
        self._offered_kinds: list[str] = []
        self._send_offer = send_offer
        self._answer_timeout_s = answer_timeout_s
        self._forwards: dict[str, Forward] = {}
        self._answer: asyncio.Future[str] | None = None
        self._dirty = asyncio.Event()
        self._task = asyncio.ensure_future(self._negotiate_loop())
        self.negotiations = 0
        #: pauses the videos this subscriber's link cannot take
        self.downlink = DownlinkGuard()

    @property
    def stream_ids(self) -> dict[str, str]:
        return {pid: f.stream_id for pid, f in self._forwards.items()}

    def sync(self, wanted: dict[str, tuple[str, list[Publication]]]) -> None:
        """Forward exactly ``wanted`` ({performer_id: (stream_id, publications)})."""
        changed = False
        for pid in list(self._forwards):
            if pid not in wanted or wanted[pid][0] != self._forwards[pid].stream_id:
                self._remove(self._forwards.pop(pid))
                changed = True
        for pid, (stream_id, publications) in wanted.items():
            forward = self._forwards.setdefault(pid, Forward(pid, stream_id))
            forwarded = {id(p) for p, _ in forward.tracks}
            missing = [p for p in publications if id(p) not in forwarded]
            if missing:
                self._add(forward, missing)
                changed = True
            if not forward.tracks:
                del self._forwards[pid]
        if changed:
            self._dirty.set()

    def _add(self, forward: Forward, publications: list[Publication]) -> None:
        stream_id = forward.stream_id
        for publication in sorted(publications, key=lambda p: p.kind):
            track = publication.subscribe()
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences(publication.kind))
            aiortc_hooks.set_stream_id(transceiver.sender, stream_id)
            if publication.kind == "video":
                aiortc_hooks.on_keyframe_request(transceiver.sender, track.resync)
            aiortc_hooks.on_receiver_report(transceiver.sender, self.downlink.report)
            self.downlink.add(track)
            forward.transceivers.append(transceiver)
            forward.tracks.append((publication, track))

    def _remove(self, forward: Forward) -> None:
        for publication, track in forward.tracks:
            publication.unsubscribe(track)
            self.downlink.remove(track)
        for transceiver in forward.transceivers:
            # aiortc cannot remove an m-line: it stays, inactive, and its sender stops
            transceiver.direction = "inactive"
            asyncio.ensure_future(transceiver.sender.stop())

    def forward_stats(self) -> dict[str, dict[str, dict[str, int | bool]]]:
        """What each forwarded track has been handed and dropped, per publisher and kind."""
        return {
            pid: {
                track.kind: {
                    "packets": track.packets_in,
                    "dropped": track.packets_dropped,
                    "queued": track.queued,
                    "waiting_for_keyframe": track.waiting_for_keyframe,
                    "paused": track.paused,
                }
                for _, track in forward.tracks
            }
            for pid, forward in self._forwards.items()
        }

    def handle_answer(self, sdp: object) -> None:
        if self._answer is None or self._answer.done():
            raise NegotiationError("no subscribe offer is waiting for an answer")
        sdp = self.policy.answer(sdp, self._offered_kinds)
        self._answer.set_result(validate_sdp(sdp, "answer"))

    async def _negotiate_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if not self.pc.getTransceivers():
                continue
            try:
                await self._negotiate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("subscribe negotiation failed: %s", exc)
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def _negotiate(self) -> None:
        self.negotiations += 1
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._offered_kinds = media_kinds(self.pc.localDescription.sdp)
        self._answer = asyncio.get_running_loop().create_future()
        await self._send_offer(self.pc.localDescription.sdp)
        try:
            sdp = await asyncio.wait_for(self._answer, self._answer_timeout_s)
        finally:
            self._answer = None
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            raise NegotiationError(f"cannot use this answer: {exc}") from exc
        for forward in self._forwards.values():
            for publication, _ in forward.tracks:
                if publication.kind == "video":
                    publication.request_keyframe()

    async def close(self) -> None:
        self._task.cancel()
        for forward in self._forwards.values():
            for publication, track in forward.tracks:
                publication.unsubscribe(track)
        self._forwards.clear()
        await self.pc.close()
