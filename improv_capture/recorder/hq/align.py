"""Where a high-quality copy sits on the session timeline, measured against the live copy.

The live copy (performers/<pid>.webm) is on the session timeline already; the high-quality
copy (hq) comes from the page's own recorder, with its own clock and its own A/V offset. Each
stream is placed on its own: an offset such that ``session time = hq time + offset``.

- coarse: where the page's clock says the hq copy starts (place.py computes it);
- audio: normalised cross-correlation (FFT) of the decoded mono sound of both copies, within
  SEARCH_S of the coarse estimate, to a fraction of a sample;
- video: every live frame is one of the camera's frames, as is every hq frame: a per-frame
  signature (the mean luma of 32x18 blocks) finds each live frame's hq twin, and the offset
  is the median of ``t_live - t_hq`` over the twins found without doubt.

Times are the decoded presentation times of both files, so the Opus pre-skip is handled the
same on both sides (the hq copy keeps its own codec private data when it is remuxed). Only a
few windows are decoded (start, middle and end of the overlap), so a 10-minute take is
measured in seconds, and the spread between the first and the last window is the drift.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

#: How far from the coarse estimate the fine one may land.
SEARCH_S = 1.5
#: Window lengths (s): sound correlates well over long stretches; frames are costlier to decode.
WINDOW_S = {"audio": 20.0, "video": 10.0}
MAX_WINDOWS = 3
#: Shortest window a short take is cut into.
MIN_WINDOW_S = 4.0
#: Audio windows within this much of each other agree: the copy is placed where most agree.
AUDIO_AGREE_S = 0.002
MIN_OVERLAP_S = 1.0
RATE = 48000
#: Opus keeps state across packets: decoding starts this much before a window.
AUDIO_PREROLL_S = 0.2
#: A step between two audio frames' stamps beyond this is a gap (filled with silence);
#: smaller ones are the container's 1 ms rounding.
AUDIO_GAP_S = 0.002
#: Below this normalised correlation the sound of the two copies does not match.
MIN_CORRELATION = 0.3
#: Correlation peaks within this fraction of the highest are as good as it (a repeating sound).
PEAK_TIE = 0.9
#: ... and the best within this much of the chosen peak wins (under half a repeat's period).
PEAK_NEIGHBOURHOOD_S = 0.25
#: The search runs at a quarter of the rate, then is refined within this many samples.
DECIMATE = 4
REFINE = 3 * DECIMATE
SIGNATURE_SIZE = (32, 18)
SAMPLES_PER_BLOCK = 4
EIGHT_BIT_YUV = {"yuv420p", "yuvj420p", "yuv422p", "yuv444p", "yuva420p"}
#: A live frame's best hq twin must be this much closer (squared distance) than any hq frame
#: two or more frames away from it, or the frame proves nothing (a still picture, a flash).
TWIN_RATIO = 0.25
MIN_TWINS = 5
#: Twins agree within this fraction of a frame interval.
TWIN_TOLERANCE = 0.35
#: Video frames buffered from a keyframe before decoding them anyway (memory bound).
MAX_GOP = 600
#: One recorder, one clock: a part's sound and pictures sit within this much of each other
#: (Chromium's recorder: about 40 ms). Measures further apart matched content that repeats
#: (a loop, a metronome) a period away, and the one further from the page's clock is
#: measured again within this much of the other.
AV_AGREEMENT_S = 0.3
#: The scan of a whole copy's sound (verify): windows this long, each searched this far
#: around the expected offset; a slip shorter than a window may go unseen.
SCAN_WINDOW_S = 2.0
SCAN_SEARCH_S = 0.25
#: ... decoded this much at a time (bounds memory: two copies, 48k float32 samples a second).
SCAN_PASS_S = 120.0

Source = Path | BinaryIO


@contextmanager
def open_media(source: Source) -> Iterator[Any]:
    """A Path, or a seekable file object (read from its start)."""
    if isinstance(source, Path):
        container = av.open(str(source))
    else:
        source.seek(0)
        container = av.open(source, mode="r")
    try:
        yield container
    finally:
        container.close()


def media_streams(container: Any) -> dict[str, Any]:
    """The first audio and the first video stream."""
    found: dict[str, Any] = {}
    for stream in container.streams:
        if stream.type in ("audio", "video") and stream.type not in found:
            found[stream.type] = stream
    return found


def timed_packets(container: Any, streams: dict[str, Any]) -> Iterator[tuple[str, float, float, Any]]:
    """(kind, time in s, time base, packet) of every timed packet of ``streams``, demuxed in
    file order (nothing decoded)."""
    bases = {s.index: (s.type, float(s.time_base)) for s in streams.values()}
    for packet in container.demux(*streams.values()):
        if packet.pts is None:
            continue
        kind, base = bases[packet.stream_index]
        yield kind, packet.pts * base, base, packet


def spans(source: Source) -> dict[str, tuple[float, float]]:
    """(first packet's time, last packet's end) per kind, by demuxing (nothing decoded)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    with open_media(source) as container:
        streams = media_streams(container)
        if not streams:
            return {}
        try:
            for kind, t, base, packet in timed_packets(container, streams):
                end = t + (packet.duration or 0) * base
                if kind not in first:
                    first[kind] = t
                first[kind] = min(first[kind], t)
                last[kind] = max(last.get(kind, end), end)
        except av.FFmpegError:
            pass  # a cut-off end: what came before counts
    return {kind: (first[kind], last[kind]) for kind in first}


