"""Speech turns of one performer's take: webrtcvad's per-frame decisions on 10 ms frames,
cleaned into turns. webrtcvad (the package webrtcvad-wheels) is the light choice the issue
names: no model files, C code, about 3000x real time on one core at 8 kHz.

The cleaning, in order (every step a named constant below):
1. decimate to VAD_RATE (webrtcvad's features are band energies below 4 kHz);
2. webrtcvad at aggressiveness VAD_MODE per FRAME_S frame;
3. trim HANGOVER_FRAMES from the end of every run: webrtcvad keeps saying "speech" for that
   many frames after speech ends (its own hangover), which would make every turn end late;
4. frames that are all zeros (a gap the export filled, before a join) are never speech;
5. pauses shorter than MIN_PAUSE_S inside speech are bridged (one turn, not two);
6. turns shorter than MIN_TURN_S are dropped (clicks, bumps, a door).
"""

from __future__ import annotations

import numpy as np
import webrtcvad

from improv_capture.recorder.export.analysis.pcm import BLOCK_SAMPLES, FULL_SCALE, RATE, decimate, runs

#: webrtcvad's frame: 10 ms is its finest (a boundary is placed to within a frame)
FRAME_S = 0.010
#: the rate webrtcvad runs at: it works on 0-4 kHz band energies, so 8 kHz loses nothing it
#: uses, and it is 5x faster than handing it 48 kHz
VAD_RATE = 8000
#: webrtcvad's aggressiveness (0-3), chosen on the voice generator (scripts/bench_vad.py): 3
#: calls -70 dBFS noise speech beside speech 30 dB down (70-96 turns for 52 bursts); 0 and 1
#: find more false onsets in -35/-45 dBFS noise and hold on 50 ms longer (hangover 14 frames)
VAD_MODE = 2
#: webrtcvad's own hangover at VAD_MODE on 10 ms frames (kOverHangMax2 in its vad_core.c:
#: 9 frames once speech has lasted 6 frames); measured on the voice generator: ends 95 ms late
HANGOVER_FRAMES = 9
#: a silence shorter than this inside speech does not end the turn (the voice generator's
#: pauses are 0.2 s and longer; webrtcvad's dips inside a syllable are 10-30 ms)
MIN_PAUSE_S = 0.15
#: speech shorter than this is not a turn: clicks and bumps, and the bots' 0.1 s beep
#: (webrtcvad calls any tone speech, at any level: its model sees one loud band; a 0.1 s
#: tone comes out 0.11-0.12 s long), while the shortest words last about 0.15 s
MIN_TURN_S = 0.15


def _zero_frames(samples: np.ndarray, frame: int) -> np.ndarray:
    """Which whole ``frame``-sample frames of ``samples`` are all zeros."""
    count = samples.size // frame
    zero = np.empty(count, dtype=bool)
    block = BLOCK_SAMPLES // frame * frame
    for at in range(0, count * frame, block):
        chunk = samples[at : min(at + block, count * frame)]
        zero[at // frame : (at + chunk.size) // frame] = ~chunk.reshape(-1, frame).any(axis=1)
    return zero


def speech_turns(samples: np.ndarray, rate: int = RATE) -> list[tuple[float, float]]:
    """Speech turns ``[(start_s, end_s), ...]`` in seconds from the first sample of
    ``samples`` (mono int16, or float in [-1, 1]), on the FRAME_S grid."""
    samples = np.asarray(samples)
    if rate % VAD_RATE or samples.ndim != 1:
        raise ValueError(f"speech_turns needs mono samples at a multiple of {VAD_RATE} Hz")
    zero = _zero_frames(samples, int(round(FRAME_S * rate)))
    low = decimate(samples, rate // VAD_RATE)[: zero.size * int(round(FRAME_S * VAD_RATE))]
    pcm = np.clip(np.rint(low * FULL_SCALE), -FULL_SCALE, FULL_SCALE - 1).astype(np.int16).tobytes()
    vad = webrtcvad.Vad(VAD_MODE)
    step = int(round(FRAME_S * VAD_RATE)) * 2
    view = memoryview(pcm)
    speech = np.fromiter(
        (vad.is_speech(view[i : i + step], VAD_RATE) for i in range(0, len(pcm), step)),
        dtype=bool, count=zero.size,
    )
    for first, end in runs(speech).tolist():
        if end < speech.size:  # a run the take's end cut short has no hangover
            speech[max(first + 1, end - HANGOVER_FRAMES) : end] = False
    speech &= ~zero
    found = runs(speech)
    if found.size:
        short = np.flatnonzero(found[1:, 0] - found[:-1, 1] < round(MIN_PAUSE_S / FRAME_S))
        for end, first in zip(found[short, 1].tolist(), found[short + 1, 0].tolist()):
            speech[end:first] = True
        speech &= ~zero
        found = runs(speech)
        found = found[found[:, 1] - found[:, 0] >= round(MIN_TURN_S / FRAME_S)]
    return [(round(a * FRAME_S, 2), round(b * FRAME_S, 2)) for a, b in found.tolist()]
