"""Finalise, verify and recover on a synthetic capture written like the live recorder's; the
archive checked with the `verify` and `recover` commands a user runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from improv_capture.clock import utc_iso
from improv_capture.recorder.capture import SessionWriter
from improv_capture.recorder.finalise import finalise_session
from improv_capture.recorder.recover import recover_sessions
from improv_capture.recorder.synthetic import opus_loop, write_session
from tests.helpers import REPO, cli, verify

pytestmark = pytest.mark.process

STARTED = 1_700_000_000.0


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sessions") / "ses_synthetic"
    write_session(path, performers=2, seconds=20, started_unix=STARTED)
    finalise_session(path)
    return path


def test_sender_clocks_land_on_one_server_timeline(session: Path) -> None:
    manifest = json.loads((session / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["reason"] is None
    starts = []
    for performer in manifest["performers"]:
        assert performer["sync"]["method"] == "sender_reports"
        tracks = {t["kind"]: t for t in performer["tracks"]}
        assert tracks["video"]["frames"] == 600 and tracks["audio"]["frames"] == 1000
        assert tracks["video"]["width"] == 640 and tracks["video"]["height"] == 480
        assert tracks["video"]["gaps"] == [] and tracks["audio"]["gaps"] == []
        starts += [tracks["video"]["start_s"], tracks["audio"]["start_s"]]
    # captured 0.5 s after the start, 20 ms one-way delay of which half the RTT is known:
    # the two senders' clocks (0.25 s apart) no longer matter
    assert starts == pytest.approx([0.5195] * 4, abs=0.001)
    assert not (session / "capture").exists()


def test_verify_accepts_the_archive_and_catches_tampering(session: Path, tmp_path: Path) -> None:
    status, report = verify(session)
    assert status == 0, report["defects"]
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(session), str(copy)], check=True)
    media = next((copy / "performers").glob("*.webm"))
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0xFF
    media.write_bytes(bytes(data))
    (copy / "stray.txt").write_text("not listed")
    status, report = verify(copy)
    assert status == 1
    assert f"performers/{media.name}: sha256 mismatch" in report["defects"]
    assert "stray.txt is not in SHA256SUMS" in report["defects"]


def test_recover_finalises_interrupted_sessions_as_partial(tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    write_session(sessions / "ses_crashed", performers=1, seconds=3, started_unix=STARTED)
    (recovered,) = recover_sessions(sessions)
    assert recovered["state"] == "partial" and recovered["reason"] == "interrupted"
    assert recover_sessions(sessions) == []  # nothing left to do the second time
    assert verify(sessions / "ses_crashed")[0] == 0


def test_a_keyframe_placed_just_before_the_start_opens_the_video(tmp_path: Path) -> None:
    """The keyframe the recording asks for can map a few ms before t = 0; dropping it would
    leave the file starting with frames nothing can decode."""
    session = tmp_path / "ses_early"
    write_session(session, performers=1, seconds=3, started_unix=STARTED)
    data = json.loads((session / "manifest.json").read_text())
    data["started_at"] = utc_iso(STARTED + 0.53)  # the first frame (a keyframe) lands at -10 ms
    (session / "manifest.json").write_text(json.dumps(data))
    manifest = finalise_session(session)
    video = next(t for t in manifest["performers"][0]["tracks"] if t["kind"] == "video")
    assert video["start_s"] == 0.0 and video["frames"] == 90
    status, report = verify(session)
    assert status == 0, report["defects"]
    assert report["performers"]["p_synth0"]["video_frames"] == 90


def test_recover_command(tmp_path: Path) -> None:
    write_session(tmp_path / "data" / "sessions" / "ses_cut", performers=1, seconds=2)
    command = [*cli(), "recover", "--data-dir", str(tmp_path / "data")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "ses_cut: partial (interrupted)" in done.stdout
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "no interrupted sessions" in done.stdout


def test_a_performer_without_one_captured_packet_has_no_file_and_no_error(tmp_path: Path) -> None:
    """They joined, and their media never reached the recorder (a connection that did not come
    up): finalising gives them no file and no tracks, and the others' files as usual."""
    session = tmp_path / "ses_20231114T221320Z_eeeeee"
    write_session(session, performers=1, seconds=2.0, video_size=(160, 120))
    manifest_path = session / "manifest.json"
    data = json.loads(manifest_path.read_text())
    silent = {**data["performers"][0], "performer_id": "p_silent", "display_name": "Silent"}
    data["performers"].append(silent)
    manifest_path.write_text(json.dumps(data))
    (session / "capture" / "p_silent").mkdir()
    final = finalise_session(session)
    entries = {p["performer_id"]: p for p in final["performers"]}
    assert entries["p_silent"]["file"] is None and entries["p_silent"]["tracks"] == []
    assert entries["p_silent"]["sync"]["method"] == "none"
    assert entries[data["performers"][0]["performer_id"]]["file"] is not None
    assert final["state"] == "partial" and final["reason"] == "p_silent: no media", final["reason"]
    status, report = verify(session)  # every file decodes; the performer's media is missing
    assert report["defects"] == ["p_silent: no media file"], report["defects"]


def test_a_performer_with_packets_but_none_placeable_has_no_file(tmp_path: Path) -> None:
    """Packets were captured but none of them has a place in the take (sound from before the
    start, as when a node dies a moment after media came): no header-only file that nothing
    can read, and the session says so."""
    session = tmp_path / "ses_20231114T221320Z_ffffff"
    write_session(session, performers=1, seconds=2.0, started_unix=STARTED, video_size=(160, 120))
    writer = SessionWriter(session)
    key = ("p_late", "s001", "audio")
    for i, data in enumerate(opus_loop(10)):  # 20 ms each, a second before t = 0
        writer.submit(("p", key, data, 960 * i, True, STARTED - 1 + i * 0.02))
    writer.submit(("close", key))
    writer.close(timeout=60)
    data = json.loads((session / "manifest.json").read_text())
    data["performers"].append({**data["performers"][0], "performer_id": "p_late"})
    (session / "manifest.json").write_text(json.dumps(data))
    final = finalise_session(session)
    entry = next(p for p in final["performers"] if p["performer_id"] == "p_late")
    assert entry["file"] is None and entry["tracks"] == [], entry
    assert not (session / "performers" / "p_late.webm").exists()
    assert final["reason"] == "p_late: no media"
    status, report = verify(session)
    assert report["defects"] == ["p_late: no media file"], report["defects"]
