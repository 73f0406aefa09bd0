"""What the recorder marks when media is lost, late or cut off (recorder/capture.py and
finalise.py): audio put back in order when a retransmission comes late, a loss nothing
repaired marked as a gap, an outage the connection rode out marked `reconnected` (its
aftermath included) and told apart from media that merely stopped. Real encoded frames
through the recorder's own track recorders and writer; the archive checked by verify."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from improv_capture.clock import utc_iso
from improv_capture.recorder.capture import AUDIO_HELD_MAX, SessionWriter, TrackRecorder
from improv_capture.recorder.files import write_json_atomic
from improv_capture.recorder.finalise import finalise_session
from improv_capture.recorder.opus import packet_samples
from improv_capture.recorder.synthetic import opus_loop, vp8_loop
from tests.helpers import verify

pytestmark = pytest.mark.unit

OPUS = opus_loop(60)


def audio_packet(index: int, after_loss: bool = False) -> av.Packet:
    packet = av.Packet(OPUS[index % len(OPUS)])
    packet.pts, packet.time_base = index * 960, Fraction(1, 48000)
    packet.is_keyframe, packet.is_corrupt = True, after_loss
    return packet


def clock_records(session_dir: Path, kind: str) -> list[list[Any]]:
    path = session_dir / "capture" / "p1" / f"s001.{kind}.clock.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def record_audio(tmp_path: Path, packets: list[tuple[int, bool, float]]) -> list[list[Any]]:
    """(index, follows a loss, arrival) in the order they arrive; the clock sidecar after."""
    writer = SessionWriter(tmp_path / "ses")
    recorder = writer.track(("p1", "s001", "audio"), lambda: None)
    for index, after_loss, arrival in packets:
        recorder.packet(audio_packet(index, after_loss), arrival)
    recorder.close()
    writer.close()
    return clock_records(tmp_path / "ses", "audio")


def test_opus_packet_length_comes_from_its_toc() -> None:
    assert packet_samples(OPUS[0]) == 960  # libopus, 20 ms
    assert packet_samples(bytes([0xFD])) == 960 * 2  # CELT 20 ms, code 1: two frames
    assert packet_samples(bytes([0x1B, 0x03])) == 2880 * 3  # SILK 60 ms, code 3: 3 frames
    assert packet_samples(b"") is None and packet_samples(bytes([0x03])) is None


def test_a_late_audio_retransmission_goes_in_its_place(tmp_path: Path) -> None:
    """Packet 5 is lost, the call goes on with 6 (flagged: it follows a loss), and 5 comes
    back from the sender 100 ms later: the recording has all of them, in order, no gap."""
    arrivals = [(i, i == 6, 100 + i * 0.02) for i in range(30) if i != 5]
    arrivals.insert(10, (5, False, 100.2))
    records = record_audio(tmp_path, arrivals)
    assert [r[1] for r in records if r[0] == "p"] == [i * 960 for i in range(30)]
    assert [r for r in records if r[0] == "gap"] == []


def test_an_audio_loss_nothing_repaired_is_a_gap(tmp_path: Path) -> None:
    records = record_audio(tmp_path, [(i, i == 7, 100 + i * 0.02) for i in range(30) if i not in (5, 6)])
    assert [r[1] for r in records if r[0] == "p"] == [i * 960 for i in range(30) if i not in (5, 6)]
    (gap,) = [r for r in records if r[0] == "gap"]
    assert gap[1:] == [100 + 4 * 0.02, 100 + 7 * 0.02, "lost upstream", 2]


def test_audio_that_skips_ahead_without_a_loss_is_no_loss(tmp_path: Path) -> None:
    """The sender sent nothing for those 40 ms (its numbering says so: nothing flagged)."""
    records = record_audio(tmp_path, [(i, False, 100 + i * 0.02) for i in range(30) if i not in (5, 6)])
    assert [r for r in records if r[0] == "gap"] == []


def video_packet(frames: list[bytes], index: int, keyframe: bool, after_loss: bool) -> av.Packet:
    packet = av.Packet(frames[index % len(frames)] if not keyframe else frames[0])
    packet.pts, packet.time_base = index * 3000, Fraction(1, 90000)
    packet.is_keyframe, packet.is_corrupt = keyframe, after_loss
    return packet


def test_a_keyframe_right_after_a_loss_marks_the_loss(tmp_path: Path) -> None:
    """Frames 10 to 14 vanished upstream and the next to arrive is a keyframe: it decodes,
    but the frames before it are gone, and the manifest must say so."""
    frames = vp8_loop(64, 48, frames=30)
    writer = SessionWriter(tmp_path / "ses")
    recorder = writer.track(("p1", "s001", "video"), lambda: None)
    for i in [*range(10), *range(15, 20)]:
        recorder.packet(video_packet(frames, i, i in (0, 15), after_loss=i == 15), 100 + i / 30)
    recorder.close()
    writer.close()
    (gap,) = [r for r in clock_records(tmp_path / "ses", "video") if r[0] == "gap"]
    assert gap[1:4] == [100 + 9 / 30, 100 + 15 / 30, "lost upstream"]


def session_with(tmp_path: Path, feed: Any, seconds: float) -> Path:
    """A session of one performer whose capture ``feed(video, audio, started)`` writes
    through the recorder's own track recorders; finalised."""
    session_dir = tmp_path / "ses_gaps"
    started = time.time() - 60
    writer = SessionWriter(session_dir)
    recorders = {kind: writer.track(("p1", "s001", kind), lambda: None) for kind in ("video", "audio")}
    feed(recorders["video"], recorders["audio"], started)
    for recorder in recorders.values():
        recorder.close()
    writer.close()
    write_json_atomic(session_dir / "manifest.json", {
        "schema_version": 1, "session_id": session_dir.name, "room_id": "room_gaps",
        "state": "recording", "reason": None, "started_at": utc_iso(started),
        "ended_at": utc_iso(started + seconds), "duration_s": None,
        "performers": [{"performer_id": "p1", "display_name": "One", "consent": None,
                        "capture": None, "joined_at_s": 0.0, "left_at_s": None, "file": None,
                        "tracks": [], "sync": {"method": None, "rtt_s": 0.002}}],
        "markers": [], "prompts": [], "files": [],
    })
    finalise_session(session_dir)
    return session_dir


