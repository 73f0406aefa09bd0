"""A speech-like sound whose speech/silence pattern is known: the ground truth for voice
activity detection and cross-talk tests.

Bursts of voiced sound (0.3-2.5 s) separated by pauses (0.2-1.5 s). A burst is a glottal
pulse train (f0 100-250 Hz, moving slowly along the burst) shaped by three formant
resonances that change per syllable (0.12-0.35 s each, its own amplitude). Everything
follows from ``seed``. The sound is one cycle of CYCLE_S seconds, computed once per seed and
looped, anchored to the wall clock like the beeps (media.py): sample ``n`` counted from the
Unix epoch at AUDIO_RATE has the same value in every process, so a recording made of it is
checked against the wall-clock intervals alone.

API (all a test or the bot needs):

- ``pattern(seed)``: the speech intervals of one cycle, ``[(start_s, end_s), ...]`` in
  ``[0, CYCLE_S)``, on the sample grid (``round(start_s * AUDIO_RATE)`` is an interval's
  first sample, ``round(end_s * AUDIO_RATE)`` the one after its last); outside them the
  samples are exactly zero. The pause across the cycle's end may be longer than PAUSE_S
  allows (up to about 4 s).
- ``speech_intervals(seed, start_s, end_s)``: the speech intervals overlapping
  ``[start_s, end_s)`` (seconds since the epoch, or since any multiple of CYCLE_S), clipped
  to it.
- ``voice_samples(seed, first_sample, count)``: int16 samples ``first_sample`` ..
  ``first_sample + count - 1`` (sample 0 at the epoch), mono, AUDIO_RATE. A synthetic clip
  not tied to the wall clock: ``voice_samples(seed, 0, n)`` with
  ``speech_intervals(seed, 0, n / AUDIO_RATE)``.

Level: peaks at PEAK (0.7 of full scale), speech about -16 dBFS RMS; exact zeros between.

The first call for a seed costs about half a second of CPU (the cycle, cached per process);
later calls are a slice of it (about a microsecond per 20 ms frame).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: the bot's audio rate (media.py takes it from here: this module needs no aiortc)
AUDIO_RATE = 48000
#: one cycle of the pattern, looped (a whole number of seconds: cycles align with the epoch)
CYCLE_S = 60
BURST_S = (0.3, 2.5)
PAUSE_S = (0.2, 1.5)
SYLLABLE_S = (0.12, 0.35)
#: the speaker's mean pitch is drawn from this range; the contour moves +-PITCH_SWING around it
F0_HZ = (110.0, 200.0)
PITCH_SWING = 0.15
F0_LIMITS_HZ = (100.0, 250.0)
#: vowel formants (F1, F2, F3) in Hz; each syllable takes one, detuned by +-FORMANT_JITTER
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
          (570, 840, 2410), (660, 1720, 2410), (440, 1020, 2240))
FORMANT_JITTER = 0.08
BANDWIDTHS_HZ = (80.0, 100.0, 150.0)
#: a syllable's envelope dips to this fraction between syllables (never to zero: a burst is
#: one stretch of speech)
SYLLABLE_FLOOR = 0.3
#: burst onsets and ends ramp over this long (inside the interval)
EDGE_S = 0.010
#: per-syllable RMS before the envelope; the cycle is then scaled to PEAK
SYLLABLE_RMS = 0.1
PEAK = 0.7
#: breath noise mixed into the source, relative to its RMS
ASPIRATION = 0.05
#: the tail of a syllable's resonances carried into the next (FFT filtering)
RING_SAMPLES = 2048

CYCLE_SAMPLES = CYCLE_S * AUDIO_RATE


def _grid(rng: np.random.Generator, bounds: tuple[float, float]) -> int:
    """A duration drawn from ``bounds`` (seconds), in samples."""
    return int(round(rng.uniform(*bounds) * AUDIO_RATE))


def _intervals(rng: np.random.Generator) -> list[tuple[int, int]]:
    """Bursts in samples: a pause first, then burst/pause until the cycle is full; the cycle
    ends in a pause so that it loops without cutting a burst."""
    intervals, at = [], _grid(rng, PAUSE_S)
    while True:
        burst = _grid(rng, BURST_S)
        if at + burst + int(PAUSE_S[0] * AUDIO_RATE) > CYCLE_SAMPLES:
            return intervals
        intervals.append((at, at + burst))
        at += burst + _grid(rng, PAUSE_S)


def _glottal(phase: np.ndarray) -> np.ndarray:
    """The derivative of a Rosenberg glottal pulse at ``phase`` (cycles, fractional part):
    opening over 40 % of the period, closing over 20 %, closed the rest."""
    p = np.mod(phase, 1.0)
    flow = np.where(p < 0.4, 0.5 * (1 - np.cos(np.pi * p / 0.4)),
                    np.where(p < 0.6, np.cos(np.pi * (p - 0.4) / 0.4), 0.0))
    return np.diff(flow, prepend=flow[:1])


def _resonances(formants: np.ndarray, size: int) -> np.ndarray:
    """The frequency response (rfft grid of ``size``) of two-pole resonators in cascade at
    ``formants`` with BANDWIDTHS_HZ, each scaled to unit gain at its centre."""
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(size, 1 / AUDIO_RATE) / AUDIO_RATE)  # z^-1
    response = np.ones_like(z)
    for hz, bw in zip(formants, BANDWIDTHS_HZ):
        r, theta = np.exp(-np.pi * bw / AUDIO_RATE), 2 * np.pi * hz / AUDIO_RATE
        poles = np.array([r * r, -2 * r * np.cos(theta), 1.0])  # 1 - 2r cos(theta) z^-1 + r^2 z^-2
        response *= abs(np.polyval(poles, np.exp(-1j * theta))) / np.polyval(poles, z)
    return response


def _burst(rng: np.random.Generator, n: int, f0_mean: float) -> np.ndarray:
    """One burst of ``n`` samples: source, syllables, envelope."""
    t = np.arange(n) / AUDIO_RATE
    period, offset = rng.uniform(0.8, 2.0), rng.uniform(0, 2 * np.pi)
    f0 = f0_mean * (1 + PITCH_SWING * np.sin(2 * np.pi * t / period + offset)) * (1 - 0.05 * t)
    f0 = np.clip(f0, *F0_LIMITS_HZ)
    source = _glottal(np.cumsum(f0) / AUDIO_RATE)
    source /= max(float(np.sqrt(np.mean(source ** 2))), 1e-9)
    source += ASPIRATION * rng.standard_normal(n)
    # syllable boundaries: draws until the burst is covered; a short last one joins the one before
    bounds = [0]
    while bounds[-1] < n:
        bounds.append(bounds[-1] + _grid(rng, SYLLABLE_S))
    bounds[-1] = n
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < SYLLABLE_S[0] * AUDIO_RATE:
        del bounds[-2]
    out = np.zeros(n + RING_SAMPLES)
    envelope = np.empty(n)
    for a, b in zip(bounds[:-1], bounds[1:]):
        vowel = np.array(VOWELS[rng.integers(len(VOWELS))], dtype=float)
        formants = vowel * (1 + rng.uniform(-FORMANT_JITTER, FORMANT_JITTER, 3))
        size = 1 << int(np.ceil(np.log2(b - a + RING_SAMPLES)))
        shaped = np.fft.irfft(np.fft.rfft(source[a:b], size) * _resonances(formants, size), size)
        shaped = shaped[: b - a + RING_SAMPLES]
        shaped *= SYLLABLE_RMS / max(float(np.sqrt(np.mean(shaped[: b - a] ** 2))), 1e-9)
        out[a : b + RING_SAMPLES] += shaped
        x = (np.arange(b - a) + 0.5) / (b - a)
        envelope[a:b] = rng.uniform(0.5, 1.0) * (SYLLABLE_FLOOR + (1 - SYLLABLE_FLOOR) * np.sin(np.pi * x))
    edge = min(int(EDGE_S * AUDIO_RATE), n // 2)
    ramp = 0.5 * (1 - np.cos(np.pi * (np.arange(edge) + 0.5) / edge))
    envelope[:edge] *= ramp
    envelope[n - edge :] *= ramp[::-1]
    return out[:n] * envelope


@lru_cache(maxsize=8)
def _cycle(seed: int) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    """(speech intervals in samples, the cycle's int16 samples) of ``seed``."""
    rng = np.random.default_rng(seed)
    intervals = _intervals(rng)
    f0_mean = rng.uniform(*F0_HZ)
    sound = np.zeros(CYCLE_SAMPLES)
    for a, b in intervals:
        sound[a:b] = _burst(rng, b - a, f0_mean)
    sound *= PEAK / max(float(np.max(np.abs(sound))), 1e-9)
    samples = np.round(sound * 32767).astype(np.int16)
    samples.flags.writeable = False
    return tuple(intervals), samples


def pattern(seed: int) -> list[tuple[float, float]]:
    """The speech intervals of one cycle, seconds in ``[0, CYCLE_S)``."""
    return [(a / AUDIO_RATE, b / AUDIO_RATE) for a, b in _cycle(seed)[0]]


def speech_intervals(seed: int, start_s: float, end_s: float) -> list[tuple[float, float]]:
    """The speech intervals overlapping ``[start_s, end_s)``, clipped to it, in time order."""
    cycle = pattern(seed)
    found = []
    for k in range(int(np.floor(start_s / CYCLE_S)), int(np.floor(end_s / CYCLE_S)) + 1):
        base = k * CYCLE_S
        for a, b in cycle:
            lo, hi = max(base + a, start_s), min(base + b, end_s)
            if lo < hi:
                found.append((lo, hi))
    return found


def voice_samples(seed: int, first_sample: int, count: int) -> np.ndarray:
    """``count`` int16 samples from ``first_sample`` (sample 0 at the epoch)."""
    samples = _cycle(seed)[1]
    start = first_sample % CYCLE_SAMPLES
    if start + count <= CYCLE_SAMPLES:
        return samples[start : start + count].copy()
    return np.take(samples, np.arange(start, start + count) % CYCLE_SAMPLES)
