"""The bot as a studio performer: while a studio room records, it also records its own
flash/beep locally at full quality and uploads it in chunks (docs/signaling.md, `recording`;
docs/api.md, "Uploads"), as the performer page does with its raw camera and microphone.

Each take (one session) is one part: the local recorder's chunks go through a queue to one
upload task, in order; the part ends when the room stops recording or the bot leaves, and the
rest is uploaded unpaced, within ``upload_timeout_s`` of that stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import httpx

from improv_capture.tools.bot.studio_recorder import HqFormat, LocalRecorder
from improv_capture.tools.bot.studio_upload import (
    CallBudget,
    Pacer,
    Uploader,
    UploadStats,
    UploadStopped,
)

logger = logging.getLogger(__name__)

PART = 0  # the bot records each take in one run of its recorder: never a second part


@dataclass(frozen=True)
class StudioOptions:
    """The bot's studio settings (``improv-capture bot --help``)."""

    #: the local recording's size; None: the profile's capture size
    hq_size: tuple[int, int] | None = None
    #: upload pace while the take runs, kbit/s; None: as fast as the server takes it;
    #: "auto": the page's rule (studio_upload.CallBudget)
    pace_kbps: float | str | None = None
    #: how long after the stop the bot keeps uploading before it gives up (and says so)
    upload_timeout_s: float = 60.0
    #: bytes recorded but not yet acknowledged that the bot holds; past it the local
    #: recording stops and its part ends there (the live copy remains), as the page does
    max_pending_bytes: int = 256 * 2**20
    #: record and upload no copy (a studio performer whose copy is off: the benchmark's
    #: baseline of the live call alone)
    record: bool = True
    #: noise on the local recording's frames (+- luma levels), so it costs the bits a real
    #: camera's picture does; 0: the bare pattern
    grain: int = 0


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (W, H), both even (yuv420p) and at least 16."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise ValueError(f"not a size WxH: {text!r}")
    size = int(width), int(height)
    if min(size) < 16 or size[0] % 2 or size[1] % 2:
        raise ValueError(f"a size needs even sides of at least 16: {text!r}")
    return size


class Take:
    """One session's local recording and its upload."""

    def __init__(self, fmt: HqFormat, uploader: Uploader, options: StudioOptions) -> None:
        self.fmt = fmt
        self.uploader = uploader
        self.options = options
        self.stats = uploader.stats
        self.recorded = 0
        self.pending_bytes = 0
        self.gave_up = False
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self.recorder = LocalRecorder(fmt, self._from_thread)
        self.task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def start(self) -> None:
        started_at = self.recorder.start()
        self.task = asyncio.ensure_future(self._upload(self.fmt.part_info(started_at * 1000)))

    def stop(self) -> None:
        """End the take: the recorder closes its stream, the rest goes unpaced, and the upload
        gets ``upload_timeout_s`` from now."""
        self.recorder.stop()
        self.uploader.pacer.unpace()
        if self._deadline is None and self.task is not None and not self.task.done():
            self._deadline = self._loop.call_later(self.options.upload_timeout_s, self._give_up)

    async def finished(self) -> None:
        """The upload is done, refused, or past its deadline; the recorder's thread is gone."""
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self.task)
        if self._deadline is not None:
            self._deadline.cancel()
        await asyncio.to_thread(self.recorder.join, 10)
        self.stats.video_frames += self.recorder.video_frames
        self.stats.frames_skipped += self.recorder.frames_skipped
        if self.recorder.error:
            self.stats.errors.append(self.recorder.error)

    def _from_thread(self, chunk: bytes | None) -> None:
        self._loop.call_soon_threadsafe(self._arrived, chunk)

    def _arrived(self, chunk: bytes | None) -> None:
        if chunk is not None:
            self.recorded += 1
            self.stats.chunks_recorded += 1
            self.pending_bytes += len(chunk)
            if self.pending_bytes > self.options.max_pending_bytes and self.recorder.running:
                self.stats.errors.append(
                    f"over {self.options.max_pending_bytes} bytes not yet acknowledged: "
                    "the local recording stopped there")
                self.recorder.stop()
        self._queue.put_nowait(chunk)

    def _give_up(self) -> None:
        self.gave_up = True
        if self.task is not None:
            self.task.cancel()

    async def _upload(self, info: dict[str, Any]) -> None:
        index = 0
        try:
            await self.uploader.declare(PART, info)
            while (chunk := await self._queue.get()) is not None:
                await self.uploader.put_chunk(PART, index, chunk, self.recorded)
                self.pending_bytes -= len(chunk)
                index += 1
            await self.uploader.end(PART, index)
        except UploadStopped as exc:
            self.stats.errors.append(f"{exc} (stopped uploading at chunk {index})")
            self.recorder.stop()  # nothing more of it would be taken
        except (httpx.HTTPError, ValueError) as exc:  # a bad upload_url, an unreadable answer
            self.stats.errors.append(f"{exc!r} (stopped uploading at chunk {index})")
            self.recorder.stop()
        except asyncio.CancelledError:
            if not self.gave_up:
                raise
            self.stats.errors.append(
                f"upload timeout ({self.options.upload_timeout_s:g} s after the stop): "
                f"{self.recorded - index} recorded chunks not acknowledged, part not ended")


