"""The bot's signaling and peer connections (docs/signaling.md), and its report."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import platform
import re
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import websockets
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from improv_capture.close_codes import CLOSE_MOVED
from improv_capture.media import aiortc_hooks
from improv_capture.media.connections import rtc_configuration
from improv_capture.tools.bot.media import (
    BeepAudioTrack,
    FlashVideoTrack,
    Loudspeaker,
    MicAudioTrack,
    PreencodedBeepAudioTrack,
    PreencodedFlashVideoTrack,
    WallClockTrack,
)
from improv_capture.tools.bot.studio import Studio, StudioOptions

logger = logging.getLogger(__name__)


def stamp_at_capture(sender: RTCRtpSender, track: WallClockTrack) -> None:
    """The sender's reports pair RTP time with the track's capture slots, as a browser's do."""
    aiortc_hooks.stamp_reports_at_capture(sender, lambda: track.captured_at)


FLASH_THRESHOLD = 180
PREFERRED = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}


class BotError(Exception):
    pass


def parse_invite(url: str) -> tuple[str, str]:
    """Return (signaling websocket URL, invite token) from an invite link."""
    parts = urlsplit(url)
    token = parse_qs(parts.fragment).get("invite", [None])[0]
    if not token or parts.scheme not in ("http", "https"):
        raise BotError(f"not an invite URL: {url!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/api/v1/signal", token


def signal_url(base_url: str) -> str:
    """The signaling socket of a server at ``base_url`` (a node's public URL)."""
    parts = urlsplit(base_url)
    return f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}/api/v1/signal"


class ConnectionLost(BotError):
    """The socket ended without the server saying the stay is over (a node died, a `moved`
    close, a "try later"): with ``--follow`` the bot joins again, elsewhere if need be."""


#: --follow: how long between two tries to join again, and how long to keep trying
FOLLOW_RETRY_S = 0.5
FOLLOW_FOR_S = 60.0


def invite_origin(url: str) -> str:
    """The server an invite link came from (``scheme://host:port``): where uploads go."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def msid_by_mid(sdp: str) -> dict[str, str]:
    """The media stream id of each m-section, keyed by mid."""
    streams: dict[str, str] = {}
    for section in sdp.split("\nm=")[1:]:
        mid = re.search(r"^a=mid:(\S+)", section, re.M)
        msid = re.search(r"^a=msid:(\S+)", section, re.M)
        if mid and msid:
            streams[mid.group(1)] = msid.group(1)
    return streams


def one_turn_url(ice_servers: list[dict[str, Any]],
                 transport: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The welcome's ICE servers for aiortc, and the TURN URL it will use. aiortc uses one
    TURN URL, the first listed, while the welcome lists every transport (a browser tries
    them all): keep the first TURN URL reached over ``transport`` (udp, tcp or tls; None:
    the first of any), drop the other TURN URLs, keep STUN. BotError when none matches."""
    from improv_capture.media.turn import turn_transport

    servers, chosen = [], None
    for server in ice_servers:
        urls = server.get("urls") or []
        urls = [urls] if isinstance(urls, str) else list(urls)
        kept = []
        for url in urls:
            if not url.startswith("turn"):
                kept.append(url)
            elif chosen is None and (transport is None or turn_transport(url) == transport):
                kept.append(url)
                chosen = url
        if kept:
            servers.append({**server, "urls": kept})
    if transport is not None and chosen is None:
        raise BotError(f"the server's welcome has no TURN URL over {transport}")
    return servers, chosen


class TrackStats:
    """What arrived of one remote track; the bot's clock is the ground truth."""

    def __init__(self) -> None:
        self.frames = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.latencies: list[float] = []
        self._in_flash = False

    def add(self, arrival: float) -> None:
        self.frames += 1
        if self.first_at is None:
            self.first_at = arrival
        self.last_at = arrival

    def video_frame(self, frame: Any, arrival: float) -> None:
        self.add(arrival)
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[::8, : frame.width : 8]
        flash = float(luma.mean()) > FLASH_THRESHOLD
        if flash and not self._in_flash:
            self.latencies.append((arrival - np.floor(arrival)) * 1000.0)
        self._in_flash = flash

    @property
    def fps(self) -> float:
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return 0.0
        return (self.frames - 1) / (self.last_at - self.first_at)


