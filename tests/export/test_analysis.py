"""The export's analysis of one take (recorder/export/analysis/): speech turns against the
voice generator's known speech/silence pattern (tools/bot/voice.py), and the quality checks on
signals and packet lists built here: levels and clipping, silence, a frozen camera (real VP8
packets from libvpx), and cross-talk (one performer's voice mixed into another's microphone,
against voices that merely overlap or share a beat)."""

from __future__ import annotations

import json
import statistics
from fractions import Fraction

import av
import numpy as np
import pytest

from improv_capture.recorder.export.analysis import (
    audio_level,
    cross_talk,
    frozen_video,
    silent_stretches,
    speech_turns,
)
from improv_capture.recorder.export.analysis import crosstalk, quality, vad
from improv_capture.tools.bot.voice import AUDIO_RATE, speech_intervals, voice_samples

pytestmark = pytest.mark.unit

RATE = AUDIO_RATE
CLIP_S = 60  # one cycle of the generator: 25-30 bursts


def voice(seed: int, seconds: float = CLIP_S, gain_db: float = 0.0) -> np.ndarray:
    """The generator's clip from its sample 0, as float, scaled by ``gain_db``."""
    return voice_samples(seed, 0, int(seconds * RATE)) / 32768.0 * 10 ** (gain_db / 20)


def truth(seed: int, seconds: float = CLIP_S) -> list[tuple[float, float]]:
    return speech_intervals(seed, 0, seconds)


def noise(seed: int, dbfs: float, seconds: float = CLIP_S) -> np.ndarray:
    """White noise at ``dbfs`` RMS."""
    return np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 10 ** (dbfs / 20)


def delayed(x: np.ndarray, seconds: float) -> np.ndarray:
    shift = int(round(seconds * RATE))
    return np.concatenate([np.zeros(shift), x[: x.size - shift]])


def pcm(x: np.ndarray) -> np.ndarray:
    """What the export hands the analysis: 48 kHz int16."""
    return np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)


def boundary_errors(turns: list[tuple[float, float]], known: list[tuple[float, float]]) -> list[float]:
    """For every known onset and end: the distance to the nearest detected one."""
    onsets, ends = np.array([a for a, _ in turns]), np.array([b for _, b in turns])
    return ([float(np.min(np.abs(onsets - a))) for a, _ in known]
            + [float(np.min(np.abs(ends - b))) for _, b in known])


