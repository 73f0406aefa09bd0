"""Bandwidth on test hosts (tests/netns.py), one server:

- a Chromium performer on a 600 kbit/s uplink, its camera a textured picture that pans (an
  encoder would spend far more than 600 kbit/s on it). aiortc, receiving for the server, sends
  REMB (its abs-send-time estimator) and receiver reports (loss); it offers no transport-cc,
  so Chromium's estimate is REMB and loss based. The browser must send under the cap, as the
  server measures it, and its frames must reach the server with bounded delay (from Chromium's
  sender reports: the capture instant on its clock, the machine's, against the arrival) rather
  than a delay growing with a queue at the bottleneck;
- a bot on a 600 kbit/s downlink, receiving three bots: far more video than its link
  carries (the relay cannot send it a smaller stream). The server pauses its videos (frozen
  pictures, the sound goes on), resumes them one at a time from a keyframe, and never lets a
  queue grow; the other performers see nothing of it.
"""

from __future__ import annotations

import bisect
import json
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import room_state, start_recording, stop_recording
from tests.netns import NetnsServer, Network
from tests.network.test_studio_lossy_link import chromium_in
from tests.static.clip import FPS, HEIGHT, WIDTH, Clip, write_wav
from tests.static.pages import CHROMIUM, join

pytestmark = pytest.mark.network

CAP = 600_000  # bit/s, link layer (tbf)
UPLINK_TAKE_S = 12.0
DOWNLINK_TAKE_S = 13.0
#: the browser's estimate starts at its own guess and settles: measured after this
SETTLE_S = 4.0
LATENCY_P95_S = 0.3


