"""How verify finds flashes and beeps: only onsets it saw begin count as A/V sync evidence."""

from __future__ import annotations

import numpy as np
import pytest

from improv_capture.recorder.verify import beep_times, flash_times

pytestmark = pytest.mark.unit

RATE = 48000


def tone_at(seconds: float, starts: list[float], length_s: float = 0.1) -> np.ndarray:
    samples = np.zeros(int(seconds * RATE), np.float32)
    t = np.arange(int(length_s * RATE)) / RATE
    for start in starts:
        begin = int(start * RATE)
        samples[begin : begin + t.size] = 0.5 * np.sin(2 * np.pi * 1000 * t)[: samples.size - begin]
    return samples


def test_beeps_are_found_to_the_sample() -> None:
    onsets = beep_times(10.0, tone_at(3.0, [0.5, 1.5, 2.5]), RATE)
    assert [round(o - 10.0, 4) for o in onsets] == [0.5, 1.5, 2.5]


def test_a_beep_cut_by_the_start_of_the_audio_is_no_onset() -> None:
    """A recording that starts 24 ms into a tone would otherwise put that tone 24 ms late."""
    samples = tone_at(3.0, [1.5])
    cut = tone_at(0.076, [0.0])  # the last 76 ms of a 100 ms tone
    samples[: cut.size] = cut
    assert [round(o, 4) for o in beep_times(0.0, samples, RATE)] == [1.5]


def test_a_beep_right_after_a_gap_is_no_onset() -> None:
    samples = tone_at(3.0, [1.0, 2.0])
    gap = (int(0.5 * RATE), int(1.0 * RATE))  # silence filled in for missing packets
    assert [round(o, 4) for o in beep_times(0.0, samples, RATE, [gap])] == [2.0]
    assert [round(o, 4) for o in beep_times(0.0, samples, RATE)] == [1.0, 2.0]


def test_flashes_need_a_dark_frame_just_before() -> None:
    times = [i / 30 for i in range(90)]
    lumas = [40.0] * 90
    for lit in (0, 1, 30, 60):  # the file starts inside a flash; flashes at 1 s and 2 s
        lumas[lit] = 235.0
    assert flash_times(times, lumas) == [times[30], times[60]]
    del times[50:60], lumas[50:60]  # frames missing right before the flash at 2 s
    assert flash_times(times, lumas) == [1.0]