def beeps(seconds: float, every_s: float, length_s: float, amplitude: float, hz: float = 1000.0) -> np.ndarray:
    """A tone of ``length_s`` starting every ``every_s`` seconds (the bots' beep: 1 kHz, 0.1 s,
    every whole second, sharp edges)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return amplitude * np.sin(2 * np.pi * hz * t) * (np.mod(t, every_s) < length_s)


# -- speech turns -------------------------------------------------------------------------


@pytest.mark.parametrize(("gain_db", "noise_dbfs"), [(0.0, None), (0.0, -45.0), (-30.0, -70.0)],
                         ids=["clean", "noise-45dBFS", "low-level-30dB"])
def test_turns_follow_the_known_pattern(gain_db: float, noise_dbfs: float | None) -> None:
    seed = 1
    signal = voice(seed, gain_db=gain_db)
    if noise_dbfs is not None:
        signal = signal + noise(seed, noise_dbfs)
    known = truth(seed)
    turns = speech_turns(pcm(signal))
    assert len(turns) == len(known)
    errors = boundary_errors(turns, known)
    assert statistics.median(errors) <= 0.050
    # every detected turn lies on a known burst (none in the pauses)
    for start, end in turns:
        assert any(start < b and end > a for a, b in known)


def test_float_and_int16_give_the_same_turns() -> None:
    signal = voice(1, 20) + noise(1, -55, 20)
    assert speech_turns(signal.astype(np.float32)) == speech_turns(pcm(signal))


def test_zeros_never_speak() -> None:
    assert speech_turns(np.zeros(10 * RATE, dtype=np.int16)) == []
    # a gap the export filled with zeros in the middle of speech and noise
    signal = pcm(voice(1, 30) + noise(2, -50, 30))
    gap = (int(7.3 * RATE), int(11.8 * RATE))
    signal[gap[0] : gap[1]] = 0
    turns = speech_turns(signal)
    assert turns  # the speech around the gap is found
    for start, end in turns:
        assert end <= gap[0] / RATE + 1e-9 or start >= gap[1] / RATE - 1e-9
    # a burst the gap cuts ends its turn where the gap starts
    assert any(abs(end - gap[0] / RATE) <= vad.FRAME_S for _, end in turns) == any(
        a < gap[0] / RATE < b for a, b in truth(1, 30))


def test_tones_are_speech_to_webrtcvad_but_the_bots_beep_is_too_short() -> None:
    # the bots' beep: 0.1 s at 1 kHz every second, loud or quiet: shorter than a turn
    for amplitude in (0.5, 0.01):
        assert speech_turns(beeps(10, 1.0, 0.1, amplitude)) == []
    # a longer tone is a turn (webrtcvad's model sees one loud band and calls it speech)
    turns = speech_turns(beeps(10, 2.0, 0.5, 0.3))
    assert len(turns) == 5
    for k, (start, end) in enumerate(turns):
        assert abs(start - 2.0 * k) <= vad.FRAME_S and abs(end - (2.0 * k + 0.5)) <= 2 * vad.FRAME_S


# -- level, clipping, silence -------------------------------------------------------------


def test_level_of_a_sine_and_of_clipping() -> None:
    t = np.arange(5 * RATE) / RATE
    sine = 0.25 * np.sin(2 * np.pi * 440 * t)
    level = audio_level(pcm(sine))
    assert level["mean_dbfs"] == pytest.approx(20 * np.log10(0.25 / np.sqrt(2)), abs=0.05)
    assert level["peak_dbfs"] == pytest.approx(20 * np.log10(0.25), abs=0.05)
    assert level["clipped_fraction"] == 0.0 and level["over"] == "whole" and not level["flagged"]
    # driven into the rails: the fraction at full scale is counted, and flagged
    loud = np.clip(1.5 * np.sin(2 * np.pi * 440 * t), -1, 1)
    clipped = audio_level(loud)
    expected = np.count_nonzero(np.abs(loud) >= quality.CLIP_LEVEL) / loud.size
    assert clipped["clipped_fraction"] == pytest.approx(expected, abs=1e-6)
    assert expected > quality.MAX_CLIPPED_FRACTION and clipped["flagged"]
    # a few clipped samples stay under the bound
    few = sine.copy()
    few[:: RATE] = 1.0
    assert audio_level(few)["clipped_fraction"] == pytest.approx(5 / few.size, abs=1e-6)
    assert not audio_level(few)["flagged"]
    # too quiet
    quiet = audio_level(sine * 10 ** (-40 / 20))
    assert quiet["mean_dbfs"] < quality.MIN_MEAN_DBFS and quiet["flagged"]


def test_level_over_speech_turns() -> None:
    signal = voice(1, 30) + noise(4, -60, 30)
    known = truth(1, 30)
    over_speech = audio_level(signal, turns=known)
    speech = np.concatenate([signal[int(a * RATE) : int(b * RATE)] for a, b in known])
    assert over_speech["over"] == "speech"
    assert over_speech["mean_dbfs"] == pytest.approx(10 * np.log10(np.mean(speech**2)), abs=0.2)
    assert audio_level(signal)["mean_dbfs"] < over_speech["mean_dbfs"] - 1


def test_silent_stretches() -> None:
    signal = pcm(voice(1, 30) + noise(4, -50, 30))
    plain = silent_stretches(signal)
    assert plain["longest_s"] < 2.0 and not plain["flagged"]
    # 12 s of a dead microphone (zeros) in the middle
    dead = signal.copy()
    dead[int(9 * RATE) : int(21 * RATE)] = 0
    found = silent_stretches(dead)
    assert found["flagged"] and 12.0 <= found["longest_s"] <= 12.0 + 2.0
    assert 9.0 - 1.0 <= found["longest_start_s"] <= 9.0
    # a short take that is mostly silent: over half of it
    short = pcm(np.concatenate([voice(1, 1.5) + noise(4, -50, 1.5), np.zeros(int(2.5 * RATE))]))
    assert silent_stretches(short)["flagged"] and silent_stretches(short)["longest_s"] < quality.MAX_SILENT_S


# -- frozen video -------------------------------------------------------------------------

FPS = 30


def vp8_packets(frames: int, still: range, keyframes: tuple[int, ...] = ()) -> list[tuple[float, int, bool]]:
    """A camera at 160x120 (a grey ramp with a textured bar that moves every frame), holding
    one picture over the frames in ``still``; libvpx in realtime mode as browsers use it.
    Returns (t_s, bytes, keyframe) per packet."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 160, 120, "yuv420p"
    codec.time_base, codec.bit_rate, codec.gop_size = Fraction(1, FPS), 300_000, 10 * FPS
    codec.thread_count = 1
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    ramp = np.vstack([np.tile((np.arange(160) * 200 // 160 + 20).astype(np.uint8), (120, 1)),
                      np.full((60, 160), 128, np.uint8)])
    texture = np.random.default_rng(0).integers(100, 255, (120, 24), dtype=np.uint8)
    packets = []
    for i in range(frames):
        x = (7 * (still.start if i in still else i)) % 136
        shown = ramp.copy()
        shown[:120, x : x + 24] = texture
        frame = av.VideoFrame.from_ndarray(shown, format="yuv420p")
        frame.pts = i
        if i in keyframes:
            frame.pict_type = av.video.frame.PictureType.I
        packets += [(p.pts / FPS, p.size, p.is_keyframe) for p in codec.encode(frame)]
    return packets


def test_frozen_camera_is_flagged() -> None:
    still = range(2 * FPS, 6 * FPS)  # 4 s of one picture, a keyframe asked for inside it
    packets = vp8_packets(8 * FPS, still, keyframes=(4 * FPS,))
    result = frozen_video(packets, 0.0, 8.0)
    assert result["flagged"]
    first, end = still.start / FPS, still.stop / FPS
    for a, b in result["stretches"]:
        assert first - 1 / FPS <= a and b <= end + 1 / FPS
    # the stretch is the frozen picture, less at most a frame or two at its start
    assert result["longest_s"] >= (end - first) - 3 / FPS
    json.dumps(result, allow_nan=False)


def test_moving_camera_is_not_flagged_and_missing_frames_are() -> None:
    packets = vp8_packets(5 * FPS, range(0))
    moving = frozen_video(packets, 0.0, 5.0)
    assert moving["stretches"] == [] and not moving["flagged"] and moving["longest_s"] < 0.5
    # no frames for 2.5 s (the camera stopped): a stretch from the last frame to the next
    cut = [p for p in packets if not 1.0 < p[0] < 3.5]
    before, after = max(t for t, _, _ in cut if t <= 1.0), min(t for t, _, _ in cut if t >= 3.5)
    assert frozen_video(cut, 0.0, 5.0)["stretches"] == [[round(before, 3), round(after, 3)]]
    # nothing after 2 s of a 5 s take
    tail = frozen_video([p for p in packets if p[0] < 2.0], 0.0, 5.0)
    assert tail["flagged"] and tail["stretches"][-1][1] == 5.0
    assert frozen_video([], 0.0, 5.0)["stretches"] == [[0.0, 5.0]]


# -- cross-talk -----------------------------------------------------------------------------


def analyse(tracks: dict[str, np.ndarray]) -> dict[str, dict[str, dict]]:
    """Turns from each performer's own track, then cross-talk, as the export does it."""
    audio = {pid: pcm(x) for pid, x in tracks.items()}
    result = cross_talk(audio, {pid: speech_turns(x) for pid, x in audio.items()})
    json.dumps(result, allow_nan=False)
    return result


@pytest.mark.parametrize(("lag_s", "leak_db"), [(0.12, -20.0), (0.3, -20.0), (0.2, -6.0)])
def test_cross_talk_of_a_voice_into_the_other_microphone(lag_s: float, leak_db: float) -> None:
    a, b = voice(1), voice(2)
    # B's microphone: B's own voice and A's, lag_s later and leak_db down, in a quiet room
    # (B's voice detector hears the copy as speech: the windows are picked by level)
    result = analyse({"A": a + noise(5, -60), "B": b + 10 ** (leak_db / 20) * delayed(a, lag_s) + noise(6, -60)})
    found = result["B"]["A"]
    assert found["flagged"], found
    assert found["lag_ms"] == pytest.approx(lag_s * 1000, abs=1.0)
    assert found["level_db"] == pytest.approx(leak_db, abs=1.0)
    assert all(abs(t - found["lag_ms"]) <= 1.0 for t in found["lags_ms"])
    assert not result["A"]["B"]["flagged"], result["A"]["B"]


def test_voices_at_overlapping_times_are_not_cross_talk() -> None:
    result = analyse({"A": voice(1) + noise(5, -60), "B": voice(2) + noise(6, -60)})
    for mic, sources in result.items():
        for source, found in sources.items():
            # (each third read at its own peak near the whole's: a little above 0 by chance)
            assert not found["flagged"] and found["coherence"] < crosstalk.MIN_COHERENCE / 2, (mic, source, found)


def test_a_copy_whose_delay_drifts_is_still_cross_talk() -> None:
    """The path's delay moves over a take (a jitter buffer adapting, a sender re-placed by a
    few ms): 120, then 127, then 134 ms, a third of the take each."""
    a = voice(1)
    thirds = np.array_split(np.arange(a.size), 3)
    copy = np.concatenate([delayed(a, lag)[part] for lag, part in zip((0.120, 0.127, 0.134), thirds)])
    result = analyse({"A": a + noise(5, -60), "B": voice(2) * 0.1 + 10 ** (-10 / 20) * copy + noise(6, -60)})
    assert result["B"]["A"]["flagged"], result["B"]["A"]
    assert not result["A"]["B"]["flagged"], result["A"]["B"]


@pytest.mark.parametrize("voice_db", [0.0, -10.0])
def test_a_shared_beat_is_not_cross_talk(voice_db: float) -> None:
    # both tracks carry a beep every whole second (B's 40 ms later, as two bots' on the
    # session clock), under voices at their level or 10 dB quieter than the beep
    beep = beeps(CLIP_S, 1.0, 0.1, 0.5)
    a, b = voice(1, gain_db=voice_db), voice(2, gain_db=voice_db)
    result = analyse({"A": a + beep + noise(5, -60), "B": b + delayed(beep, 0.04) + noise(6, -60)})
    for mic, sources in result.items():
        for source, found in sources.items():
            assert not found["flagged"], (mic, source, found)
    # the beat is there to be found, at its lag; the control (A silent) holds as much of it
    beat = result["B"]["A"]
    assert beat["lag_ms"] == pytest.approx(40.0, abs=1.0)
    assert beat["control"] is not None and beat["coherence"] - beat["control"] < crosstalk.MIN_COHERENCE