class Bot:
    def __init__(
        self,
        invite_url: str,
        video: MediaStreamTrack | None = None,
        audio: MediaStreamTrack | None = None,
        studio: StudioOptions | None = None,
        turn_transport: str | None = None,
        speaker: Loudspeaker | None = None,
        follow: bool = False,
    ) -> None:
        self.ws_url, self.token = parse_invite(invite_url)
        #: --follow: when the socket is lost, join again (the invite's node, or where a `moved`
        #: message says, or another node the welcome named), as a page does
        self.follow = follow
        self.nodes: list[str] = []
        self.moved_to: str | None = None
        self.rejoins = 0
        #: --leak-gain: the audio received plays here and leaks into ``audio`` (media.py)
        self.speaker = speaker
        #: which of the welcome's TURN URLs to use (aiortc uses one): udp, tcp, tls or any
        self.turn_transport = turn_transport
        self.turn_url: str | None = None
        self.sent_before_leave: dict[str, int | None] | None = None
        #: in a studio room, the local full-quality recording and its upload
        self.studio = Studio(invite_origin(invite_url), self.token, studio or StudioOptions(),
                             publish_pc=lambda: self.pub)
        self.video = video or FlashVideoTrack()
        self.audio = audio or BeepAudioTrack()
        self.performer_id: str | None = None
        self.peers: dict[str, dict[str, Any]] = {}
        self.received: dict[str, dict[str, TrackStats]] = {}
        self.pub: RTCPeerConnection | None = None
        self.sub: RTCPeerConnection | None = None
        self._config = RTCConfiguration()
        self._ws: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._offer_streams: dict[str, str] = {}
        self.joined = asyncio.Event()
        #: set by :meth:`leave` (SIGTERM in the CLI): stop before ``duration`` is up
        self.leaving = asyncio.Event()

    def leave(self) -> None:
        """Leave the room now, as at the end of ``duration``: the run ends cleanly."""
        self.leaving.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send(json.dumps(message))

    def pause_media(self, after_s: float, for_s: float) -> None:
        """Stop sending audio and video ``after_s`` seconds from now, for ``for_s`` seconds."""
        start = time.time() + after_s
        for track in (self.video, self.audio):
            pause = getattr(track, "pause", None)
            if pause is not None:
                pause.start, pause.end = start, start + for_s

    async def run(self, duration: float) -> None:
        if not self.follow:
            await self._stay(duration)
            return
        deadline = time.monotonic() + duration
        candidates = [self.ws_url]
        lost_at: float | None = None
        while True:
            try:
                await self._stay(max(deadline - time.monotonic(), 0.1))
                return
            except (ConnectionLost, OSError, websockets.InvalidHandshake, asyncio.TimeoutError) as exc:
                if self.leaving.is_set() or time.monotonic() >= deadline:
                    return
                lost_at = lost_at if lost_at is not None and not self.joined.is_set() else time.monotonic()
                if time.monotonic() - lost_at > FOLLOW_FOR_S:
                    raise BotError(f"lost the room for {FOLLOW_FOR_S:g} s: {exc}") from exc
                logger.warning("lost the room (%s); joining again", exc or type(exc).__name__)
            await self._drop_connections()
            for url in [signal_url(n) for n in self.nodes]:
                if url not in candidates:
                    candidates.append(url)
            if self.moved_to is not None:
                self.ws_url, self.moved_to = signal_url(self.moved_to), None
            else:  # the next place to look, round the known nodes
                self.ws_url = candidates[(candidates.index(self.ws_url) + 1) % len(candidates)] \
                    if self.ws_url in candidates else candidates[0]
                await asyncio.sleep(FOLLOW_RETRY_S)
            self.rejoins += 1

    async def _drop_connections(self) -> None:
        """The connections of a stay that ended: new ones are made at the next welcome (the
        tracks go on, so what was sent is counted across stays)."""
        self.joined.clear()
        for pc in (self.pub, self.sub):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 5)
        self.pub = self.sub = None

    async def _stay(self, duration: float) -> None:
        """One socket's stay: hello to leave (or to the socket's end)."""
        async with websockets.connect(self.ws_url, max_size=2**20, open_timeout=5) as ws:
            self._ws = ws
            await self.send({"type": "hello", "token": self.token})
            reader = asyncio.ensure_future(self._read())
            joined = asyncio.ensure_future(self.joined.wait())
            leaving = asyncio.ensure_future(self.leaving.wait())
            try:
                await asyncio.wait({reader, joined, leaving}, timeout=20,
                                   return_when=asyncio.FIRST_COMPLETED)
                lost = ConnectionLost if self.follow else BotError
                if reader.done():
                    reader.result()
                    raise lost("the server closed the connection before we joined")
                if not joined.done() and not leaving.done():
                    raise lost("timed out joining the room")
                if not leaving.done():
                    done, _ = await asyncio.wait({reader, leaving}, timeout=duration,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if reader in done:
                        reader.result()
                        raise lost("the server closed the connection")
                self.studio.stop()  # the local recording ends as the bot leaves
                self.sent_before_leave = self._sent()
                await self.send({"type": "leave"})
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(reader, 5)
            finally:
                for task in (joined, leaving, reader):
                    task.cancel()
                await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pc in (self.pub, self.sub):
            if pc is not None:
                await pc.close()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                handler = getattr(self, f"_on_{message['type']}", None)
                if handler is not None:
                    await handler(message)
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_MOVED and self.follow:
                raise ConnectionLost(f"moved: {exc.rcvd.reason}") from exc
            if exc.rcvd is not None and exc.rcvd.code >= 4000:
                raise BotError(f"closed by server: {exc.rcvd.code} {exc.rcvd.reason}") from exc
        if self._ws.close_code == CLOSE_MOVED and self.follow:
            raise ConnectionLost(f"moved: {self._ws.close_reason}")
        if self._ws.close_code is not None and self._ws.close_code >= 4000:
            raise BotError(f"closed by server: {self._ws.close_code} {self._ws.close_reason}")

    async def _on_moved(self, message: dict[str, Any]) -> None:
        self.moved_to = str(message["url"])

    async def _on_welcome(self, message: dict[str, Any]) -> None:
        self.performer_id = message["performer_id"]
        self.nodes = [str(n) for n in message.get("nodes") or []]
        servers, self.turn_url = one_turn_url(message.get("ice_servers") or [],
                                              self.turn_transport)
        self._config = rtc_configuration(servers)
        self.studio.welcome(message)
        if self.studio.is_studio and self.pub is None:
            await self._studio_media(message["media"])
        consent = message["consent"]
        digest = hashlib.sha256(consent["text"].encode("utf-8")).hexdigest()
        if digest != consent["text_sha256"]:
            raise BotError("consent text does not match its digest")
        await self.send({"type": "consent", "version": consent["version"], "text_sha256": digest})

    async def _studio_media(self, live: dict[str, Any]) -> None:
        """A studio page sends its camera scaled down to the live size; the bot's media also
        carries the second codes its local recording has (media.py). New pictures, or loops
        encoded anew: off the event loop."""
        configure_video = getattr(self.video, "configure", None)
        configure_audio = getattr(self.audio, "configure", None)
        if configure_video is not None:
            await asyncio.to_thread(configure_video, live["width"], live["height"], True)
        if configure_audio is not None:
            await asyncio.to_thread(configure_audio, True)

    async def _on_consent_ok(self, message: dict[str, Any]) -> None:
        width, height = self.studio.capture_size() if self.studio.is_studio else (640, 480)
        await self.send(
            {
                "type": "capture",
                "user_agent": f"improv-capture-bot (Python {platform.python_version()})",
                "audio_processing": {
                    "echoCancellation": False,
                    "noiseSuppression": False,
                    "autoGainControl": False,
                },
                "video_settings": {"width": width, "height": height, "frameRate": 30},
            }
        )
        self.pub = RTCPeerConnection(self._config)
        for track in (self.audio, self.video):
            transceiver = self.pub.addTransceiver(track, direction="sendonly")
            if isinstance(track, WallClockTrack):  # its reports name the capture, as a browser's
                stamp_at_capture(transceiver.sender, track)
            transceiver.setCodecPreferences(
                [
                    c
                    for c in RTCRtpSender.getCapabilities(track.kind).codecs
                    if c.mimeType.lower() in PREFERRED[track.kind]
                ]
            )
        await self.pub.setLocalDescription(await self.pub.createOffer())
        await self.send({"type": "publish", "sdp": self.pub.localDescription.sdp})
        self.studio.consent_given()

    async def _on_publish_answer(self, message: dict[str, Any]) -> None:
        assert self.pub is not None
        await self.pub.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))
        self.joined.set()

    async def _on_peers(self, message: dict[str, Any]) -> None:
        self.peers = {p["performer_id"]: p for p in message["peers"]}

    async def _on_subscribe_offer(self, message: dict[str, Any]) -> None:
        await self._on_peers(message)
        if self.sub is None:
            self.sub = RTCPeerConnection(self._config)
            self.sub.on("track", self._on_track)
        self._offer_streams = msid_by_mid(message["sdp"])
        await self.sub.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        await self.send({"type": "subscribe_answer", "sdp": self.sub.localDescription.sdp})

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.sub is not None
        transceiver = next(t for t in self.sub.getTransceivers() if t.receiver.track is track)
        aiortc_hooks.skip_lost_video(transceiver.receiver)  # as a browser does
        stream_id = self._offer_streams.get(transceiver.mid or "")
        performer = next(
            (pid for pid, p in self.peers.items() if p.get("stream_id") == stream_id),
            stream_id.rsplit(".", 1)[0] if stream_id else "unknown",
        )
        stats = self.received.setdefault(performer, {}).setdefault(track.kind, TrackStats())
        self._tasks.append(asyncio.ensure_future(self._consume(track, stats, performer)))

    async def _consume(self, track: MediaStreamTrack, stats: TrackStats, performer: str) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    stats.video_frame(frame, time.time())
                else:
                    stats.add(time.time())
                    if self.speaker is not None:
                        self.speaker.play(performer, frame, time.time())

    async def _on_recording(self, message: dict[str, Any]) -> None:
        self.studio.recording(message)

    async def _on_error(self, message: dict[str, Any]) -> None:
        logger.warning("server error: %s %s", message.get("code"), message.get("message"))

    def _sent(self) -> dict[str, Any]:
        sent: dict[str, Any] = {"video_frames": getattr(self.video, "frames_sent", None),
                                "audio_frames": getattr(self.audio, "frames_sent", None),
                                "flashes": getattr(self.video, "flashes_sent", None)}
        if isinstance(self.audio, MicAudioTrack):
            speech = self.audio.sent_speech()
            if speech is not None:
                # wall-clock [start, end] of the speech sent (--voice): the ground truth
                sent["speech"] = speech
            if self.audio.runs_dropped:
                # so many breaks in sending mid-speech that the earliest runs' speech is not in it
                sent["speech_runs_dropped"] = self.audio.runs_dropped
        if self.speaker is not None:
            sent["leak"] = {"gain": self.speaker.gain, "frames": self.speaker.frames_mixed,
                            "late_s": round(self.speaker.late_s, 3)}
        return sent

    def report(self) -> dict[str, Any]:
        received = {}
        for performer, kinds in self.received.items():
            video = kinds.get("video", TrackStats())
            audio = kinds.get("audio", TrackStats())
            lat = sorted(video.latencies)
            received[performer] = {
                "video_frames": video.frames,
                "fps": round(video.fps, 2),
                "audio_frames": audio.frames,
                "flashes": len(lat),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
                "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat else None,
            }
        report: dict[str, Any] = {
            "performer_id": self.performer_id,
            "sent": self._sent(),
            # what a recording of the whole stay can hold: frames sent after the leave
            # message (until the server closes the socket) arrive after the seat is gone
            "sent_before_leave": self.sent_before_leave,
            "received": received,
            "rejoins": self.rejoins,
            "turn_url": self.turn_url,
        }
        hq = self.studio.report()
        if hq is not None:
            report["hq"] = hq
        return report


