"""A synthetic capture, written as the live recorder writes it but faster than real time:
for the finalise benchmark and for recorder tests that need hours of media in seconds."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from improv_capture.clock import utc_iso
from improv_capture.recorder.capture import SessionWriter, TrackKey
from improv_capture.recorder.files import write_json_atomic


def vp8_loop(width: int = 640, height: int = 480, frames: int = 60, bitrate: int = 1_000_000) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.bit_rate = bitrate
    codec.gop_size = frames
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    for i in range(frames):
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out


def opus_loop(packets: int = 50) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48000, "mono", "s16"
    codec.time_base = Fraction(1, 48000)
    out: list[bytes] = []
    t = np.arange(960) / 48000
    for i in range(packets):
        tone = (0.3 * np.sin(2 * np.pi * 440 * (t + i * 0.02)) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def write_session(
    session_dir: Path, performers: int, seconds: float, started_unix: float | None = None
) -> Path:
    """A session in state `recording` with ``performers`` x ``seconds`` of capture."""
    started = started_unix if started_unix is not None else time.time() - seconds - 1
    video, audio = vp8_loop(), opus_loop()
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
