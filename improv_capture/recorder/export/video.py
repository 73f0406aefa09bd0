"""A take's video, cut by stream copy (never decoded, never re-encoded) into a WebM that
starts on a keyframe.

The recording asks every publisher for a keyframe at each take marker, so the clip starts at
the first keyframe at or after the take's start when it comes within KEYFRAME_AFTER_S;
otherwise at the last keyframe before the start (the clip then opens a little early). Its
timestamps start at 0 on that keyframe; where it lies on the session clock is in the sample's
JSON. Each file is read front to back once for all takes, holding only the packets since the
last keyframe."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av

from improv_capture.recorder.export import ExportError
from improv_capture.recorder.export.source import archive_name
from improv_capture.recorder.vp8 import frame_size

#: A keyframe this soon after the take's start opens the clip (the one the server asked for
#: at the take marker arrives a frame or two after it).
KEYFRAME_AFTER_S = 0.2
#: At most this much video before a take's start is held to open its clip on the keyframe
#: before it (a sender that sends no keyframe for minutes would otherwise fill memory); past
#: it the clip opens on the first keyframe after the start (a later ``first_frame_s``).
KEYFRAME_MAX_LEAD_S = 10.0
#: The WebM is written without the muxer's random track ids and version strings: the same
#: packets give the same bytes.
BITEXACT = {"fflags": "+bitexact"}


@dataclass(frozen=True)
class Packet:
    t_s: float
    pts: int
    data: bytes
    keyframe: bool


@dataclass
class Clip:
    """The packets of one take's video, from the keyframe that opens it to the take's end."""

    codec: str
    time_base: Fraction
    width: int
    height: int
    packets: list[Packet]
    in_s: float
    out_s: float

    @property
    def first_frame_s(self) -> float:
        return self.packets[0].t_s

    def record(self, file: str) -> dict[str, Any]:
        return {
            "file": file, "in_s": self.in_s, "out_s": self.out_s,
            "first_frame_s": round(self.first_frame_s, 6),
            "keyframe_offset_s": round(self.first_frame_s - self.in_s, 6),
            "frames": len(self.packets), "width": self.width, "height": self.height,
        }

    def take_frames(self) -> list[tuple[float, int, bool]]:
        """(t_s, bytes, keyframe) of the packets inside the take (not the lead before it):
        what frozen-picture detection looks at."""
        return [(p.t_s, len(p.data), p.keyframe) for p in self.packets if p.t_s >= self.in_s]

    def webm(self, target: Path | BinaryIO) -> None:
        """Write the clip (video only), timestamps from 0 at its keyframe."""
        where = str(target) if isinstance(target, Path) else target
        container = av.open(where, "w", format="webm", container_options=BITEXACT)
        try:
            stream = container.add_mux_stream(self.codec, width=self.width, height=self.height)
            stream.time_base = self.time_base
            origin = self.packets[0].pts
            for item in self.packets:
                packet = av.Packet(item.data)
                packet.pts = packet.dts = item.pts - origin
                packet.time_base = self.time_base
                packet.is_keyframe = item.keyframe
                packet.stream = stream
                container.mux(packet)
        finally:
            container.close()


class VideoTrack:
    """The video packets of one performer file, read front to back: each ``clip`` takes a
    later take."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container: Any = None
        self._packets: Iterator[Packet] | None = None
        self._held: list[Packet] = []  # from the last keyframe read, in time order
        self._ahead: Packet | None = None
        try:
            container = av.open(str(path))
        except (av.FFmpegError, OSError) as exc:
            raise ExportError(f"{archive_name(path)}: cannot be read ({exc})") from None
        if not container.streams.video:
            container.close()
            return
        self._container = container
        stream = container.streams.video[0]
        self.codec = stream.codec_context.name
        self.time_base = Fraction(stream.time_base)
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self._packets = self._read(container, stream)

    @property
    def has_video(self) -> bool:
        return self._packets is not None

    def _read(self, container: Any, stream: Any) -> Iterator[Packet]:
        base = float(self.time_base)
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                yield Packet(packet.pts * base, int(packet.pts), bytes(packet), bool(packet.is_keyframe))
        except av.FFmpegError:
            return  # a cut-off end: what came before counts (the sha256 matched: as recorded)

    def clip(self, start_s: float, end_s: float) -> Clip | None:
        """The packets of [start_s, end_s) from the keyframe that opens the clip; None when
        the take has no video of this file (none inside it, or none decodable: no keyframe)."""
        if self._packets is None:
            return None
        window = self._held
        while True:
            packet = self._ahead if self._ahead is not None else next(self._packets, None)
            self._ahead = None
            if packet is None:
                break
            if packet.t_s >= end_s:
                self._ahead = packet
                break
            if packet.t_s < start_s:
                if packet.keyframe:
                    window = [packet]
                elif window and packet.t_s - window[0].t_s <= KEYFRAME_MAX_LEAD_S:
                    window.append(packet)
                else:
                    window = []  # nothing decodable before the start (or too long ago)
            else:
                window.append(packet)
        keyframes = [i for i, p in enumerate(window) if p.keyframe]
        # the next take starts at or after this end: keep what it may open on
        recent = keyframes and end_s - window[keyframes[-1]].t_s <= KEYFRAME_MAX_LEAD_S
        self._held = window[keyframes[-1]:] if recent else []
        after = [i for i in keyframes if window[i].t_s >= start_s]
        before = [i for i in keyframes if start_s - KEYFRAME_MAX_LEAD_S <= window[i].t_s < start_s]
        if after and window[after[0]].t_s < start_s + KEYFRAME_AFTER_S:
            opening = after[0]
        elif before:
            opening = before[-1]
        elif after:
            opening = after[0]
        else:
            return None
        packets = window[opening:]
        if packets[-1].t_s < start_s:
            return None  # the video ended before the take (the performer left): no clip
        size = frame_size(packets[0].data) if self.codec == "vp8" else None
        width, height = size or self.size
        return Clip(self.codec, self.time_base, width, height, packets,
                    round(start_s, 6), round(end_s, 6))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
