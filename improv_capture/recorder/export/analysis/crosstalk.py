"""Cross-talk: one performer's voice in another's microphone (A speaks, B's loudspeaker plays
it, B's microphone records it 0.1-0.5 s later), found by correlating the two tracks.

For each ordered pair (A, B): windows of WINDOW_S where A speaks (A's turns), each with the
stretch of B's track from the same moment to CROSS_TALK_MAX_LAG_S after it. The measure is a
generalised cross-correlation with per-band normalisation (SCOT): every window is scaled to
unit energy, the cross-spectra of all windows are summed, and each frequency band is divided
by the two tracks' pooled power in it. A copy of A in B's microphone is coherent in every band
where it rises above B's noise, at one lag in every window: the peak is high. Two performers
who speak at the same times are coherent nowhere: the peak stays near 0. The lag must agree
across the thirds of the take (a copy has one path).

A sound both tracks share that is not A's voice (the bots' beep every whole second: a tone
with sharp edges, coherent in many bands) is also there when A is silent. So the same is
measured over CONTROL windows, where A's track has sound but A does not speak, and only what
A's speech adds over the control counts: ``coherence - control`` at the lag. A copy of A's
voice is absent from the control; a shared beat is as strong there as under the speech.

"A speaks and B does not" is read from the levels, not from B's turns: B's own voice detector
hears the copy of A as speech, so B's turns would leave no window exactly when there is
cross-talk. Among the windows, B is silent in those where B's microphone is quietest relative
to A's track (within QUIET_SPREAD_DB of the quietest few, comparing the loudest LEVEL_BLOCK_S
of each, so that B's voice in part of a window counts in full): there it holds only its noise
and whatever copy of A it picks up, at any strength of the copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from improv_capture.recorder.export.analysis.pcm import RATE, decimate, rounded

#: tracks are compared at this rate (the bands where a voice has its energy)
CROSS_TALK_RATE = 8000
#: the longest path from A's microphone to B's: network, jitter buffer, playout, room
CROSS_TALK_MAX_LAG_S = 0.5
#: A's sound per window (each also takes CROSS_TALK_MAX_LAG_S more of B), a window starting
#: every WINDOW_HOP_S (overlapping: more chances to find B silent)
WINDOW_S = 0.5
WINDOW_HOP_S = 0.25
#: at most this many windows of each kind per pair (evenly spread over the take when there
#: are more): bounds the work of a long take (the FFTs); 60 windows settle the coherence of
#: unrelated voices to about 0.01
MAX_WINDOWS = 60
#: fewer speech windows than this where B is silent (1.25 s of A alone): too little to tell;
#: reported, not flagged
MIN_WINDOWS = 4
#: flag a pair whose coherence (less the control's) reaches this. On the voice generator
#: (scripts/bench_vad.py): unrelated voices 0.01-0.02; a shared beep 0.05-0.3, less a
#: control of 0.2-0.35; a copy of A at -30 dB in -50 dBFS noise 0.21-0.29, at -20 dB in
#: -60 dBFS noise 0.37-0.45, at -6 dB (B's own voice in most windows) 0.23-0.29
MIN_COHERENCE = 0.15
#: a copy of A weaker than this in B's microphone (relative to A's own track) is not flagged,
#: whatever its coherence: below it nobody hears it, and a microphone that is all but silent
#: (a codec's decoding of digital silence, +-1 LSB) can be "coherent" with anything
MIN_LEVEL_DB = -50.0
#: the thirds of the take agree when their lags are within this of the whole take's: the
#: path's delay drifts (a jitter buffer adapting, each sender re-placed a few ms now and then),
#: so each third is read at its own peak within this of the whole's, and the coherence is
#: their mean (pooling all windows at one lag would cancel a drifting copy's higher bands)
LAG_TOLERANCE_S = 0.02
#: levels are compared on a LEVEL_FRAME_S grid, over blocks of LEVEL_BLOCK_S; B is silent in
#: the windows whose loudest block of B, relative to A's, is within QUIET_SPREAD_DB of the
#: MIN_WINDOWS-th quietest window's (not the quietest: one odd window must not set the bar):
#: a copy of A follows A's level within a few dB, while B's own voice lifts it to about A's
LEVEL_FRAME_S = 0.01
LEVEL_BLOCK_S = 0.05
QUIET_SPREAD_DB = 10.0
#: control windows keep this far from A's turns: a voice detector's turn may start late or end
#: early, and A's speech in a control window would count against the copy of it
CONTROL_MARGIN_S = 0.15
#: fewer control windows than this: no control (the speech windows decide alone). The
#: control is read at one lag, not searched for a peak, so a few windows suffice: unrelated
#: sound reads 0 +- 0.01 there
MIN_CONTROL_WINDOWS = 2
#: a block with less power than this (mean square, full scale 1) is silence (the zeros of a
#: gap, a codec's silence)
SILENT_POWER = 1e-10
#: frequency bands this far below the mean band power (pooled) count as empty: no phase to
#: compare (digital silence, a voice's empty top band)
EMPTY_BAND = 1e-4


def _frames(seconds: float) -> int:
    return int(round(seconds / LEVEL_FRAME_S))


def _window_starts(spans: Sequence[tuple[float, float]], frames: int) -> np.ndarray:
    """First frames (LEVEL_FRAME_S grid) of every whole WINDOW_S window, one every
    WINDOW_HOP_S, inside ``spans`` (seconds) and inside the take with room for the lag."""
    width, lag, hop = _frames(WINDOW_S), _frames(CROSS_TALK_MAX_LAG_S), _frames(WINDOW_HOP_S)
    starts: list[int] = []
    for start, end in spans:
        first = max(int(np.ceil(start / LEVEL_FRAME_S - 1e-6)), 0)
        last = min(int(np.floor(end / LEVEL_FRAME_S + 1e-6)), frames - lag)
        starts.extend(range(first, last - width + 1, hop))
    return np.array(starts, dtype=np.int64)


def _silences(turns: Sequence[tuple[float, float]], frames: int) -> list[tuple[float, float]]:
    """The stretches of the take at least CONTROL_MARGIN_S away from every turn."""
    edges = [x for turn in sorted(turns) for x in turn]
    bounds = [-CONTROL_MARGIN_S, *edges, frames * LEVEL_FRAME_S + CONTROL_MARGIN_S]
    return [(a + CONTROL_MARGIN_S, b - CONTROL_MARGIN_S) for a, b in zip(bounds[::2], bounds[1::2])
            if b - a > 2 * CONTROL_MARGIN_S]


def _block_power(x: np.ndarray) -> np.ndarray:
    """Mean square of the LEVEL_BLOCK_S block starting at each LEVEL_FRAME_S frame."""
    size = int(LEVEL_FRAME_S * CROSS_TALK_RATE)
    shaped = x[: x.size // size * size].reshape(-1, size)
    frame = np.einsum("ij,ij->i", shaped, shaped, dtype=np.float64) / size
    k = _frames(LEVEL_BLOCK_S)
    total = np.concatenate(([0.0], np.cumsum(frame)))
    return (total[k:] - total[:-k]) / k


def _loudest(blocks: np.ndarray, starts: np.ndarray, seconds: float) -> np.ndarray:
    """The loudest block of each window of ``seconds`` from ``starts`` (frames)."""
    step = _frames(LEVEL_BLOCK_S)
    offsets = np.arange(0, _frames(seconds) - step + 1, step)
    return blocks[np.minimum(starts[:, None] + offsets, blocks.size - 1)].max(axis=1)


def _quiet(starts: np.ndarray, blocks_a: np.ndarray, blocks_b: np.ndarray) -> np.ndarray:
    """The windows where A's track has sound and B's is quietest relative to it (at most
    MAX_WINDOWS, evenly spread)."""
    if not starts.size:
        return starts
    loudest_a = _loudest(blocks_a, starts, WINDOW_S)
    loudest_b = _loudest(blocks_b, starts, WINDOW_S + CROSS_TALK_MAX_LAG_S)
    keep = (loudest_a > SILENT_POWER) & (loudest_b > SILENT_POWER)
    if keep.any():
        ratio = loudest_b / np.maximum(loudest_a, SILENT_POWER)
        reference = np.sort(ratio[keep])[min(MIN_WINDOWS, int(keep.sum())) - 1]
        keep &= ratio <= reference * 10 ** (QUIET_SPREAD_DB / 10)
    chosen = np.flatnonzero(keep)
    if chosen.size > MAX_WINDOWS:
        chosen = chosen[np.linspace(0, chosen.size - 1, MAX_WINDOWS).round().astype(np.int64)]
    return starts[chosen]


def _fft_size(n: int) -> int:
    """The smallest 2^i 3^j 5^k >= n (a size numpy's FFT does fast)."""
    sizes = (2**i * 3**j * 5**k for i in range(n.bit_length() + 1) for j in range(4) for k in range(4))
    return min(m for m in sizes if m >= n)


class _Spectra:
    """The unit-energy windows of A and B (from ``starts``) as spectra, ready to pool."""

    def __init__(self, a: np.ndarray, b: np.ndarray, starts: np.ndarray) -> None:
        frame = int(LEVEL_FRAME_S * CROSS_TALK_RATE)
        self.width, self.lags = int(WINDOW_S * CROSS_TALK_RATE), int(CROSS_TALK_MAX_LAG_S * CROSS_TALK_RATE)
        self.a = a[starts[:, None] * frame + np.arange(self.width)].astype(np.float64)
        self.b = b[starts[:, None] * frame + np.arange(self.width + self.lags)].astype(np.float64)
        self.n = _fft_size(2 * self.width + self.lags)
        spectra_a = np.fft.rfft(self.a / np.sqrt(np.sum(self.a**2, axis=1, keepdims=True)), self.n)
        spectra_b = np.fft.rfft(self.b / np.sqrt(np.sum(self.b**2, axis=1, keepdims=True)), self.n)
        self.cross = spectra_b * np.conj(spectra_a)  # its inverse peaks where a[i] meets b[i + lag]
        self.power_a, self.power_b = np.abs(spectra_a) ** 2, np.abs(spectra_b) ** 2

    def coherence(self, part: slice | np.ndarray = slice(None)) -> np.ndarray:
        """The SCOT-weighted correlation of the windows ``part`` at lags 0..lags (samples):
        1.0 where every band of B is a copy of A's at that delay."""
        cross = self.cross[part].sum(axis=0)
        power_a, power_b = self.power_a[part].sum(axis=0), self.power_b[part].sum(axis=0)
        floor_a, floor_b = EMPTY_BAND * float(power_a.mean()), EMPTY_BAND * float(power_b.mean())
        weight = np.sqrt((power_a + floor_a) * (power_b + floor_b))
        return np.fft.irfft(cross / weight, self.n)[: self.lags + 1]


def _pair(a: np.ndarray, b: np.ndarray, blocks_a: np.ndarray, blocks_b: np.ndarray,
          turns_a: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """The cross-talk of A's voice into B's microphone (tracks at CROSS_TALK_RATE and their
    block powers)."""
    frames = min(blocks_a.size, blocks_b.size)
    speech = _quiet(_window_starts(turns_a, frames), blocks_a, blocks_b)
    result: dict[str, Any] = {
        "windows": int(speech.size), "coherence": 0.0, "control": None, "control_windows": 0,
        "correlation": 0.0, "lag_ms": None, "level_db": None, "lags_ms": [],
        "min_coherence": MIN_COHERENCE, "min_level_db": MIN_LEVEL_DB,
        "max_lag_ms": CROSS_TALK_MAX_LAG_S * 1000, "flagged": False,
    }
    if speech.size < MIN_WINDOWS:
        return result
    spectra = _Spectra(a, b, speech)
    values = spectra.coherence()
    lag = int(np.argmax(values))
    reach = int(LAG_TOLERANCE_S * CROSS_TALK_RATE)
    thirds, peaks = [], []
    for part in np.array_split(np.arange(speech.size), 3):
        curve = spectra.coherence(part)
        low = max(lag - reach, 0)
        near = low + int(np.argmax(curve[low : lag + reach + 1]))
        thirds.append(int(np.argmax(curve)))
        peaks.append(float(curve[near]))
    agree = sum(abs(t - lag) <= reach for t in thirds)
    control_starts = _quiet(_window_starts(_silences(turns_a, frames), frames), blocks_a, blocks_b)
    control = None
    if control_starts.size >= MIN_CONTROL_WINDOWS:  # read at the speech's lag, not searched
        control = float(_Spectra(a, b, control_starts).coherence()[lag])
    # plain correlation, and the copy's level relative to A's track, at that lag
    shifted = spectra.b[:, lag : lag + spectra.width]
    dot = float(np.sum(spectra.a * shifted))
    energy_a, energy_b = float(np.sum(spectra.a**2)), float(np.sum(shifted**2))
    gain = abs(dot) / energy_a
    coherence = max(float(values[lag]), float(np.mean(peaks)))
    result.update(
        coherence=rounded(coherence, 4),
        control=None if control is None else rounded(control, 4),
        control_windows=int(control_starts.size),
        correlation=rounded(dot / np.sqrt(energy_a * energy_b), 4) if energy_b > 0 else 0.0,
        lag_ms=rounded(lag * 1000 / CROSS_TALK_RATE, 3),
        level_db=rounded(20 * np.log10(gain), 2) if gain > 0 else None,
        lags_ms=[rounded(t * 1000 / CROSS_TALK_RATE, 3) for t in thirds],
        flagged=bool(coherence - max(control or 0.0, 0.0) >= MIN_COHERENCE and agree >= 2
                     and gain > 0 and 20 * np.log10(gain) >= MIN_LEVEL_DB),
    )
    return result


def cross_talk(
    audio: Mapping[str, np.ndarray], turns: Mapping[str, Sequence[tuple[float, float]]], rate: int = RATE
) -> dict[str, dict[str, dict[str, Any]]]:
    """For each performer B (outer key) and each other performer A (inner key): how much of
    A's voice B's microphone holds. ``audio``: each performer's samples of the same take
    (same start, same rate, int16 or float); ``turns``: their speech turns (seconds from that
    start; A's say where A speaks)."""
    if rate % CROSS_TALK_RATE:
        raise ValueError(f"cross_talk needs samples at a multiple of {CROSS_TALK_RATE} Hz")
    low = {pid: decimate(samples, rate // CROSS_TALK_RATE) for pid, samples in audio.items()}
    blocks = {pid: _block_power(x) for pid, x in low.items()}
    return {
        b: {a: _pair(low[a], low[b], blocks[a], blocks[b], turns.get(a, ())) for a in sorted(low) if a != b}
        for b in sorted(low)
    }
