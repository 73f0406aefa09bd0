#!/usr/bin/env python
"""Benchmark: speech turns (recorder/export/analysis/vad.py) against a known ground truth, and
the cross-talk measure (analysis/crosstalk.py) on pairs of tracks built from it.

The ground truth is the bots' voice generator (tools/bot/voice.py): one 60 s cycle per seed,
bursts of speech-like sound at known sample-exact times. For each condition (clean; white
noise at -60/-45/-35 dBFS; 30 dB quieter; noise and an Opus round trip at 32 kbit/s, the
archive's codec) it reports the boundary error of every onset and end (distance to the
nearest detected one: median, p95, max), bursts missed, turns on no burst, and the speed of
speech_turns in CPU time (x real time on one core). Then the cross-talk table: what each
scenario scores and whether it is flagged, and the speed for two performers.
Prints Markdown. Usage: .venv/bin/python scripts/bench_vad.py [--seeds 10]"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from improv_capture.recorder.export.analysis import cross_talk, speech_turns  # noqa: E402
from improv_capture.recorder.export.analysis.crosstalk import MIN_COHERENCE  # noqa: E402
from improv_capture.tools.bot.voice import AUDIO_RATE, CYCLE_S, speech_intervals, voice_samples  # noqa: E402

RATE = AUDIO_RATE
#: the archive's Opus bit rate for a voice (browsers send about this)
OPUS_BITRATE = 32_000


def clip(seed: int, gain_db: float = 0.0) -> np.ndarray:
    return voice_samples(seed, 0, CYCLE_S * RATE) / 32768.0 * 10 ** (gain_db / 20)


def noise(seed: int, dbfs: float, size: int) -> np.ndarray:
    return np.random.default_rng(1000 + seed).standard_normal(size) * 10 ** (dbfs / 20)


def pcm(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)


def opus_round_trip(samples: np.ndarray) -> np.ndarray:
    """Encoded with libopus in 20 ms frames and decoded again, in order (the decoder's
    lead-in still at the front: see codec_delay)."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = RATE, "mono", "s16"
    encoder.bit_rate, encoder.time_base = OPUS_BITRATE, Fraction(1, RATE)
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = RATE, "mono"
    step = RATE // 50
    packets = []
    for at in range(0, samples.size - step + 1, step):
        chunk = np.ascontiguousarray(samples[None, at : at + step])
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, at
        packets += encoder.encode(frame)
    packets += encoder.encode(None)
    decoded = [frame.to_ndarray().reshape(-1) for packet in packets for frame in decoder.decode(packet)]
    out = np.concatenate(decoded)
    if out.dtype != np.int16:
        out = pcm(out)
    return out


def codec_delay(original: np.ndarray, decoded: np.ndarray) -> int:
    """The decoder's lag in samples (the codec's pre-skip), found by correlation."""
    a, b = original[: 5 * RATE].astype(np.float64), decoded[: 5 * RATE].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(2 * a.size)))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[:2000]
    return int(np.argmax(corr))


CONDITIONS = {
    "clean": dict(),
    "white noise -60 dBFS": dict(noise_dbfs=-60.0),
    "white noise -45 dBFS": dict(noise_dbfs=-45.0),
    "white noise -35 dBFS": dict(noise_dbfs=-35.0),
    "30 dB quieter, noise -70 dBFS": dict(gain_db=-30.0, noise_dbfs=-70.0),
    "noise -50 dBFS, Opus 32 kbit/s": dict(noise_dbfs=-50.0, opus=True),
}


def vad_rows(seeds: list[int]) -> list[str]:
    rows = []
    for name, condition in CONDITIONS.items():
        errors: list[float] = []
        missed = extra = bursts = 0
        cpu = audio_s = 0.0
        for seed in seeds:
            signal = clip(seed, condition.get("gain_db", 0.0))
            if "noise_dbfs" in condition:
                signal = signal + noise(seed, condition["noise_dbfs"], signal.size)
            samples = pcm(signal)
            if condition.get("opus"):
                decoded = opus_round_trip(samples)
                shift = codec_delay(samples, decoded)
                tail = np.zeros(samples.size, dtype=np.int16)
                samples = np.concatenate([decoded[shift:], tail])[: samples.size]
            known = speech_intervals(seed, 0, CYCLE_S)
            began = time.process_time()
            turns = speech_turns(samples)
            cpu += time.process_time() - began
            audio_s += samples.size / RATE
            bursts += len(known)
            if not turns:
                missed += len(known)
                continue
            onsets, ends = np.array([a for a, _ in turns]), np.array([b for _, b in turns])
            errors += [float(np.min(np.abs(onsets - a))) for a, _ in known]
            errors += [float(np.min(np.abs(ends - b))) for _, b in known]
            missed += sum(not any(s < b and e > a for s, e in turns) for a, b in known)
            extra += sum(not any(s < b and e > a for a, b in known) for s, e in turns)
        ms = np.percentile(np.array(errors) * 1000, [50, 95, 100]) if errors else [float("nan")] * 3
        rows.append(f"| {name} | {bursts} | {ms[0]:.0f} | {ms[1]:.0f} | {ms[2]:.0f} | {missed} | {extra} "
                    f"| {audio_s / cpu:.0f}x |")
    return rows


