"""The sample formats the analysis accepts (48 kHz mono, int16 or float in [-1, 1]) and the
per-frame measures every check starts from, computed a block at a time so that a long take
never needs a second full-length copy of itself."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from improv_capture.recorder.hq.align import RATE  # the archive's audio rate (48 kHz)

__all__ = ["RATE", "FULL_SCALE", "DBFS_FLOOR", "BLOCK_SAMPLES", "as_float", "dbfs", "rounded", "Frames",
           "frame_stats", "runs", "decimate"]
#: int16 full scale: sample / FULL_SCALE is the float value in [-1, 1)
FULL_SCALE = 32768.0
#: the level reported for digital silence (the log of zero); JSON has no -inf
DBFS_FLOOR = -120.0
#: samples converted at a time (10 s at 48 kHz): bounds the temporaries of a long take
BLOCK_SAMPLES = 480_000


def as_float(samples: np.ndarray) -> np.ndarray:
    """``samples`` as float32 in [-1, 1] (int16 divided by FULL_SCALE)."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(FULL_SCALE)
    return samples.astype(np.float32, copy=False)


def dbfs(value: float) -> float:
    """An amplitude (RMS or peak, 1.0 = full scale) in dBFS, never below DBFS_FLOOR."""
    if value <= 10 ** (DBFS_FLOOR / 20):
        return DBFS_FLOOR
    return float(20 * np.log10(value))


def rounded(value: float, digits: int) -> float:
    """A plain float rounded for the JSON (-0.0 made 0.0: equal takes give equal bytes)."""
    return round(float(value), digits) + 0.0


@dataclass(frozen=True)
class Frames:
    """Per-frame measures of a take on a grid of ``size`` samples from its first sample (the
    last frame may be shorter: ``lengths`` holds each frame's sample count)."""

    size: int
    lengths: np.ndarray  # int64, samples in each frame
    energy: np.ndarray  # float64, sum of squares (float scale)
    peak: np.ndarray  # float32, largest |x|
    clipped: np.ndarray  # int64, samples with |x| >= the clip level


def frame_stats(samples: np.ndarray, size: int, clip_level: float) -> Frames:
    """Measures of each ``size``-sample frame of ``samples``."""
    samples = np.asarray(samples)
    count = -(-samples.size // size)
    energy = np.zeros(count)
    peak = np.zeros(count, dtype=np.float32)
    clipped = np.zeros(count, dtype=np.int64)
    block = BLOCK_SAMPLES // size * size
    for at in range(0, samples.size, block):
        chunk = as_float(samples[at : at + block])
        first = at // size
        whole = chunk.size // size * size
        if whole:
            shaped = chunk[:whole].reshape(-1, size)
            last = first + shaped.shape[0]
            energy[first:last] = np.einsum("ij,ij->i", shaped, shaped, dtype=np.float64)
            magnitude = np.abs(shaped)
            peak[first:last] = magnitude.max(axis=1)
            clipped[first:last] = np.count_nonzero(magnitude >= clip_level, axis=1)
        if whole < chunk.size:  # the take's short last frame
            tail = np.abs(chunk[whole:])
            energy[-1] = float(np.dot(tail.astype(np.float64), tail))
            peak[-1] = tail.max()
            clipped[-1] = np.count_nonzero(tail >= clip_level)
    lengths = np.full(count, size, dtype=np.int64)
    if count and samples.size % size:
        lengths[-1] = samples.size % size
    return Frames(size, lengths, energy, peak, clipped)


def runs(mask: np.ndarray) -> np.ndarray:
    """The runs of True in ``mask`` as an (n, 2) array of [first, end) indices."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.column_stack((np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def decimate(samples: np.ndarray, factor: int) -> np.ndarray:
    """``samples`` at 1/``factor`` of the rate, float32 in [-1, 1]: the mean of each
    ``factor`` samples (a crude low-pass; what follows looks at bands well below the new
    Nyquist). A short tail is dropped. A block at a time: no full-rate float copy."""
    samples = np.asarray(samples)
    count = samples.size // factor
    out = np.empty(count, dtype=np.float32)
    block = BLOCK_SAMPLES // factor * factor
    for at in range(0, count * factor, block):
        chunk = as_float(samples[at : min(at + block, count * factor)])
        out[at // factor : (at + chunk.size) // factor] = chunk.reshape(-1, factor).mean(axis=1)
    return out