class Studio:
    """What a performer does in a studio room besides the live call."""

    def __init__(
        self, origin: str, token: str, options: StudioOptions,
        publish_pc: Callable[[], Any] = lambda: None,
    ) -> None:
        self.origin = origin
        self.token = token
        self.options = options
        #: the bot's publish connection (its stats pace the upload: pace_kbps "auto")
        self.publish_pc = publish_pc
        self.profile: dict[str, Any] | None = None
        self.consented = False
        self.stats = UploadStats()
        self.takes: dict[str, Take] = {}
        self._waiting: dict[str, Any] | None = None  # a take announced before consent
        self._client: httpx.AsyncClient | None = None

    @property
    def is_studio(self) -> bool:
        return bool(self.profile and self.profile.get("hq"))

    def capture_size(self) -> tuple[int, int]:
        """The size of the bot's "camera": what the local recording is made at."""
        if self.options.hq_size is not None:
            return self.options.hq_size
        assert self.profile is not None
        capture = self.profile["capture"]
        return int(capture["width"]), int(capture["height"])

    def welcome(self, message: dict[str, Any]) -> None:
        self.profile = message.get("profile")

    def consent_given(self) -> None:
        self.consented = True
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            self.recording(waiting)

    def recording(self, message: dict[str, Any]) -> None:
        """A `recording` message: start a take (after consent), or end one."""
        session_id = str(message.get("session_id"))
        if not message.get("active"):
            self._waiting = None
            if session_id in self.takes:
                self.takes[session_id].stop()
            return
        hq = message.get("hq")
        if not hq or session_id in self.takes or not self.options.record:
            return
        if not self.consented:
            self._waiting = message
            return
        self.takes[session_id] = take = Take(self._format(hq), self._uploader(hq), self.options)
        take.start()

    def _format(self, hq: dict[str, Any]) -> HqFormat:
        assert self.profile is not None
        width, height = self.capture_size()
        return HqFormat(width=width, height=height,
                        frame_rate=int(self.profile["capture"]["frame_rate"]),
                        video_bitrate=int(hq["video_bitrate"]),
                        audio_bitrate=int(hq["audio_bitrate"]),
                        chunk_s=float(hq["chunk_s"]),
                        max_chunk_bytes=int(hq["max_chunk_bytes"]),
                        grain=self.options.grain)

    def _uploader(self, hq: dict[str, Any]) -> Uploader:
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=httpx.Timeout(30.0, connect=10.0),
            )
        url = str(httpx.URL(self.origin).join(hq["upload_url"]))
        if self.options.pace_kbps == "auto":
            ceiling = 2 * (float(hq["video_bitrate"]) + float(hq["audio_bitrate"]))
            pacer = Pacer(None, CallBudget(self.publish_pc, ceiling))
        else:
            pacer = Pacer(float(self.options.pace_kbps) if self.options.pace_kbps else None)
        return Uploader(self._client, url, pacer, self.stats)

    def stop(self) -> None:
        """The bot leaves: every take ends now."""
        self._waiting = None
        for take in self.takes.values():
            take.stop()

    async def finish(self) -> None:
        """End every take and wait for their uploads (each bounded by its deadline)."""
        self.stop()
        for take in self.takes.values():
            await take.finished()
        if self._client is not None:
            await self._client.aclose()

    def report(self) -> dict[str, Any] | None:
        return self.stats.report() if self.takes else None
