"""Quality checks of one take, each a JSON-able dict: the measured values, the thresholds they
were held against, and ``flagged`` (an export may leave flagged samples out). Inputs are the
take's 48 kHz mono samples (int16 or float in [-1, 1]) and its video packets; nothing here
decodes video."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from improv_capture.recorder.export.analysis.crosstalk import cross_talk
from improv_capture.recorder.export.analysis.pcm import RATE, dbfs, frame_stats, rounded, runs

__all__ = ["audio_level", "silent_stretches", "frozen_video", "cross_talk"]

#: level measures run on 10 ms frames (a speech turn's grid: vad.FRAME_S)
LEVEL_FRAME_S = 0.010
#: a sample at or above this magnitude (of full scale) counts as clipped
CLIP_LEVEL = 0.999
#: flag a take with more than this fraction of its samples clipped
MAX_CLIPPED_FRACTION = 0.001
#: flag a take whose mean level (over speech when turns are given) is below this
MIN_MEAN_DBFS = -50.0
#: a 10 ms frame below this RMS level is silent
SILENCE_DBFS = -60.0
#: flag a take whose longest silent stretch is longer than this, or than this fraction of it
MAX_SILENT_S = 10.0
MAX_SILENT_FRACTION = 0.5
#: an inter frame smaller than this codes (almost) no change: libvpx codes an unchanged
#: 640x480 picture in 47 bytes, while a live camera's sensor noise alone costs hundreds
FROZEN_BYTES = 100
#: flag a take with a stretch longer than this without a frame that codes a change
MAX_FROZEN_S = 2.0
#: after a keyframe an encoder spends a few inter frames refining the same picture (libvpx
#: realtime: 2-3 frames of hundreds of bytes); inter frames this soon after one are no change
KEYFRAME_SETTLE_S = 0.15


def audio_level(
    samples: np.ndarray, turns: Sequence[tuple[float, float]] | None = None, rate: int = RATE
) -> dict[str, Any]:
    """Mean level (RMS dBFS, over the speech turns when any are given, else the whole take),
    peak level and the fraction of clipped samples. Flagged when too quiet or clipped."""
    measured = frame_stats(samples, int(round(LEVEL_FRAME_S * rate)), CLIP_LEVEL)
    over = "whole"
    chosen = np.ones(measured.energy.size, dtype=bool)
    if turns:
        speech = np.zeros(measured.energy.size, dtype=bool)
        for start, end in turns:
            first = max(int(np.floor(start / LEVEL_FRAME_S + 1e-6)), 0)
            speech[first : int(np.ceil(end / LEVEL_FRAME_S - 1e-6))] = True
        if speech.any():
            chosen, over = speech, "speech"
    count = int(measured.lengths[chosen].sum())
    mean = dbfs(np.sqrt(measured.energy[chosen].sum() / count)) if count else dbfs(0.0)
    total = int(measured.lengths.sum())
    clipped = float(measured.clipped.sum() / total) if total else 0.0
    peak = dbfs(float(measured.peak.max())) if total else dbfs(0.0)
    return {
        "mean_dbfs": rounded(mean, 2),
        "over": over,
        "peak_dbfs": rounded(peak, 2),
        "clipped_fraction": rounded(clipped, 6),
        "clip_level": CLIP_LEVEL,
        "min_mean_dbfs": MIN_MEAN_DBFS,
        "max_clipped_fraction": MAX_CLIPPED_FRACTION,
        "flagged": bool(mean < MIN_MEAN_DBFS or clipped > MAX_CLIPPED_FRACTION),
    }


def silent_stretches(samples: np.ndarray, rate: int = RATE) -> dict[str, Any]:
    """The longest stretch of 10 ms frames below SILENCE_DBFS (a dead or muted microphone,
    or a gap filled with zeros) and the silent fraction of the take. Flagged when the longest
    stretch is longer than MAX_SILENT_S or than MAX_SILENT_FRACTION of the take."""
    measured = frame_stats(samples, int(round(LEVEL_FRAME_S * rate)), 1.0)
    mean_square = measured.energy / np.maximum(measured.lengths, 1)
    silent = mean_square < 10 ** (SILENCE_DBFS / 10)
    duration = float(measured.lengths.sum() / rate)
    longest_s = start_s = 0.0
    found = runs(silent)
    if found.size:
        lengths = np.cumsum(np.concatenate(([0], measured.lengths)))
        seconds = (lengths[found[:, 1]] - lengths[found[:, 0]]) / rate
        best = int(np.argmax(seconds))
        longest_s, start_s = float(seconds[best]), float(lengths[found[best, 0]] / rate)
    fraction = float(measured.lengths[silent].sum() / rate / duration) if duration else 0.0
    return {
        "longest_s": rounded(longest_s, 3),
        "longest_start_s": rounded(start_s, 3),
        "silent_fraction": rounded(fraction, 4),
        "silence_dbfs": SILENCE_DBFS,
        "max_s": MAX_SILENT_S,
        "max_fraction": MAX_SILENT_FRACTION,
        "flagged": bool(longest_s > MAX_SILENT_S or (
            duration > 0 and longest_s > MAX_SILENT_FRACTION * duration)),
    }


def frozen_video(
    frames: Sequence[tuple[float, int | bytes, bool]],
    start_s: float | None = None,
    end_s: float | None = None,
) -> dict[str, Any]:
    """Stretches longer than MAX_FROZEN_S in which no frame codes a change, from the take's
    packets ``(t_s, size in bytes or the bytes, keyframe)`` alone (nothing is decoded): a
    frozen camera sends nothing or inter frames under FROZEN_BYTES. Keyframes, and inter
    frames within KEYFRAME_SETTLE_S after one, do not count as change (a frozen picture still
    gets keyframes, on request or on schedule). The take runs from ``start_s`` to ``end_s``
    (default: its first and last packet), so missing frames at either end count."""
    times = np.array([t for t, _, _ in frames], dtype=np.float64)
    sizes = np.array([d if isinstance(d, (int, np.integer)) else len(d) for _, d, _ in frames], dtype=np.int64)
    keys = np.array([k for _, _, k in frames], dtype=bool)
    first = start_s if start_s is not None else (float(times.min()) if times.size else 0.0)
    last = end_s if end_s is not None else (float(times.max()) if times.size else first)
    key_times = np.sort(times[keys])
    settling = np.zeros(times.size, dtype=bool)
    if key_times.size:
        previous = np.searchsorted(key_times, times, side="right") - 1
        settling = (previous >= 0) & (times - key_times[np.maximum(previous, 0)] <= KEYFRAME_SETTLE_S)
    moving = np.sort(times[~keys & ~settling & (sizes >= FROZEN_BYTES)])
    marks = np.concatenate(([first], moving[(moving > first) & (moving < last)], [last]))
    steps = np.diff(marks)
    long = np.flatnonzero(steps > MAX_FROZEN_S)
    stretches = [[rounded(marks[i], 3), rounded(marks[i + 1], 3)] for i in long]
    return {
        "stretches": stretches,
        "frozen_s": rounded(steps[long].sum(), 3),
        "longest_s": rounded(steps.max(), 3) if steps.size else 0.0,
        "frozen_bytes": FROZEN_BYTES,
        "max_s": MAX_FROZEN_S,
        "flagged": bool(long.size),
    }