def delayed(x: np.ndarray, seconds: float) -> np.ndarray:
    shift = int(round(seconds * RATE))
    return np.concatenate([np.zeros(shift), x[: x.size - shift]])


def beeps(size: int, amplitude: float) -> np.ndarray:
    """The bots' beep: 1 kHz, 0.1 s, every whole second, sharp edges."""
    t = np.arange(size) / RATE
    return amplitude * np.sin(2 * np.pi * 1000 * t) * (np.mod(t, 1.0) < 0.1)


def cross_talk_rows(seeds: list[int]) -> tuple[list[str], float]:
    """(a row per scenario, x real time of cross_talk for two performers)."""
    pairs = list(zip(seeds[::2], seeds[1::2])) or [(1, 2)]
    scenarios = {
        "B hears A, -20 dB, 120 ms (noise -60)": lambda a, b, n1, n2: (a + n1, b + 0.1 * delayed(a, 0.12) + n2),
        "B hears A, -20 dB, 300 ms (noise -60)": lambda a, b, n1, n2: (a + n1, b + 0.1 * delayed(a, 0.3) + n2),
        "B hears A, -6 dB, 200 ms (noise -60)": lambda a, b, n1, n2: (a + n1, b + 0.5 * delayed(a, 0.2) + n2),
        "B hears A, -30 dB, 200 ms (noise -50)": lambda a, b, n1, n2: (
            a + 3.16 * n1, b + 0.0316 * delayed(a, 0.2) + 3.16 * n2),
        "independent voices (noise -60)": lambda a, b, n1, n2: (a + n1, b + n2),
        "shared beep every second, B's 40 ms later": lambda a, b, n1, n2: (
            a + beeps(a.size, 0.5) + n1, b + delayed(beeps(a.size, 0.5), 0.04) + n2),
        "shared beep, voices 10 dB quieter": lambda a, b, n1, n2: (
            0.316 * a + beeps(a.size, 0.5) + n1, 0.316 * b + delayed(beeps(a.size, 0.5), 0.04) + n2),
    }
    rows, cpu, audio_s = [], 0.0, 0.0
    for name, build in scenarios.items():
        scores, controls, flagged, wrong_way = [], [], 0, 0
        for first, second in pairs:
            a, b = clip(first), clip(second)
            tracks = build(a, b, noise(first, -60, a.size), noise(second, -60, b.size))
            audio = {"A": pcm(tracks[0]), "B": pcm(tracks[1])}
            turns = {pid: speech_turns(x) for pid, x in audio.items()}
            began = time.process_time()
            result = cross_talk(audio, turns)
            cpu += time.process_time() - began
            audio_s += a.size / RATE
            scores.append(result["B"]["A"]["coherence"])
            controls.append(result["B"]["A"]["control"])
            flagged += result["B"]["A"]["flagged"]
            wrong_way += result["A"]["B"]["flagged"]
        known = [c for c in controls if c is not None]
        control = f"{round(float(np.mean(known)), 3) + 0.0:.3f}" if known else "-"
        rows.append(f"| {name} | {np.mean(scores):.3f} ({min(scores):.3f}-{max(scores):.3f}) | {control} "
                    f"| {flagged}/{len(pairs)} | {wrong_way}/{len(pairs)} |")
    return rows, audio_s / cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10, help="60 s clips (one per seed)")
    args = parser.parse_args()
    seeds = list(range(1, args.seeds + 1))
    print(f"### Speech turns (webrtcvad) against the voice generator: {len(seeds)} clips of {CYCLE_S} s\n")
    print("| condition | bursts | median ms | p95 ms | max ms | missed | extra | speed (1 core) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in vad_rows(seeds):
        print(row)
    rows, speed = cross_talk_rows(seeds)
    print(f"\n### Cross-talk: B's microphone against A's voice ({max(len(seeds) // 2, 1)} pairs of "
          f"{CYCLE_S} s; flagged at coherence - control >= {MIN_COHERENCE})\n")
    print("| scenario | coherence mean (range) | control | A->B flagged | B->A flagged |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(row)
    print(f"\ncross_talk for two performers (both directions): {speed:.0f}x real time on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
