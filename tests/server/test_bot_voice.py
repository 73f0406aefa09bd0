"""The bots that the export's checks are measured against produce what they claim, in the
archive: a `--voice` bot's recorded sound has speech exactly where its report's `sent.speech`
says, and a `--leak-gain` bot's recorded sound carries the other performer's voice, a frame
or more later (cross-talk), while the other's recording carries nothing of it."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from improv_capture.clock import parse_utc
from improv_capture.tools.bot.media import AUDIO_PTIME
from tests.helpers import (
    BotFactory,
    ServerProcess,
    manifest,
    publishing,
    start_recording,
    stop_recording,
    wait_for,
)

pytestmark = pytest.mark.process

TAKE_S = 8.0
LEAK_GAIN = 0.3
RATE = 48000
#: the archive places a bot's sound on the session clock within this much of the wall clock
#: (a sender's offset is min(arrival - capture) - RTT/2, and on a busy machine RTT/2 exceeds
#: the one-way delay: -3 to -15 ms measured); every speech edge is shifted alike
PLACEMENT_S = 0.05
#: ... and each edge lies within this of the others' shift (Opus smears an edge by a few ms;
#: a level threshold meets the voice's 10 ms ramps after its start and before its end)
EDGE_TOLERANCE_S = 0.01
#: speech edges are looked for this far around their claimed place (pauses are >= 0.2 s)
SEARCH_S = 0.1
#: edges left out when comparing inside and outside the speech, once placed
EDGE_S = 0.02
#: the level (1 ms windows) above which the voice sounds
ONSET_DBFS = -45.0
#: cross-talk: searched over these lags (B's microphone hears A's voice from B's loudspeaker)
MAX_LAG_S = 0.5
#: ... in windows this long, in B's own pauses
WINDOW_S = 0.1
#: ... where B hears A's voice at least this long in all (the voices are on the wall clock: how
#: much of A's speech falls in B's pauses depends on when the test runs)
MIN_HEARD_S = 0.3
#: the leak's normalised correlation with the voice it carries, in most windows (Opus:
#: about 0.9-0.98)
LEAK_CORRELATION = 0.7
#: the path's delay moves by no more than this within a take (the bot's playout adapts to
#: the fastest packet; the archive places each sender within a few ms)
LAG_SPREAD_S = 0.06
#: silence, decoded (the voice is exact zeros between its bursts): far below any leak (the
#: gain's -10 dB under speech at about -20 dBFS)
SILENT_DBFS = -80.0


def session_sound(path: Path, seconds: float) -> np.ndarray:
    """A performer file's sound, mono float, sample 0 at session time 0: each decoded frame
    at its own timestamp (the file's 1 ms resolution), silence where none is."""
    out = np.zeros(int(seconds * RATE), np.float32)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            assert frame.sample_rate == RATE and frame.pts is not None
            pcm = frame.to_ndarray()
            channels = len(frame.layout.channels)
            mono = pcm.mean(axis=0) if frame.format.is_planar else pcm.reshape(-1, channels).mean(axis=1)
            first = int(round(float(frame.pts * frame.time_base) * RATE))
            if 0 <= first < out.size:
                take = min(mono.size, out.size - first)
                out[first : first + take] = mono[:take]
    return out


def level_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(samples.astype(np.float64) ** 2) + 1e-12))


def shrink(intervals: list[tuple[float, float]], by: float) -> list[tuple[float, float]]:
    return [(a + by, b - by) for a, b in intervals if b - a > 2 * by]


def speech_mask(intervals: list[tuple[float, float]], size: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    for a, b in intervals:
        mask[max(0, int(a * RATE)) : max(0, int(b * RATE))] = True
    return mask


def edge_errors(sound: np.ndarray, speech: list[tuple[float, float]]) -> list[float]:
    """Where each interval's onset and end are found in ``sound`` (level in 1 ms windows
    crossing ONSET_DBFS, within SEARCH_S of the claim) less where they are claimed."""
    level = 10 * np.log10(np.convolve(sound.astype(np.float64) ** 2, np.ones(48) / 48, "same") + 1e-20)
    loud, search = level > ONSET_DBFS, int(SEARCH_S * RATE)
    errors = []
    for a, b in speech:
        first = int(a * RATE) - search
        errors.append((first + int(np.argmax(loud[first : first + 2 * search]))) / RATE - a)
        last = int(b * RATE) + search
        errors.append((last - int(np.argmax(loud[last - 2 * search : last][::-1]))) / RATE - b)
    return errors


def gaps(intervals: list[tuple[float, float]], seconds: float) -> list[tuple[float, float]]:
    """The stretches of [0, seconds) outside ``intervals`` (sorted, disjoint)."""
    edges = [0.0] + [min(max(t, 0.0), seconds) for interval in intervals for t in interval] + [seconds]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]


