"""The measures that place a high-quality copy: sound cross-correlated to a fraction of a
sample, frames matched to their twins, and the windows a long take is measured in."""

from __future__ import annotations

import numpy as np
import pytest

from improv_capture.recorder.hq.align import (
    AudioRun,
    VideoRun,
    audio_offset,
    reconcile,
    video_twins,
    windows_of,
)

pytestmark = pytest.mark.unit

RATE = 48000


def delayed(signal: np.ndarray, delay_samples: float) -> np.ndarray:
    """``signal`` delayed by a fraction of samples (a phase shift: band-limited)."""
    n = signal.size
    spectrum = np.fft.rfft(signal) * np.exp(-2j * np.pi * np.fft.rfftfreq(n) * delay_samples)
    return np.fft.irfft(spectrum, n)


def test_sound_is_placed_to_a_fraction_of_a_sample() -> None:
    rng = np.random.default_rng(3)
    scene = rng.standard_normal(12 * RATE) * np.repeat(rng.random(120), RATE // 10)  # "speech"
    live_sound = delayed(scene, 0.37) + 0.05 * rng.standard_normal(scene.size)  # another encoding
    # the hq run: scene seconds 4..8, at hq time 1.0; the live run: the whole scene from t = 10.0
    hq = AudioRun(1.0, scene[4 * RATE : 8 * RATE].astype(np.float32))
    live = AudioRun(10.0, live_sound.astype(np.float32))
    truth = 10.0 + 4.0 + 0.37 / RATE - 1.0
    for coarse in (truth, truth + 1.2, truth - 1.4):  # the page's clock may be off by a second
        found = audio_offset(hq, live, coarse)
        assert found == pytest.approx(truth, abs=0.05e-3)
    assert audio_offset(hq, live, truth + 3.0) is None  # beyond the search: nothing matches
    quiet = AudioRun(1.0, np.zeros(4 * RATE, np.float32))
    assert audio_offset(quiet, live, truth) is None


def test_every_live_frame_finds_its_twin_and_lookalikes_prove_nothing() -> None:
    rng = np.random.default_rng(5)
    frames = rng.uniform(40, 170, (300, 576))
    frames[::30] = 235.0  # flashes: every one like every other
    frames[100:110] = frames[100]  # a still picture
    hq = VideoRun(np.arange(300) / 30, frames)
    kept = np.array([i for i in range(300) if i % 7 != 3])  # the live copy lost some frames
    offset = 7.2123
    live = VideoRun(np.round((kept / 30 + offset) * 1000) / 1000,  # stamped to the ms
                    frames[kept] * 0.98 + 2 + rng.normal(0, 3, (kept.size, 576)))  # smaller, coarser
    twins = video_twins(hq, live, offset + 0.3)  # another flash is always within the search
    assert np.median(twins) == pytest.approx(offset, abs=0.001)
    assert np.all(np.abs(twins - offset) <= 0.001)
    lookalikes = {i for i in kept if i % 30 == 0 or 100 <= i < 110}
    assert len(twins) == kept.size - len(lookalikes)


def test_long_takes_are_measured_in_windows() -> None:
    assert windows_of(0.0, 0.5, 20.0) == []
    assert windows_of(2.0, 12.0, 20.0) == [(2.0, 12.0)]
    assert windows_of(0.0, 50.0, 20.0) == [(0.0, 20.0), (30.0, 50.0)]
    assert windows_of(0.0, 600.0, 20.0) == [(0.0, 20.0), (290.0, 310.0), (580.0, 600.0)]


def test_a_sound_that_repeats_every_second_is_placed_by_the_page_clock() -> None:
    rng = np.random.default_rng(11)
    beep = np.sin(2 * np.pi * 1000 * np.arange(RATE // 10) / RATE)
    second = np.zeros(RATE)
    second[RATE // 2 : RATE // 2 + beep.size] = beep  # the same beep in every second
    scene = np.tile(second, 12) + 0.01 * rng.standard_normal(12 * RATE)
    hq = AudioRun(0.0, scene[3 * RATE : 7 * RATE].astype(np.float32))
    live = AudioRun(0.0, scene.astype(np.float32))
    for coarse in (3.0, 3.3, 2.7):  # within less than half a period of the truth
        assert audio_offset(hq, live, coarse) == pytest.approx(3.0, abs=0.05e-3)


def test_slow_motion_is_placed_as_a_sequence_not_frame_by_frame() -> None:
    rng = np.random.default_rng(7)
    # a scene that changes slowly: each frame a little unlike the one before
    steps = rng.normal(0, 0.6, (200, 576))
    frames = 100 + np.cumsum(steps, axis=0)
    hq = VideoRun(np.arange(200) / 20, frames)  # a 20 fps camera
    offset = 3.4567
    live = VideoRun(np.round((np.arange(200) / 20 + offset) * 1000) / 1000,
                    frames + rng.normal(0, 1.5, frames.shape))  # coarser than a frame's change
    twins = video_twins(hq, live, offset + 0.2)
    assert twins.size >= 5
    assert float(np.median(twins)) == pytest.approx(offset, abs=0.001)


def test_pictures_that_repeat_are_placed_next_to_their_sound() -> None:
    """A clip that loops every second matches its live copy a second away as well as at its
    place; the sound (placed by the page's clock) tells which, as one recorder has one clock."""
    rng = np.random.default_rng(9)
    loop = rng.uniform(40, 170, (30, 576))
    frames = loop[np.arange(300) % 30]
    hq = VideoRun(np.arange(300) / 30, frames)
    offset = 7.2123
    live = VideoRun(np.round((np.arange(300) / 30 + offset) * 1000) / 1000, frames + rng.normal(0, 2, frames.shape))

    def measured(kind: str, centre: float, search: float) -> dict[str, float] | None:
        twins = video_twins(hq, live, centre, search)
        return {"offset_s": float(np.median(twins))} if twins.size else None

    coarse = offset + 0.2  # the page's clock
    # every frame matches a loop away as well as at its place: a search of +-1.5 s may land
    # on either (the frame-sequence fit breaks the tie by noise); say it landed a loop away
    wrong = measured("video", offset + 1.0, 0.2)
    assert wrong is not None and wrong["offset_s"] == pytest.approx(offset + 1.0, abs=0.001)
    sound = {"offset_s": offset - 0.040}  # the recorder's sound, 40 ms early against its pictures
    placed = reconcile({"audio": sound, "video": wrong}, coarse, measured)
    assert placed["audio"] == sound
    assert placed["video"]["offset_s"] == pytest.approx(offset, abs=0.001)
    assert placed["video"]["remeasured"] == {"near": "audio", "first_offset_s": wrong["offset_s"]}
    agreeing = {"audio": sound, "video": {"offset_s": offset}}
    assert reconcile(agreeing, coarse, measured) == agreeing