async def run_bot(
    invite_url: str,
    duration: float,
    report_path: Path | None,
    pause: tuple[float, float] | None = None,
    preencoded: bool = False,
    studio: StudioOptions | None = None,
    turn_transport: str | None = None,
    voice: int | None = None,
    leak_gain: float = 0.0,
    follow: bool = False,
) -> int:
    from improv_capture.media import aiortc_hooks
    from improv_capture.settings import Settings

    # the bot gathers candidates where the server does (IMPROV_ICE_ADDRESSES)
    aiortc_hooks.restrict_ice_addresses(Settings().ice_addresses)
    if voice is not None or leak_gain:
        # the sound is made frame by frame (it mixes what is received); video may be looped
        speaker = Loudspeaker(leak_gain) if leak_gain else None
        bot = Bot(invite_url, video=PreencodedFlashVideoTrack() if preencoded else None,
                  audio=MicAudioTrack(voice, speaker), studio=studio,
                  turn_transport=turn_transport, speaker=speaker, follow=follow)
    elif preencoded:
        bot = Bot(invite_url, video=PreencodedFlashVideoTrack(), audio=PreencodedBeepAudioTrack(),
                  studio=studio, turn_transport=turn_transport, follow=follow)
    else:
        bot = Bot(invite_url, studio=studio, turn_transport=turn_transport, follow=follow)
    if pause is not None:
        bot.pause_media(*pause)
    status = 0
    # SIGTERM (and Ctrl-C) leave the room as the end of the duration does: a caller that has
    # seen enough stops the bot and still gets a clean leave, its report and status 0
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, bot.leave)
    try:
        await bot.run(duration)
    except (BotError, OSError, websockets.InvalidHandshake, asyncio.TimeoutError) as exc:
        print(f"improv-capture bot: {exc or type(exc).__name__}", flush=True)
        status = 1
    finally:
        # a studio take's upload goes on after the leave, within its deadline
        await bot.studio.finish()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    report = bot.report()
    text = json.dumps(report, indent=2)
    if report_path is not None:
        report_path.write_text(text)
    else:
        print(text)
    return status
