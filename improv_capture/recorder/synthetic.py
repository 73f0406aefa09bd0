"""A synthetic capture, written as the live recorder writes it but faster than real time:
for the finalise benchmark and for recorder tests that need hours of media in seconds."""

from __future__ import annotations

import functools
import heapq
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from improv_capture.clock import utc_iso
from improv_capture.recorder.capture import SessionWriter, TrackKey
from improv_capture.recorder.files import sha256_file, write_json_atomic
from improv_capture.recorder.finalise import write_sha256sums
from improv_capture.recorder.hq.entry import hq_entry


def vp8_loop(width: int = 640, height: int = 480, frames: int = 60, bitrate: int = 1_000_000) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.bit_rate = bitrate
    codec.gop_size = frames
    codec.thread_count = 1  # libvpx's threads spin when the machine is busy (a test suite)
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    for i in range(frames):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out


def opus_loop(packets: int = 50, sound: np.ndarray | None = None) -> list[bytes]:
    """Opus packets of 20 ms: a 440 Hz tone, or ``sound`` (mono int16 at 48 kHz, its whole
    20 ms frames: ``packets`` is then ignored)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48000, "mono", "s16"
    codec.time_base = Fraction(1, 48000)
    out: list[bytes] = []
    t = np.arange(960) / 48000
    if sound is not None:
        packets = sound.size // 960
    for i in range(packets):
        if sound is not None:
            tone = np.ascontiguousarray(sound[i * 960 : (i + 1) * 960], dtype=np.int16)
        else:
            tone = (0.3 * np.sin(2 * np.pi * 440 * (t + i * 0.02)) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def write_session(
    session_dir: Path, performers: int, seconds: float, started_unix: float | None = None,
    video_size: tuple[int, int] = (640, 480),
    sounds: list[np.ndarray] | None = None,
) -> Path:
    """A session in state `recording` with ``performers`` x ``seconds`` of capture.
    ``sounds``: performer n's microphone is ``sounds[n]`` looped (mono int16, 48 kHz), else
    every performer sends the same 440 Hz tone."""
    started = started_unix if started_unix is not None else time.time() - seconds - 1
    video, tone = vp8_loop(*video_size), opus_loop()
    manifest = {
        "schema_version": 1, "session_id": session_dir.name, "room_id": "room_synthetic",
        "state": "recording", "reason": None, "started_at": utc_iso(started),
        "ended_at": utc_iso(started + seconds + 0.5), "duration_s": None,
        "performers": [], "markers": [], "prompts": [], "files": [],
    }
    writer = SessionWriter(session_dir, queue_size=1 << 30)
    for n in range(performers):
        pid = f"p_synth{n}"
        manifest["performers"].append({
            "performer_id": pid, "display_name": f"Synthetic {n}", "consent": None,
            "capture": None, "joined_at_s": 0.0, "left_at_s": None, "file": None,
            "tracks": [], "sync": {"method": None, "rtt_s": 0.001},
        })
        clock_offset = 0.25 * n  # each sender's clock is off the server's by a different amount
        audio = opus_loop(sound=sounds[n]) if sounds else tone
        for kind, packets, rate, step in (("video", video, 90000, 3000), ("audio", audio, 48000, 960)):
            key: TrackKey = (pid, "s001", kind)
            count = int(seconds * rate / step)
            for i in range(count):
                capture_s = started + 0.5 + i * step / rate
                arrival = capture_s + 0.02
                if i % int(rate / step) == 0:  # a sender report every second
                    writer.submit(("sr", key, i * step, capture_s - clock_offset, arrival))
                data = packets[i % len(packets)]
                writer.submit(("p", key, data, i * step, kind == "audio" or i % len(packets) == 0, arrival))
            writer.submit(("close", key))
    writer.close(timeout=600)
    write_json_atomic(session_dir / "manifest.json", json.loads(json.dumps(manifest)))
    return session_dir


# --- a studio session: a camera scene recorded twice (the live copy and the page's own) ------

#: The scene's frame rate and sample rate.
SCENE_FPS = 30
SCENE_RATE = 48000
#: 16:9 blocks of luma that change every frame: each frame unlike any other.
SCENE_GRID = (8, 6)


@dataclass(frozen=True)
class Scene:
    """A camera and a microphone filming the same known scene, on the scene's own clock:
    frame n is captured at ``n / 30 + phase_s`` and sample k at ``k / 48000``.

    Every frame is a grid of blocks of random gray (never twice the same picture); frame n is
    white (a flash) when n is a multiple of 30 (n > 0), and a chirp of its own pitch and
    loudness starts at the same instant (a beep, after quiet noise): the flash and beep
    pattern `verify` measures A/V sync on, without being periodic."""

    seed: int = 11
    phase_s: float = 0.0123

    def frame(self, n: int, width: int, height: int) -> av.VideoFrame:
        if n > 0 and n % SCENE_FPS == 0:
            luma = np.full((height, width), 235, np.uint8)
        else:
            cols, rows = SCENE_GRID
            levels = np.random.default_rng([self.seed, n]).integers(40, 170, (rows, cols), dtype=np.uint8)
            luma = np.repeat(np.repeat(levels, -(-height // rows), axis=0), -(-width // cols), axis=1)
            luma = np.ascontiguousarray(luma[:height, :width])
        frame = av.VideoFrame(width, height, "yuv420p")
        planes = [luma, np.full((height // 2, width // 2), 128, np.uint8),
                  np.full((height // 2, width // 2), 128, np.uint8)]
        for plane, data in zip(frame.planes, planes):
            rows_data = np.zeros((data.shape[0], plane.line_size), np.uint8)
            rows_data[:, : data.shape[1]] = data
            plane.update(rows_data.tobytes())
        return frame

    @functools.lru_cache(maxsize=4)  # noqa: B019 (a few seconds of a frozen scene)
    def _second(self, k: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1_000_000 + k])
        sound = (0.01 * rng.standard_normal(SCENE_RATE)).astype(np.float32)
        if k > 0:
            onset = int(round(self.phase_s * SCENE_RATE))
            t = np.arange(int(0.1 * SCENE_RATE)) / SCENE_RATE
            f0, loud = 300 + 500 * rng.random(), 0.3 + 0.3 * rng.random()
            chirp = loud * np.sin(2 * np.pi * f0 * (t + t * t / 0.1))  # f0 up to 3 f0
            sound[onset : onset + t.size] += chirp.astype(np.float32)
        return sound

    def sound(self, first: int, count: int) -> np.ndarray:
        """Samples first .. first + count - 1 (mono, float)."""
        seconds = range(first // SCENE_RATE, (first + count - 1) // SCENE_RATE + 1)
        joined = np.concatenate([self._second(k) for k in seconds])
        start = first - seconds[0] * SCENE_RATE
        return joined[start : start + count]


def write_scene_webm(
    path: Path,
    scene: Scene,
    width: int,
    height: int,
    frames: list[tuple[int, float]],
    sound: tuple[int, int, float] | None,
    video_bitrate: int = 1_000_000,
    audio_bitrate: int = 64_000,
    keyframe_interval: int = 60,
) -> Path:
    """A VP8 + Opus WebM of ``scene``: ``frames`` are (scene frame, time in the file);
    ``sound`` is (first scene sample, count, time of that sample in the file). Encoded the way a
    browser's recorder or the finalise stage stamps them (Opus packets carry the encoder's
    pre-skip: decoded, sample k lands at its time)."""
    ms = Fraction(1, 1000)
    container = av.open(str(path), "w", format="webm")
    video = container.add_stream("libvpx", rate=SCENE_FPS)
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.bit_rate = video_bitrate
    video.codec_context.time_base = ms
    video.time_base = ms
    video.gop_size = keyframe_interval
    video.options = {"deadline": "realtime", "cpu-used": "16", "lag-in-frames": "0"}
    video.codec_context.thread_count = 1  # as in vp8_loop
    audio = None
    if sound is not None:
        audio = container.add_stream("libopus", rate=SCENE_RATE, layout="mono")
        audio.bit_rate = audio_bitrate

    def pictures() -> Iterator[tuple[float, str, Any]]:
        for n, t in frames:
            frame = scene.frame(n, width, height)
            frame.pts, frame.time_base = int(round(t * 1000)), ms
            yield t, "video", frame

    def sounds() -> Iterator[tuple[float, str, Any]]:
        if sound is None:
            return
        first, count, t0 = sound
        start = int(round(t0 * SCENE_RATE))
        for offset in range(0, count - 959, 960):
            samples = scene.sound(first + offset, 960)
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = SCENE_RATE
            frame.pts, frame.time_base = start + offset, Fraction(1, SCENE_RATE)
            yield (start + offset) / SCENE_RATE, "audio", frame

    # frames are made as they are encoded: a long take at 1280x720 never sits in memory
    for _, kind, frame in heapq.merge(pictures(), sounds(), key=lambda item: item[0]):
        stream = video if kind == "video" else audio
        for packet in stream.encode(frame):  # type: ignore[union-attr]
            container.mux(packet)
    for stream in (video, audio):
        if stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
    container.close()
    return path


#: A studio profile as the server resolves it (improv_capture/rooms/profiles.py), for
#: sessions written here.
STUDIO_PROFILE: dict[str, Any] = {
    "name": "studio",
    "capture": {"width": 1280, "height": 720, "frame_rate": 30, "echo_cancellation": False,
                "noise_suppression": False, "auto_gain_control": False},
    "live": {"width": 640, "height": 360, "max_video_bitrate": 800000},
    "hq": {"mime_type": "video/webm;codecs=vp8,opus", "video_bitrate": 4000000,
           "audio_bitrate": 128000, "chunk_s": 2, "max_chunk_bytes": 8388608,
           "upload_deadline_s": 3600},
}


def write_studio_session(
    session_dir: Path,
    scene: Scene,
    started_unix: float,
    seconds: float,
    performer_id: str = "p_studio0",
    sync_offset_s: float = 0.8,
    live_size: tuple[int, int] = (160, 90),
    dropped: frozenset[int] = frozenset(),
) -> Path:
    """A finalised studio session of one performer whose live copy films ``scene`` from t = 0
    (scene frame n at ``n / 30 + phase_s``, minus the ``dropped`` ones; sample k at k / 48000),
    their copy still uploading. ``sync_offset_s``: their page's clock to the server's."""

    live = session_dir / "performers" / f"{performer_id}.webm"
    live.parent.mkdir(parents=True, exist_ok=True)
    count = int(seconds * SCENE_FPS)
    frames = [(n, n / SCENE_FPS + scene.phase_s) for n in range(count) if n not in dropped]
    width, height = live_size
    write_scene_webm(live, scene, width, height, frames, (0, int(seconds * SCENE_RATE), 0.0),
                     video_bitrate=200_000, audio_bitrate=32_000)
    entry = {"path": f"performers/{live.name}", "bytes": live.stat().st_size,
             "sha256": sha256_file(live)}
    manifest = {
        "schema_version": 1, "session_id": session_dir.name, "room_id": "room_studio",
        "room_name": "Studio", "state": "complete", "reason": None,
        "started_at": utc_iso(started_unix), "ended_at": utc_iso(started_unix + seconds),
        "duration_s": seconds, "profile": STUDIO_PROFILE,
        "performers": [{
            "performer_id": performer_id, "display_name": "Studio performer",
            "consent": {"version": 1, "text_sha256": "0" * 64, "accepted_at": utc_iso(started_unix)},
            "capture": None, "joined_at_s": 0.0, "left_at_s": None, "file": entry,
            "tracks": [
                {"kind": "audio", "codec": "opus", "start_s": 0.0, "duration_s": seconds,
                 "frames": int(seconds * 50), "sample_rate": SCENE_RATE, "gaps": []},
                {"kind": "video", "codec": "vp8", "start_s": round(scene.phase_s, 6),
                 "duration_s": round(count / SCENE_FPS, 6), "frames": len(frames),
                 "width": width, "height": height, "gaps": []},
            ],
            "sync": {"method": "sender_reports", "offset_s": sync_offset_s, "rtt_s": 0.002,
                     "sender_reports": {"audio": int(seconds), "video": int(seconds)}, "segments": 1},
            "hq": hq_entry("uploading"),
        }],
        "markers": [], "prompts": [], "files": [entry], "revision": 1,
        "updated_at": utc_iso(started_unix + seconds + 1),
    }
    write_json_atomic(session_dir / "manifest.json", manifest)
    write_sha256sums(session_dir)
    return session_dir


def write_hq_part(
    path: Path,
    scene: Scene,
    first_frame: int,
    frames: int,
    audio_lag_s: float = 0.040,
    size: tuple[int, int] = (320, 180),
    video_bitrate: int = 1_500_000,
    keyframe_interval: int = 60,
) -> dict[str, float]:
    """A page's own recording of ``scene`` as its MediaRecorder writes it: times from 0, scene
    frame ``first_frame`` first, the sound stamped ``audio_lag_s`` late against the pictures
    (a browser recorder's own A/V offset). Returns where each stream truly belongs on the
    scene's timeline: {"audio_offset_s", "video_offset_s"} (session time = file time + offset,
    for a session whose live copy films the scene from t = 0)."""
    video_offset = first_frame / SCENE_FPS + scene.phase_s
    first_sample = int(round((video_offset - audio_lag_s) * SCENE_RATE))
    width, height = size
    write_scene_webm(path, scene, width, height,
                     [(first_frame + i, i / SCENE_FPS) for i in range(frames)],
                     (first_sample, int(frames / SCENE_FPS * SCENE_RATE), 0.0),
                     video_bitrate=video_bitrate, audio_bitrate=128_000,
                     keyframe_interval=keyframe_interval)
    return {"audio_offset_s": first_sample / SCENE_RATE, "video_offset_s": video_offset}