def signature(frame: Any) -> np.ndarray:
    """The mean luma of each of 32x18 blocks of the frame: the same camera frame gives nearly
    the same signature at any size and any bitrate. (Averaged over a sparse grid of luma
    samples, a few per block side: a tenth of the cost of scaling the frame.)"""
    width, height = SIGNATURE_SIZE
    if frame.format.name not in EIGHT_BIT_YUV:
        small = frame.reformat(width=width, height=height, format="gray", interpolation="AREA")
        return np.asarray(small.to_ndarray(), dtype=np.float32).reshape(-1)
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
    step = max(1, min(frame.width // (width * SAMPLES_PER_BLOCK), frame.height // (height * SAMPLES_PER_BLOCK)))
    luma = luma[::step, ::step].astype(np.float32)
    rows = np.arange(height) * luma.shape[0] // height
    cols = np.arange(width) * luma.shape[1] // width
    sums = np.add.reduceat(np.add.reduceat(luma, rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(rows, append=luma.shape[0]), np.diff(cols, append=luma.shape[1]))
    return (sums / counts).reshape(-1)


def _mono(frame: Any) -> np.ndarray:
    data = frame.to_ndarray().astype(np.float32)
    if frame.format.name.startswith("s16"):
        data /= 32768.0
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T
    return np.asarray(data.mean(axis=0), dtype=np.float32)


@dataclass
class AudioRun:
    """Decoded sound of one window: samples from ``start`` on, at ``rate``."""

    start: float
    samples: np.ndarray
    rate: int = RATE


@dataclass
class VideoRun:
    times: np.ndarray
    signatures: np.ndarray


@dataclass
class _Collect:
    windows: list[tuple[float, float]]
    audio: list[list[tuple[float, np.ndarray]]] = field(default_factory=list)
    video: list[list[tuple[float, np.ndarray]]] = field(default_factory=list)
    rate: int = RATE

    def __post_init__(self) -> None:
        self.audio = [[] for _ in self.windows]
        self.video = [[] for _ in self.windows]

    def needed(self, t: float, before: float = 0.0) -> bool:
        return any(start - before <= t <= end for start, end in self.windows)

    def frame(self, kind: str, frame: Any, time_base: float) -> None:
        if frame.pts is None:
            return
        t = frame.pts * time_base
        if kind == "audio":
            self.rate = frame.sample_rate
            end = t + frame.samples / frame.sample_rate
            samples = None
            for n, (start, stop) in enumerate(self.windows):
                if end >= start - AUDIO_PREROLL_S and t <= stop:
                    samples = _mono(frame) if samples is None else samples
                    self.audio[n].append((t, samples))
        else:
            sig = None
            for n, (start, stop) in enumerate(self.windows):
                if start <= t <= stop:
                    sig = signature(frame) if sig is None else sig
                    self.video[n].append((t, sig))


def _assemble(frames: list[tuple[float, np.ndarray]], rate: int, start: float, stop: float) -> AudioRun | None:
    """Frames laid end to end (their 1 ms-rounded stamps would jitter the sound), silence in
    real gaps, anchored at the median of the stamps; then cut to [start, stop]."""
    if not frames:
        return None
    frames.sort(key=lambda f: f[0])
    base = frames[0][0]
    pieces: list[np.ndarray] = []
    position = 0
    residuals = []
    for t, samples in frames:
        expected = (t - base) * rate
        if expected - position > AUDIO_GAP_S * rate:
            pad = int(round(expected - position))
            pieces.append(np.zeros(pad, np.float32))
            position += pad
        residuals.append(t - (base + position / rate))
        pieces.append(samples)
        position += samples.size
    run_start = base + statistics.median(residuals)
    samples = np.concatenate(pieces)
    first = max(0, int(round((start - run_start) * rate)))
    last = min(samples.size, int(round((stop - run_start) * rate)))
    if last - first < rate * 0.5:
        return None
    return AudioRun(run_start + first / rate, samples[first:last], rate)


def decode_windows(
    source: Source, windows: dict[str, list[tuple[float, float]]]
) -> tuple[dict[str, list[Any]], int]:
    """One demux pass that decodes only what the windows need: audio from a little before
    each window, video from the keyframe before it. Returns the runs per kind (None for a
    window with nothing in it) and the count of packets that failed to decode."""
    collect = {kind: _Collect(sorted(w)) for kind, w in windows.items() if w}
    errors = 0
    with open_media(source) as container:
        streams = {k: s for k, s in media_streams(container).items() if k in collect}
        for stream in streams.values():
            # one thread: placing runs beside live calls, and decoder threads starved by them
            # cost more than they give
            stream.codec_context.thread_count = 1
        gop: list[Any] = []
        current = False  # the video decoder has every packet since the last keyframe

        def decode(kind: str, packet: Any) -> None:
            nonlocal errors
            try:
                stream = streams[kind]
                for frame in stream.codec_context.decode(packet):
                    collect[kind].frame(kind, frame, float(stream.time_base))
            except av.FFmpegError:
                errors += 1

        done_after = max(e for c in collect.values() for _, e in c.windows) + 1.0
        try:
            for kind, t, _, packet in timed_packets(container, streams):
                if t > done_after:
                    break  # every window is decoded (packets interleave within a second)
                if kind == "audio":
                    if collect["audio"].needed(t, AUDIO_PREROLL_S + 0.1):
                        decode("audio", packet)
                    continue
                if packet.is_keyframe:
                    gop, current = [], False
                if current or collect["video"].needed(t):
                    for held in gop:
                        decode("video", held)
                    gop, current = [], True
                    decode("video", packet)
                else:
                    gop.append(packet)
                    if len(gop) > MAX_GOP:
                        for held in gop:
                            decode("video", held)
                        gop, current = [], True
        except av.FFmpegError:
            pass  # a cut-off end (a part's prefix ends inside a cluster): what came before counts
        for kind in streams:
            decode(kind, None)
    runs: dict[str, list[Any]] = {}
    for kind, c in collect.items():
        if kind == "audio":
            runs[kind] = [_assemble(f, c.rate, s, e) for f, (s, e) in zip(c.audio, c.windows)]
        else:
            runs[kind] = [
                VideoRun(np.array([t for t, _ in f]), np.stack([s for _, s in f])) if len(f) >= MIN_TWINS else None
                for f in (sorted(v, key=lambda x: x[0]) for v in c.video)
            ]
    return runs, errors


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (an FFT length numpy does fast)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _ncc(x: np.ndarray, y: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``x`` against ``y`` at each lag (x[i] meets y[i + lag]),
    by FFT (exact where all of ``x`` meets ``y``; near the ends, ``y`` counts as silent)."""
    energy_x = float(np.dot(x, x))
    n = _fast_len(x.size + y.size)
    corr = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    cumulative = np.concatenate([[0.0], np.cumsum(y * y)])
    energy_y = cumulative[np.clip(lags + x.size, 0, y.size)] - cumulative[np.clip(lags, 0, y.size)]
    return np.asarray(corr[lags % n] / np.sqrt(energy_x * np.maximum(energy_y, 1e-12)))


def _ncc_direct(x: np.ndarray, y: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """The same, lag by lag over the overlap (for a handful of lags)."""
    energy_x = np.concatenate([[0.0], np.cumsum(x * x)])
    energy_y = np.concatenate([[0.0], np.cumsum(y * y)])
    values = np.zeros(lags.size)
    for n, k in enumerate(lags):
        first, last = max(0, -k), min(x.size, y.size - k)
        if last - first <= 0:
            continue
        energy = (energy_x[last] - energy_x[first]) * (energy_y[last + k] - energy_y[first + k])
        values[n] = np.dot(x[first:last], y[first + k : last + k]) / np.sqrt(max(energy, 1e-24))
    return values


def _nearest_peak(values: np.ndarray, lags: np.ndarray, expected: float) -> int:
    """The index of the peak nearest ``expected`` among those within PEAK_TIE of the highest:
    a sound that repeats (a beep every second) matches equally well a period away, and the
    page's clock, which is off by far less than a period, tells which one is right."""
    top = float(values.max())
    inner = values[1:-1]
    peaks = np.flatnonzero((inner >= values[:-2]) & (inner >= values[2:]) & (inner >= PEAK_TIE * top)) + 1
    candidates = np.concatenate(([int(np.argmax(values))], peaks))
    chosen = int(candidates[np.argmin(np.abs(lags[candidates] - expected))])
    # the best match near the chosen one: a tone's every cycle is a peak almost as high
    local = np.flatnonzero(np.abs(lags - lags[chosen]) <= PEAK_NEIGHBOURHOOD_S * RATE)
    return int(local[np.argmax(values[local])])


def audio_offset(hq: AudioRun, live: AudioRun, coarse_s: float, search_s: float = SEARCH_S) -> float | None:
    """The offset (session time minus hq time) at which the hq sound best matches the live
    sound, within ``search_s`` of ``coarse_s``; None when nothing matches. Searched at a
    quarter of the rate (FFT), then refined at the full rate around the peak, to a fraction
    of a sample."""
    x, y, rate = hq.samples.astype(np.float64), live.samples.astype(np.float64), hq.rate
    if x.size < DECIMATE or y.size < DECIMATE or float(np.dot(x, x)) < 1e-9 * x.size:
        return None
    # lag k: hq sample i meets live sample i + k, i.e. offset = live.start + k/rate - hq.start
    k_low = int(np.floor((coarse_s - search_s - live.start + hq.start) * rate))
    k_high = int(np.ceil((coarse_s + search_s - live.start + hq.start) * rate))
    k_low, k_high = max(k_low, -x.size + 1), min(k_high, y.size - 1)
    if k_high - k_low < 3 * DECIMATE:
        return None
    xd = x[: x.size // DECIMATE * DECIMATE].reshape(-1, DECIMATE).mean(axis=1)
    yd = y[: y.size // DECIMATE * DECIMATE].reshape(-1, DECIMATE).mean(axis=1)
    coarse_lags = np.arange(-(-k_low // DECIMATE), k_high // DECIMATE + 1)
    rough = _ncc(xd, yd, coarse_lags)
    if rough.size == 0:
        return None
    around = int(coarse_lags[_nearest_peak(rough, coarse_lags * DECIMATE,
                                           (coarse_s - live.start + hq.start) * rate)]) * DECIMATE
    lags = np.arange(max(k_low, around - REFINE), min(k_high, around + REFINE) + 1)
    fine = _ncc_direct(x, y, lags)
    best = int(np.argmax(fine))
    if fine[best] < MIN_CORRELATION:
        return None
    shift = 0.0
    if 0 < best < fine.size - 1:  # a parabola through the peak and its neighbours
        left, mid, right = fine[best - 1], fine[best], fine[best + 1]
        denominator = left - 2 * mid + right
        if denominator < 0:
            shift = float(0.5 * (left - right) / denominator)
    return float(live.start + (lags[best] + shift) / rate - hq.start)


def video_twins(hq: VideoRun, live: VideoRun, coarse_s: float, search_s: float = SEARCH_S) -> np.ndarray:
    """``t_live - t_hq`` of every live frame whose hq twin is beyond doubt, for offsets within
    ``search_s`` of ``coarse_s``; the cluster of agreeing twins only."""
    h, l = hq.signatures.astype(np.float64), live.signatures.astype(np.float64)
    distance = (l * l).sum(1)[:, None] + (h * h).sum(1)[None, :] - 2 * l @ h.T
    offsets = live.times[:, None] - hq.times[None, :]
    distance[np.abs(offsets - coarse_s) > search_s] = np.inf
    best = np.argmin(distance, axis=1)
    rows = np.arange(len(best))
    nearest = distance[rows, best]
    columns = np.arange(h.shape[0])[None, :]
    others = np.where(np.abs(columns - best[:, None]) >= 2, distance, np.inf).min(axis=1)
    sure = np.isfinite(nearest) & (nearest < TWIN_RATIO * others)
    found = offsets[rows[sure], best[sure]]
    steps = np.diff(hq.times)
    interval = float(np.median(steps[steps > 0])) if np.any(steps > 0) else 0.0
    tolerance = TWIN_TOLERANCE * interval if interval else 0.01
    if found.size < MIN_TWINS:  # no frame is sure of its twin: fit the whole sequence
        middle = len(rows) // 2
        candidates = offsets[middle][np.isfinite(distance[middle])]
        fitted = _sequence_fit(distance, offsets, candidates, tolerance, len(rows) // 2)
        if fitted is None:
            return np.zeros(0)
        cluster = offsets[np.abs(offsets - fitted) <= tolerance]
        return cluster if cluster.size >= MIN_TWINS else np.zeros(0)
    support = (np.abs(found[:, None] - found[None, :]) <= tolerance).sum(axis=1)
    centre = float(np.median(found[support == support.max()]))
    cluster = found[np.abs(found - centre) <= tolerance]
    if interval:
        shifted = _best_shift(distance, offsets, centre, interval, tolerance)
        if abs(shifted - centre) > tolerance:  # the sequence fits a frame or two away
            cluster = offsets[np.abs(offsets - shifted) <= tolerance]
    return cluster if cluster.size >= MIN_TWINS else np.zeros(0)


def _best_shift(distance: np.ndarray, offsets: np.ndarray, centre: float, interval: float,
                tolerance: float) -> float:
    """The whole sequence's best fit among the found offset and those a frame or two away:
    where neighbouring frames look alike (slow motion, a still scene), single frames may pick
    a neighbour as their twin, but matched as a sequence the true offset fits best."""
    base = int((np.abs(offsets - centre) <= tolerance).any(axis=1).sum())
    candidates = np.array([centre + k * interval for k in (0, -1, 1, -2, 2)])
    fitted = _sequence_fit(distance, offsets, candidates, tolerance, base // 2)
    return centre if fitted is None else fitted


def _sequence_fit(distance: np.ndarray, offsets: np.ndarray, candidates: np.ndarray,
                  tolerance: float, min_frames: int) -> float | None:
    """Of ``candidates``, the offset at which the live frames are, on average, nearest their
    hq frames (the mean distance of every live frame matched at it; at least ``min_frames``
    of them, and MIN_TWINS), refined to the median of its matched pairs; None if none fits."""
    best, best_score = None, np.inf
    for candidate in candidates:
        matched = np.abs(offsets - candidate) <= tolerance
        rows = matched.any(axis=1)
        if int(rows.sum()) < max(MIN_TWINS, min_frames):
            continue
        score = float(np.nanmin(np.where(matched, distance, np.nan)[rows], axis=1).mean())
        if score < best_score:
            best, best_score = float(np.median(offsets[matched])), score
    return best


def windows_of(start: float, end: float, length: float) -> list[tuple[float, float]]:
    """Up to three windows: the whole of a short overlap; else its start and end (and middle)."""
    span = end - start
    if span < MIN_OVERLAP_S:
        return []
    if span < 2 * length:
        return [(start, end)]
    middle = (start + end) / 2
    found = [(start, start + length), (middle - length / 2, middle + length / 2), (end - length, end)]
    return found if span >= MAX_WINDOWS * length else [found[0], found[2]]


def _summary(kind: str, windows: list[tuple[float, float]], per_window: list[Any]) -> dict[str, Any] | None:
    measured = [(w, m) for w, m in zip(windows, per_window) if m is not None]
    if not measured:
        return None
    if kind == "audio":
        values = [m for _, m in measured]
        # where most windows agree: a browser's recorder may slip mid-take (it stops to catch
        # up with its microphone), and a median of two sides would be right on neither;
        # `verify` names the stretch that disagrees
        agreeing = max(([v for v in values if abs(v - u) <= AUDIO_AGREE_S] for u in values), key=len)
        offset = float(np.median(agreeing))
        error_s = max(max(abs(v - offset) for v in agreeing), 1 / RATE)
        entry: dict[str, Any] = {"offset_s": round(offset, 6)}
        if len(agreeing) < len(values):
            entry["disagreeing_windows"] = len(values) - len(agreeing)
    else:
        pooled = np.concatenate([m for _, m in measured])
        values = [float(np.median(m)) for _, m in measured]
        offset = float(np.median(pooled))
        error_s = float(np.percentile(np.abs(pooled - offset), 95))
        entry = {"offset_s": round(offset, 6), "matched_frames": int(pooled.size)}
    entry.update(
        error_ms=round(error_s * 1000, 3),
        windows=[{"start_s": round(s, 3), "end_s": round(e, 3), "offset_s": round(v, 6)}
                 for ((s, e), _), v in zip(measured, values)],
        drift_ms=round((values[-1] - values[0]) * 1000, 3) if len(values) > 1 else None,
        method="cross-correlation" if kind == "audio" else "frame signatures",
    )
    return entry


def measure(
    live: Source | None,
    hq: Source,
    coarse_s: float,
    hq_span: tuple[float, float] | None = None,
    live_spans: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Per kind (audio, video): the measured offset of the hq stream ({"offset_s", "error_ms",
    "windows", "drift_ms", "method", "matched_frames" (video)}), or None when it could not be
    measured (no such stream, no overlap with the live copy, nothing that matches).
    ``hq_span`` limits the hq time considered; a ``decode_errors`` count comes along."""
    result: dict[str, Any] = {"audio": None, "video": None, "decode_errors": 0}
    if live is None:
        return result
    hq_spans = spans(hq)
    live_spans = live_spans if live_spans is not None else spans(live)
    hq_windows: dict[str, list[tuple[float, float]]] = {}
    for kind in ("audio", "video"):
        if kind not in hq_spans or kind not in live_spans:
            continue
        start = max(hq_spans[kind][0], live_spans[kind][0] - coarse_s)
        end = min(hq_spans[kind][1], live_spans[kind][1] - coarse_s)
        if hq_span is not None:
            start, end = max(start, hq_span[0]), min(end, hq_span[1])
        # a short take's sound is measured in thirds, so that one stretch the recorder
        # slipped in leaves the others to agree (see _summary)
        length = WINDOW_S[kind] if kind == "video" else \
            min(WINDOW_S[kind], max(MIN_WINDOW_S, (end - start) / MAX_WINDOWS))
        hq_windows[kind] = windows_of(start, end, length)
    if not any(hq_windows.values()):
        return result
    margin = SEARCH_S + 0.1
    live_windows = {kind: [(s + coarse_s - margin, e + coarse_s + margin) for s, e in w]
                    for kind, w in hq_windows.items()}
    hq_runs, hq_errors = decode_windows(hq, hq_windows)
    live_runs, _ = decode_windows(live, live_windows)
    result["decode_errors"] = hq_errors

    def measured(kind: str, centre: float, search: float) -> dict[str, Any] | None:
        per_window: list[Any] = []
        for hq_run, live_run in zip(hq_runs.get(kind, []), live_runs.get(kind, [])):
            if hq_run is None or live_run is None:
                per_window.append(None)
            elif kind == "audio":
                per_window.append(audio_offset(hq_run, live_run, centre, search))
            else:
                twins = video_twins(hq_run, live_run, centre, search)
                per_window.append(twins if twins.size else None)
        return _summary(kind, hq_windows[kind], per_window)

    for kind in hq_windows:
        result[kind] = measured(kind, coarse_s, SEARCH_S)
    return reconcile(result, coarse_s, measured)


def reconcile(
    result: dict[str, Any], coarse_s: float,
    measured: Callable[[str, float, float], dict[str, Any] | None],
) -> dict[str, Any]:
    """Sound and pictures measured more than AV_AGREEMENT_S apart: the one further from the
    page's clock matched repeating content a period away; ``measured`` again within
    AV_AGREEMENT_S of the other (None if nothing matches there: the placement then takes the
    other's offset)."""
    audio, video = result.get("audio"), result.get("video")
    if not audio or not video or abs(audio["offset_s"] - video["offset_s"]) <= AV_AGREEMENT_S:
        return result
    wrong = max(("audio", "video"), key=lambda k: abs(result[k]["offset_s"] - coarse_s))
    right = "video" if wrong == "audio" else "audio"
    again = measured(wrong, result[right]["offset_s"], AV_AGREEMENT_S)
    if again is not None:
        again["remeasured"] = {"near": right, "first_offset_s": result[wrong]["offset_s"]}
    return {**result, wrong: again}


def audio_slips(
    hq: AudioRun, live: AudioRun, expected_s: float = 0.0,
    window_s: float = SCAN_WINDOW_S, search_s: float = SCAN_SEARCH_S,
) -> list[tuple[float, float, float | None]]:
    """The offset of every consecutive ``window_s`` of the hq sound against the live sound,
    near ``expected_s``: (start, end, offset_s or None where nothing matches, e.g. silence).
    Placement measures a few windows; this measures them all, so a stretch where one copy's
    own clock slipped (a recorder that caught up with its source late) shows up."""
    found: list[tuple[float, float, float | None]] = []
    step = int(round(window_s * hq.rate))
    margin = int(round((search_s + 0.05) * live.rate))
    for first in range(0, hq.samples.size - step // 2, step):
        start = hq.start + first / hq.rate
        piece = AudioRun(start, hq.samples[first : first + step], hq.rate)
        at = int(round((start + expected_s - live.start) * live.rate))
        low, high = max(0, at - margin), min(live.samples.size, at + step + margin)
        offset = None
        if high - low > piece.samples.size // 2:
            around = AudioRun(live.start + low / live.rate, live.samples[low:high], live.rate)
            offset = audio_offset(piece, around, expected_s, search_s)
        found.append((round(start, 3), round(start + piece.samples.size / hq.rate, 3), offset))
    return found


def scan_audio(
    live: Source, hq: Source, start: float, end: float, expected_s: float = 0.0
) -> list[tuple[float, float, float | None]]:
    """:func:`audio_slips` over hq time [start, end], decoded SCAN_PASS_S at a time."""
    found: list[tuple[float, float, float | None]] = []
    first = start
    while first < end - MIN_OVERLAP_S:
        last = min(end, first + SCAN_PASS_S)
        margin = SCAN_SEARCH_S + 0.1
        hq_runs, _ = decode_windows(hq, {"audio": [(first, last)]})
        live_runs, _ = decode_windows(
            live, {"audio": [(first + expected_s - margin, last + expected_s + margin)]})
        hq_run, live_run = hq_runs["audio"][0], live_runs["audio"][0]
        if hq_run is not None and live_run is not None:
            found += audio_slips(hq_run, live_run, expected_s)
        first = last
    return found