def sender(silent: tuple[float, float], reports_while_silent: bool,
           lost_after: int) -> Any:
    """A sender of 12 s of media (30 fps, 50 audio packets/s, a sender report per track
    every second) whose media does not arrive over ``silent`` (s), its reports only if told;
    after it, video resumes with ``lost_after`` frames that follow a loss, then a keyframe,
    and the first audio packet follows a loss (with ``lost_after``: the media was sent and
    lost, not stopped)."""
    frames = vp8_loop(64, 48, frames=30)

    def feed(video: TrackRecorder, audio: TrackRecorder, started: float) -> None:
        events: list[tuple[float, int, Any]] = []
        for i in range(12 * 30):
            t = i / 30
            if silent[0] <= t < silent[1]:
                continue
            resumed = t >= silent[1]
            first_back = round(silent[1] * 30)
            after_loss = resumed and i < first_back + lost_after
            keyframe = i == 0 or (resumed and i == first_back + lost_after)
            events.append((t, 0, lambda i=i, k=keyframe, a=after_loss: video.packet(
                video_packet(frames, i, k, a), started + 1 + i / 30 + 0.01)))
        for i in range(12 * 50):
            t = i * 0.02
            if not silent[0] <= t < silent[1]:
                # the first packet back follows the lost ones (the relay flags it)
                after_loss = lost_after > 0 and i == round(silent[1] * 50)
                events.append((t, 1, lambda i=i, a=after_loss: audio.packet(
                    audio_packet(i, a), started + 1 + i * 0.02 + 0.01)))
        for second in range(12):
            if silent[0] <= second < silent[1] and not reports_while_silent:
                continue
            for recorder, rate in ((video, 90000), (audio, 48000)):
                events.append((second + 0.001, 2, lambda s=second, r=recorder, c=rate: r.sender_report(
                    s * c, started + 1 + s, started + 1 + s + 0.01)))
        for _, _, act in sorted(events, key=lambda e: (e[0], e[1])):
            act()

    return feed