def best_lag(heard: np.ndarray, source: np.ndarray, first: int, max_lag: int) -> tuple[int, float, float]:
    """The lag (samples, 0..max_lag) at which ``heard`` (from sample ``first`` on) best matches
    ``source`` earlier: (lag, normalised correlation, gain by least squares) (FFT)."""
    start = max(0, first - max_lag)
    earlier = source[start : first + heard.size].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(earlier.size + heard.size)))
    corr = np.fft.irfft(np.fft.rfft(earlier, n) * np.conj(np.fft.rfft(heard, n)), n)
    energy = np.concatenate([[0.0], np.cumsum(earlier ** 2)])
    offsets = np.arange(first - start, first - start - max_lag - 1, -1)  # lag 0, 1, ...
    offsets = offsets[offsets >= 0]
    window = energy[offsets + heard.size] - energy[offsets]
    values = corr[offsets] / np.sqrt(np.maximum(window, 1e-12) * np.dot(heard, heard))
    k = int(np.argmax(values))
    return k, float(values[k]), float(corr[offsets[k]] / max(window[k], 1e-12))


def test_voice_and_leak_bots_record_what_they_report(
    server: ServerProcess, bots: BotFactory
) -> None:
    room = server.create_room("voices")
    # --preencoded: the video is looped, not encoded (the sound is what this test is about)
    speaker = bots(server.invite(room, "Ann")["url"], 40, "--preencoded", "--voice", "11")
    leaker = bots(server.invite(room, "Ben")["url"], 40, "--preencoded", "--voice", "12",
                  "--leak-gain", str(LEAK_GAIN))
    wait_for(lambda: publishing(server, room, 2), 20, "two publishers")
    session = start_recording(server, room)
    time.sleep(TAKE_S)
    stop_recording(server, room)
    reports = {}
    for bot in (speaker, leaker):
        code, output, report = bot.finish()
        assert code == 0, output
        reports[report["sent"].get("leak") is not None] = report
    session_dir = server.session_dir(session["session_id"])
    archive = manifest(session_dir)
    started = parse_utc(archive["started_at"])
    seconds = float(archive["duration_s"])
    sound, claimed = {}, {}
    for leaks, report in reports.items():
        performer = next(p for p in archive["performers"] if p["performer_id"] == report["performer_id"])
        sound[leaks] = session_sound(session_dir / performer["file"]["path"], seconds)
        claimed[leaks] = [(a - started, b - started) for a, b in report["sent"]["speech"]]
    assert reports[True]["sent"]["leak"]["frames"] > 0

    # the voice: its every onset and end where claimed, all shifted alike (the session clock's
    # placement of this sender); loud inside the claimed speech, silent outside
    ann, speech = sound[False], claimed[False]
    whole = [(a, b) for a, b in speech if SEARCH_S < a and b < seconds - SEARCH_S]
    assert len(whole) >= 2, speech
    errors = edge_errors(ann, whole)
    shift = float(np.median(errors))
    assert abs(shift) <= PLACEMENT_S, errors
    assert max(abs(e - shift) for e in errors) <= EDGE_TOLERANCE_S, (shift, errors)
    placed = [(a + shift, b + shift) for a, b in speech]
    inside = speech_mask(shrink(placed, EDGE_S), ann.size)
    outside = ~speech_mask([(a - EDGE_S, b + EDGE_S) for a, b in placed], ann.size)
    assert inside.sum() > RATE and outside.sum() > RATE, speech
    assert level_db(ann[inside]) > ONSET_DBFS and level_db(ann[outside]) < SILENT_DBFS, (
        level_db(ann[inside]), level_db(ann[outside]))

    # cross-talk (Ann's recording, silent outside her speech, has none of Ben's voice): in
    # Ben's own pauses his recording is Ann's voice, a frame or more later, at the gain asked
    # for (less aiortc's 3 dB upmix of mono to stereo, once in Ann's sending and once in
    # Ben's: the archive's Ann went through it once). Measured in short windows: the path's
    # delay moves by a few ms now and then (the bot's playout, the archive's placement)
    ben, step = sound[True], int(WINDOW_S * RATE)
    windows = [w for a, b in shrink(gaps(claimed[True], seconds), PLACEMENT_S)
               for w in range(max(int(a * RATE), int(MAX_LAG_S * RATE)), int(b * RATE) - step, step)]
    found = [(w / RATE, *best_lag(ben[w : w + step].astype(np.float64), ann, w, int(MAX_LAG_S * RATE)))
             for w in windows if level_db(ben[w : w + step]) > SILENT_DBFS]
    assert len(found) * WINDOW_S >= MIN_HEARD_S, (claimed[True], found)
    clear = [(t, lag / RATE, gain) for t, lag, correlation, gain in found if correlation > LEAK_CORRELATION]
    assert len(clear) >= 0.6 * len(found), found  # (windows where Ben's pauses meet Ann's edges read less)
    lags = [lag for _, lag, _ in clear]
    assert AUDIO_PTIME <= min(lags) and max(lags) <= MAX_LAG_S and max(lags) - min(lags) <= LAG_SPREAD_S, clear
    gain = float(np.median([g for _, _, g in clear]))
    assert LEAK_GAIN / 2 < gain < LEAK_GAIN, clear
    # ... and where Ann speaks (a path's delay earlier) in Ben's pauses, he hears her
    delay, heard = float(np.median(lags)), {round(t * RATE) for t, *_ in found}
    ann_speaks = [w for w in windows if inside[int(w - delay * RATE) : int(w - delay * RATE) + step].all()]
    assert len([w for w in ann_speaks if w in heard]) >= 0.9 * len(ann_speaks), (ann_speaks, sorted(heard))