def write_panning_clip(directory: Path, seconds: int = 3) -> Clip:
    """A Y4M of a coarse random texture panning 4 px a frame (detail and motion: an encoder
    takes all the bitrate it is given), and a WAV of the same length."""
    directory.mkdir(parents=True, exist_ok=True)
    frames = seconds * FPS - 1  # Chromium plays the first frame twice per loop (clip.py)
    rng = np.random.default_rng(12)
    texture = np.kron(rng.integers(16, 235, (HEIGHT // 4, (WIDTH + 4 * frames) // 4 + 1),
                                   dtype=np.uint8), np.ones((4, 4), np.uint8))
    chroma = np.full(WIDTH * HEIGHT // 2, 128, np.uint8).tobytes()
    clip = Clip(directory / "pan.y4m", directory / "pan.wav", seconds)
    with open(clip.video, "wb") as f:
        f.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(frames):
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(texture[:, 4 * index: 4 * index + WIDTH]).tobytes())
            f.write(chroma)
    write_wav(clip.audio, seconds)
    return clip


def capture_delays(clock_log: Path, clock_rate: int) -> list[tuple[float, float]]:
    """(arrival, arrival - capture instant) of every packet in a capture clock sidecar
    (docs/archive-format.md, "Capture"), the capture instant through the nearest sender
    report; both clocks are this machine's."""
    packets, reports = [], []
    for line in clock_log.read_text().splitlines():
        record = json.loads(line)
        if record[0] == "p":
            packets.append((record[1], record[2]))
        elif record[0] == "sr":
            reports.append((record[1], record[2]))
    reports.sort()
    at = [pts for pts, _ in reports]
    delays = []
    for pts, arrival in packets:
        i = bisect.bisect_left(at, pts)
        if i == len(at) or (i > 0 and pts - at[i - 1] < at[i] - pts):
            i -= 1
        if i >= 0:
            delays.append((arrival, arrival - (reports[i][1] + (pts - reports[i][0]) / clock_rate)))
    return delays


class Sampler:
    """The room as the server reports it, every 0.25 s until stopped (in a thread)."""

    def __init__(self, server: Any, room: str) -> None:
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self._server, self._room = server, room
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                state = room_state(self._server, self._room)
            except Exception:  # noqa: BLE001 - a busy server answers the next one
                continue
            self.samples.append((time.time(), {p["performer_id"]: p for p in state["performers"]}))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def bitrates(self, performer_id: str, since: float) -> list[float]:
        """What the server received from ``performer_id`` (audio and video payload), bit/s,
        over each second from ``since`` on."""
        points = [(t, sum(k["bytes"] for k in s[performer_id]["tracks"].values()))
                  for t, s in self.samples if t >= since and s.get(performer_id, {}).get("tracks")]
        rates, start = [], points[0] if points else None
        for t, sent in points:
            if start is not None and t - start[0] >= 1.0:
                rates.append((sent - start[1]) * 8 / (t - start[0]))
                start = (t, sent)
        return rates


def test_the_browser_sends_under_its_uplink_with_bounded_delay(
    network: Network, shared_server: NetnsServer, tmp_path: Path
) -> None:
    """Alone in its room: the page then decodes nobody's video, and the delay measured is
    the network's and the browser's sending, not a starved renderer's."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    uplink = network.add(rate_up=CAP)
    server = shared_server
    room = server.create_room("uplink")
    clip = write_panning_clip(tmp_path / "clip")
    session = start_recording(server, room)["session_id"]
    invite = server.invite(room, "chromium")
    performer_id = invite["performer_id"]
    sampler = Sampler(server, room)
    try:
        with chromium_in([uplink.chromium_wrapper(tmp_path)], clip, server.url) as (browser,):
            page = join(browser, invite["url"])
            page.wait_for_function("document.body.dataset.state === 'joined'", timeout=30000)
            joined = time.time()
            time.sleep(UPLINK_TAKE_S)
            capture = server.session_dir(session) / "capture" / performer_id
            delays = {kind: capture_delays(capture / f"s001.{kind}.clock.jsonl", rate)
                      for kind, rate in (("video", 90000), ("audio", 48000))}
            limited = page.evaluate(
                """async () => { let why = null; (await window.improv.pcs.publish.getStats())
                    .forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video')
                    why = s.qualityLimitationDurations; }); return why; }""")
    finally:
        sampler.stop()
    stop_recording(server, room)

    # under the cap, measured by the server (payload: the link also carries the headers)
    rates = sampler.bitrates(performer_id, since=joined + SETTLE_S)
    assert len(rates) >= 5 and statistics.median(rates) < CAP and max(rates) < 1.1 * CAP, rates
    assert statistics.median(rates) > 0.1 * CAP, rates  # and at a useful rate
    assert limited and limited.get("bandwidth", 0) > 0, limited  # because the feedback said so
    # what it sends arrives without a queue growing at the bottleneck
    for kind, measured in delays.items():
        steady = [d for arrival, d in measured if arrival >= joined + SETTLE_S]
        assert len(steady) > 80, (kind, len(steady))  # (a few seconds of packets: 90 at the least seen)
        p95 = float(np.percentile(steady, 95))
        late = float(np.percentile(steady[2 * len(steady) // 3:], 95))
        assert p95 < LATENCY_P95_S and late < LATENCY_P95_S, (kind, p95, late)


def forwards_in_time(sampler: Sampler, subscriber: str) -> list[tuple[float, dict[str, Any]]]:
    """What the server forwarded to ``subscriber``, per sample: {publisher: {kind: stats}}."""
    return [(t, s[subscriber]["receiving"]) for t, s in sampler.samples if subscriber in s]


def resumed_seconds(forwards: list[tuple[float, dict[str, Any]]], publisher: str) -> float:
    """The longest run of samples in which ``publisher``'s video went to the subscriber
    again after having been paused."""
    longest, since, was_paused = 0.0, None, False
    for t, forward in forwards:
        paused = forward.get(publisher, {}).get("video", {}).get("paused", False)
        if paused:
            was_paused, since = True, None
        elif was_paused:
            since = t if since is None else since
            longest = max(longest, t - since)
    return longest


def test_a_narrow_downlink_freezes_and_recovers_alone(
    network: Network, shared_server: NetnsServer
) -> None:
    """Three performers (bots) and one more whose downlink carries 600 kbit/s."""
    plain = [network.add() for _ in range(3)]
    narrow = network.add(rate_down=CAP)
    server = shared_server
    room = server.create_room("downlink")
    invites = [server.invite(room, name) for name in ("x", "y", "z", "narrow")]
    sampler = Sampler(server, room)
    try:
        bots = [host.bot(invite["url"], DOWNLINK_TAKE_S)
                for host, invite in zip(plain + [narrow], invites)]
        results = [bot.wait() for bot in bots]
    finally:
        sampler.stop()
    assert all(status == 0 for status, _, _ in results), [r[1] for r in results]

    # its videos were paused and came back from keyframes; its sound went on; nothing
    # queued up for it at the server
    narrow_id = invites[3]["performer_id"]
    timeline = forwards_in_time(sampler, narrow_id)
    forwards = [f for _, f in timeline]
    paused = {pid for f in forwards for pid, kinds in f.items()
              if kinds.get("video", {}).get("paused")}
    assert paused, "the narrow downlink's videos were never paused"
    assert all(k["queued"] <= 120 for f in forwards for kinds in f.values() for k in kinds.values())
    narrow_got = results[3][2]["received"]
    narrow_sent = results[3][2]["sent"]["audio_frames"]
    for (_, _, report), invite in zip(results[:3], invites[:3]):
        got = narrow_got[invite["performer_id"]]
        # of what was sent while both were in the room (the bots join a second or two apart on
        # a busy machine: no more than either sent); until the guard has paused the videos (a
        # second or two of receiver reports) the link is over its cap and sound queued behind
        # video is lost too: 84-85 % arrived in the full runs
        both_in = min(report["sent"]["audio_frames"], narrow_sent)
        assert got["audio_frames"] >= 0.75 * both_in, (got, report["sent"], narrow_sent)
    # the server resumed a video (one at a time, after its reports were clear) and kept it for
    # at least two seconds; the narrow performer got more of it than of a video still paused
    # (those frames are from before the pause): a second's worth at the rate its bot sent
    sent = {invite["performer_id"]: r[2]["sent"] for r, invite in zip(results, invites)}
    resumed_for = {pid: resumed_seconds(timeline, pid) for pid in paused}
    resumed = [pid for pid, seconds in resumed_for.items() if seconds >= 2.0]
    assert resumed, resumed_for
    least = min(got["video_frames"] for got in narrow_got.values())
    came_back = [pid for pid in resumed if narrow_got[pid]["video_frames"]
                 >= least + sent[pid]["video_frames"] / DOWNLINK_TAKE_S]
    assert came_back, (resumed_for, narrow_got, sent)
    # the others: never paused, and they saw each other (the bots' own fps on this busy
    # machine varies: what one received against what the other sent)
    for (_, _, report), invite in zip(results[:3], invites[:3]):
        for other, got in report["received"].items():
            if other != narrow_id:
                assert got["video_frames"] >= 0.7 * sent[other]["video_frames"], (
                    invite["performer_id"], other, got, sent[other])
    others = {invite["performer_id"] for invite in invites[:3]}
    assert not any(kinds.get("video", {}).get("paused")
                   for _, s in sampler.samples for pid in others if pid in s
                   for kinds in s[pid]["receiving"].values()), "another performer was paused"
