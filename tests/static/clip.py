"""A flash/beep clip for Chromium's fake capture devices.

Chromium plays ``--use-file-for-fake-video-capture`` (Y4M) and ``--use-file-for-fake-audio-capture``
(WAV) in a loop, each on its own, so both must loop with exactly the same period. In every second
of the clip the video has one fully white frame and the audio starts a 1 kHz tone of 100 ms at
the same instant of the loop; everything else is a dark picture (with a small moving block, so the
encoder always has something to code) and silence. improv_capture.recorder.verify.decode_file finds the flashes
and beeps.

Chromium 156 plays the first frame of a Y4M file twice each time the file loops (seen in its own
MediaRecorder files: ..., last frame, first frame, first frame, second frame, ...). A file of
SECONDS * FPS frames would therefore loop every SECONDS + 1/FPS and the video would fall one frame
behind the audio per loop. So the Y4M holds one frame less than SECONDS * FPS: with the repeated
first frame it plays for exactly SECONDS, like the WAV. The first frame is dark, the flashes sit
half a second into each second (frames FPS/2 - 1, FPS * 3/2 - 1, ..., played one slot later
because of the repeat) and the beeps start at 0.5, 1.5, ... s. Where the loops of the two files
start relative to each other does not matter: the fake devices start them at different instants
anyway, and tests compare offsets, never absolute times.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 640, 480, 30
#: the studio profile's capture size (tests/static/test_studio_page.py)
HD = (1280, 720)
RATE = 48000
SECONDS = 4
WHITE, DARK, BLOCK = 235, 40, 90  # luma (video range); the block stays far below a flash
TONE_HZ, TONE_S, TONE_AMPLITUDE = 1000, 0.1, 0.5
#: where in each second the flash and the beep are
EVENT_S = 0.5


@dataclass(frozen=True)
class Clip:
    video: Path
    audio: Path
    seconds: int


def write_y4m(path: Path, seconds: int = SECONDS, size: tuple[int, int] = (WIDTH, HEIGHT)) -> None:
    width, height = size
    header = f"YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg\n".encode()
    chroma = np.full(width * height // 2, 128, np.uint8).tobytes()  # U and V planes, neutral
    luma = np.empty((height, width), np.uint8)
    event_frame = round(EVENT_S * FPS)
    with open(path, "wb") as f:
        f.write(header)
        # frame i plays in slot i + 1 (slot 0 is the repeat of frame 0)
        for index in range(seconds * FPS - 1):
            slot = index + 1
            if slot % FPS == event_frame:
                luma.fill(WHITE)
            else:
                luma.fill(DARK)
                x = (slot * 16) % (width - 64)
                luma[height // 2 - 32 : height // 2 + 32, x : x + 64] = BLOCK
            f.write(b"FRAME\n")
            f.write(luma.tobytes())
            f.write(chroma)


def write_wav(path: Path, seconds: int = SECONDS) -> None:
    samples = np.zeros(seconds * RATE, np.float64)
    tone = np.sin(2 * np.pi * TONE_HZ * np.arange(int(TONE_S * RATE)) / RATE) * TONE_AMPLITUDE
    for second in range(seconds):
        start = round((second + EVENT_S) * RATE)
        samples[start : start + tone.size] = tone
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((samples * 32767).astype("<i2").tobytes())


def write_clip(
    directory: Path, seconds: int = SECONDS, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> Clip:
    """clip.y4m (``size`` pixels, 640x480 unless told) and clip.wav in ``directory``; both loop
    every ``seconds`` in Chromium."""
    directory.mkdir(parents=True, exist_ok=True)
    clip = Clip(directory / "clip.y4m", directory / "clip.wav", seconds)
    write_y4m(clip.video, seconds, size)
    write_wav(clip.audio, seconds)
    return clip