def gaps_of(session_dir: Path) -> dict[str, list[dict[str, Any]]]:
    manifest = json.loads((session_dir / "manifest.json").read_text())
    return {t["kind"]: t["gaps"] for t in manifest["performers"][0]["tracks"]}


def test_an_outage_is_one_reconnected_gap_with_its_aftermath(tmp_path: Path) -> None:
    """Nothing at all arrives for 4 s (no media, no reports: the link was down); then the
    first video frames refer to pictures lost in the outage until the keyframe asked for."""
    session_dir = session_with(tmp_path, sender((4.0, 8.0), reports_while_silent=False,
                                                lost_after=3), 13)
    manifest = json.loads((session_dir / "manifest.json").read_text())
    assert manifest["state"] == "complete", manifest["reason"]
    gaps = gaps_of(session_dir)
    for kind in ("video", "audio"):
        (gap,) = gaps[kind]
        assert gap["reason"] == "reconnected", gap
        assert 4.9 <= gap["start_s"] <= 5.01, gap  # the last arrival before (1 s in, + 4 s)
    assert gaps["video"][0]["dropped_frames"] == 3
    assert gaps["audio"][0]["dropped_frames"] == 200  # 4 s of 20 ms packets, lost
    assert 9.09 <= gaps["video"][0]["end_s"] <= 9.12, gaps  # the keyframe, 3 frames after
    assert 9.0 <= gaps["audio"][0]["end_s"] <= 9.02, gaps
    status, report = verify(session_dir)
    assert status == 0, report["defects"]


def test_media_that_stops_while_the_sender_still_reports_is_no_media(tmp_path: Path) -> None:
    """The same silence, but the sender's reports keep coming: its connection was up, it
    sent no media (a camera and microphone that stopped), so it is `no media`."""
    session_dir = session_with(tmp_path, sender((4.0, 8.0), reports_while_silent=True,
                                                lost_after=0), 13)
    gaps = gaps_of(session_dir)
    for kind in ("video", "audio"):
        (gap,) = gaps[kind]
        assert gap["reason"] == "no media", gap


def test_audio_held_for_its_order_is_bounded(tmp_path: Path) -> None:
    """A sender whose timestamps stand still: its audio is written all the same, never held
    past AUDIO_HELD_MAX packets (the duplicates of one timestamp are dropped as such)."""
    writer = SessionWriter(tmp_path / "ses")
    recorder = writer.track(("p1", "s001", "audio"), lambda: None)
    for i in range(200):
        packet = audio_packet(0)
        recorder.packet(packet, 100 + i * 0.02)
        assert len(recorder._held) <= AUDIO_HELD_MAX
    recorder.close()
    writer.close()
    assert [r[1] for r in clock_records(tmp_path / "ses", "audio") if r[0] == "p"] == [0]


def test_a_short_burst_of_loss_is_lost_upstream_not_no_media(tmp_path: Path) -> None:
    """0.6 s in which everything was lost (Wi-Fi): too short for an outage (the reports
    every second still came), and the media was sent: `lost upstream`, the session partial."""
    session_dir = session_with(tmp_path, sender((4.1, 4.7), reports_while_silent=False,
                                                lost_after=2), 13)
    manifest = json.loads((session_dir / "manifest.json").read_text())
    assert manifest["state"] == "partial", manifest
    assert manifest["reason"] == "p1 audio: lost upstream; p1 video: lost upstream", manifest
    for kind, gaps in gaps_of(session_dir).items():
        assert [g["reason"] for g in gaps] == ["lost upstream"], (kind, gaps)
