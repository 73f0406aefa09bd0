"""The bot's speech-like sound (tools/bot/voice.py) and its loudspeaker-to-microphone path
(media.py, --leak-gain), checked against their own claims: silence exactly outside the
pattern, the same samples in every process, and the room's audio heard at a fixed delay."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from av import AudioFrame

from improv_capture.tools.bot.media import AUDIO_PTIME, LEAK_DELAY_FRAMES, Loudspeaker, MicAudioTrack
from improv_capture.tools.bot.voice import (
    AUDIO_RATE,
    BURST_S,
    CYCLE_S,
    PAUSE_S,
    pattern,
    speech_intervals,
    voice_samples,
)

pytestmark = pytest.mark.unit

SEED = 5
#: a frame's first slot, some wall-clock time in 2023 (slots since the epoch)
SLOT = int(1_700_000_003 / AUDIO_PTIME)
FRAME = int(AUDIO_RATE * AUDIO_PTIME)


def test_the_sound_is_silent_exactly_outside_its_pattern_and_loops_on_the_wall_clock() -> None:
    cycle = voice_samples(SEED, 0, CYCLE_S * AUDIO_RATE)
    spans = pattern(SEED)
    speech = np.zeros(cycle.size, bool)
    for a, b in spans:
        assert abs(a * AUDIO_RATE - round(a * AUDIO_RATE)) < 1e-6  # on the sample grid
        speech[round(a * AUDIO_RATE) : round(b * AUDIO_RATE)] = True
    assert not cycle[~speech].any()
    for a, b in spans:  # every burst sounds from its first 10 ms to its last
        burst = cycle[round(a * AUDIO_RATE) : round(b * AUDIO_RATE)].astype(float)
        assert np.abs(burst[:480]).max() > 300 and np.abs(burst[-480:]).max() > 300
    assert all(BURST_S[0] <= b - a <= BURST_S[1] for a, b in spans)
    assert all(PAUSE_S[0] <= c - b <= PAUSE_S[1] for (_, b), (c, _) in zip(spans, spans[1:]))
    # sample n of the epoch: the same in the next cycle, and across a cycle's end
    n = 1_700_000_000 * AUDIO_RATE
    assert np.array_equal(voice_samples(SEED, n, 5000), voice_samples(SEED, n + cycle.size, 5000))
    across = voice_samples(SEED, cycle.size - 100, 200)
    assert np.array_equal(across, np.concatenate([cycle[-100:], cycle[:100]]))
    assert not np.array_equal(cycle, voice_samples(SEED + 1, 0, cycle.size))


def test_speech_intervals_are_the_pattern_on_the_wall_clock_clipped_to_the_range() -> None:
    spans = pattern(SEED)
    start = 1_700_000_040.0  # a whole cycle (it divides the epoch second 1_700_000_040)
    assert start % CYCLE_S == 0
    found = speech_intervals(SEED, start + spans[2][0] + 0.1, start + CYCLE_S + spans[1][1])
    assert found[0] == (start + spans[2][0] + 0.1, start + spans[2][1])
    assert found[1:len(spans) - 2] == [(start + a, start + b) for a, b in spans[3:]]
    assert found[len(spans) - 2 :] == [(start + CYCLE_S + a, start + CYCLE_S + b) for a, b in spans[:2]]


def received(samples: np.ndarray, pts: int) -> AudioFrame:
    """A frame as aiortc decodes it: 48 kHz stereo s16, interleaved."""
    frame = AudioFrame.from_ndarray(np.repeat(samples, 2).reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate, frame.pts = AUDIO_RATE, pts
    return frame


def test_a_leaking_microphone_sends_its_voice_plus_the_room_a_fixed_delay_later() -> None:
    gain, late = 0.25, 0.004  # each received frame arrives 4 ms after its capture slot
    speaker = Loudspeaker(gain)
    mic = MicAudioTrack(SEED, speaker)
    other = SEED + 1
    sent = []
    for k in range(150):
        speaker.play("p_other", received(voice_samples(other, (SLOT + k) * FRAME, FRAME), k * FRAME),
                     (SLOT + k) * AUDIO_PTIME + late)
        sent.append(mic.frame(SLOT + k, k * FRAME).to_ndarray()[0])
    leaked = np.concatenate(sent).astype(float) - voice_samples(SEED, SLOT * FRAME, 150 * FRAME)
    delay = round((LEAK_DELAY_FRAMES * AUDIO_PTIME + late) * AUDIO_RATE)
    assert delay >= FRAME  # captured a frame or more after it arrived
    expected = gain * voice_samples(other, SLOT * FRAME, 150 * FRAME - delay).astype(float)
    assert np.abs(leaked[:delay]).max() == 0  # nothing before the first frame played
    assert np.abs(leaked[delay:] - expected).max() <= 1  # int16 rounding
    assert speaker.frames_mixed == 150 - delay // FRAME
    # what was sent: one run of frames, its speech the pattern clipped to it
    assert mic.sent_speech() == [[round(a, 6), round(b, 6)] for a, b in speech_intervals(
        SEED, SLOT * AUDIO_PTIME, (SLOT + 150) * AUDIO_PTIME)]


def test_the_default_microphone_beeps_as_before() -> None:
    from improv_capture.tools.bot.media import BeepAudioTrack, beep_samples

    assert np.array_equal(BeepAudioTrack().samples(SLOT), beep_samples(SLOT * FRAME, FRAME))
    assert np.array_equal(MicAudioTrack(None, None).samples(SLOT), beep_samples(SLOT * FRAME, FRAME))
    assert MicAudioTrack(None, None).sent_speech() is None


def runs_speech(runs: list[tuple[int, int]]) -> list[list[float]]:
    """The report's speech as it was made from every run kept: the pattern clipped to each."""
    return [[round(a, 6), round(b, 6)] for first, last in runs
            for a, b in speech_intervals(SEED, first * AUDIO_PTIME, (last + 1) * AUDIO_PTIME)]


def test_breaks_in_sending_keep_the_report_and_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from improv_capture.tools.bot import media

    rng = np.random.default_rng(7)
    runs, slot = [], SLOT
    for _ in range(400):  # 400 breaks of 1-30 slots (stalls, a pause) in 3 minutes
        length = int(rng.integers(1, 30))
        runs.append((slot, slot + length - 1))
        slot += length + int(rng.integers(2, 30))
    mic = MicAudioTrack(SEED, None)
    for first, last in runs:
        for index in range(first, last + 1):
            mic._sent(SEED, index)  # what frame() does before encoding
    assert mic.sent_speech() == runs_speech(runs)
    # a break in silence keeps no run: only those that cut speech are kept
    cutting = sum(bool(speech_intervals(SEED, (a[1] + 1) * AUDIO_PTIME, b[0] * AUDIO_PTIME))
                  for a, b in itertools.pairwise(runs))
    assert len(mic._runs) == cutting < len(runs) - 1 and mic.runs_dropped == 0
    # past the bound the oldest go, and the report says how many
    monkeypatch.setattr(media, "MAX_SPEECH_RUNS", 10)
    bounded = MicAudioTrack(SEED, None)
    for first, last in runs:
        for index in range(first, last + 1):
            bounded._sent(SEED, index)
    assert len(bounded._runs) == 10 and bounded.runs_dropped == cutting - 10
    full, kept = mic.sent_speech(), bounded.sent_speech()
    assert full is not None and kept is not None and full[-len(kept):] == kept
