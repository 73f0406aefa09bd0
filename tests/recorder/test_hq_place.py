"""A high-quality copy joins its finalised session: a page's own recording of a known scene
(its sound 40 ms late against its pictures, its clock 120 ms off) is uploaded in chunks,
placed against the live copy (smaller, coarser, some frames lost), and checked with
`improv-capture verify` as a user would."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from improv_capture.clock import utc_now_iso
from improv_capture.recorder.finalise import finalise_session, write_sha256sums
from improv_capture.recorder.hq.errors import Revoked, UploadNotReady
from improv_capture.recorder.hq.place import place_hq
from improv_capture.recorder.hq.uploads import EBML_MAGIC, UploadStore
from improv_capture.recorder.synthetic import (
    STUDIO_PROFILE,
    Scene,
    write_hq_part,
    write_session,
    write_studio_session,
)
from improv_capture.recorder.withdraw import withdraw_performer
from tests.helpers import verify
from tests.recorder.hq_media import LIMITS, part_info, sha256, upload_file

pytestmark = pytest.mark.process

STARTED = 1_700_000_000.0
PID = "p_studio0"
SYNC_OFFSET_S = 0.8  # the page's clock to the server's, from the live copy's sender reports
CLOCK_ERROR_S = 0.12  # how far off the page's own idea of its recorder's start is
TARGET_MS = {"audio": 2.0, "video": 5.0}  # the targets
SCENE = Scene()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("studio")
    session = write_studio_session(root / "ses_studio", SCENE, STARTED, 16.0, PID, SYNC_OFFSET_S,
                                   dropped=frozenset({45, 46, 130, 200, 201, 347}))
    truths = {
        "whole": write_hq_part(root / "whole.webm", SCENE, first_frame=66, frames=300),
        "first": write_hq_part(root / "first.webm", SCENE, first_frame=40, frames=120),
        "second": write_hq_part(root / "second.webm", SCENE, first_frame=220, frames=150),
        # a new run of the recorder that starts 20 frames before the first part's end, with one
        # keyframe only (Chromium's recorder makes few): it lies where the first has media
        "overlapping": write_hq_part(root / "overlapping.webm", SCENE, first_frame=140, frames=150,
                                     keyframe_interval=1000),
    }
    return {"root": root, "session": session, "truths": truths}


@pytest.fixture
def studio(media: dict[str, Any], tmp_path: Path) -> tuple[Path, UploadStore]:
    session = tmp_path / "sessions" / "ses_studio"
    shutil.copytree(media["session"], session)
    return session, UploadStore(tmp_path / "uploads")


def started_at_ms(truth: dict[str, float]) -> float:
    """What the page reports: its recorder's start on its own clock (120 ms off)."""
    return (STARTED + truth["video_offset_s"] - SYNC_OFFSET_S + CLOCK_ERROR_S) * 1000


def upload(store: UploadStore, media: dict[str, Any], name: str, part: int, **kwargs: Any) -> None:
    info = part_info(started_at_ms(media["truths"][name]), "start" if part == 0 else "device_change")
    upload_file(store, "ses_studio", PID, part, media["root"] / f"{name}.webm", info, **kwargs)


def manifest_of(session: Path) -> dict[str, Any]:
    return dict(json.loads((session / "manifest.json").read_text()))


def place(session: Path, store: UploadStore, final: bool = False) -> dict[str, Any] | None:
    return place_hq(session, PID, store.performer_dir("ses_studio", PID), final)


def assert_placed_on_truth(part: dict[str, Any], truth: dict[str, float]) -> None:
    for kind, target in TARGET_MS.items():
        error_ms = (part[kind]["offset_s"] - truth[f"{kind}_offset_s"]) * 1000
        assert abs(error_ms) < target, (kind, error_ms)
        assert part[kind]["method"] == ("cross-correlation" if kind == "audio" else "frame signatures")
    assert part["coarse_s"] == pytest.approx(truth["video_offset_s"] + CLOCK_ERROR_S, abs=1e-6)


def restamped_copy(source: Path, target: Path, restamp: Callable[[str, int], int | None]) -> None:
    """``source`` stream-copied with each packet's time (ms) given by ``restamp(kind, ms)``,
    or left out where it says None."""
    with av.open(str(source)) as inp, av.open(str(target), "w", format="webm") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for s in streams.values():
            s.time_base = Fraction(1, 1000)
        for packet in inp.demux():
            if packet.pts is None:
                continue
            ms = restamp(packet.stream.type, int(packet.pts * packet.time_base * 1000))
            if ms is None:
                continue
            packet.pts = packet.dts = ms
            packet.time_base = Fraction(1, 1000)
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def shifted_copy(source: Path, target: Path, kind: str, shift_ms: int) -> None:
    """``source`` with one stream's packets moved by ``shift_ms``."""
    restamped_copy(source, target, lambda k, ms: ms + shift_ms if k == kind else ms)


def slipped_copy(source: Path, target: Path, start_ms: int, end_ms: int, slip_ms: int) -> None:
    """``source`` as a browser's recorder that lost ``slip_ms`` of sound at ``start_ms``, went on
    counting samples, and caught up with its microphone at ``end_ms``: the sound between is
    early by ``slip_ms`` (the stamps stay increasing)."""

    def restamp(kind: str, ms: int) -> int | None:
        if kind != "audio" or not start_ms <= ms < end_ms:
            return ms
        return None if ms < start_ms + slip_ms else ms - slip_ms  # lost, then early

    restamped_copy(source, target, restamp)


def test_the_copy_lands_on_the_live_copy(studio: tuple[Path, UploadStore], media: dict[str, Any], tmp_path: Path) -> None:
    session, store = studio
    truth = media["truths"]["whole"]
    upload(store, media, "whole", 0)
    hq = place(session, store)
    assert hq is not None and hq["state"] == "complete" and hq["reason"] is None
    (part,) = hq["alignment"]["parts"]
    assert hq["alignment"]["method"] == "cross-correlation"
    assert_placed_on_truth(part, truth)
    assert part["video"]["matched_frames"] > 250
    assert hq["codecs"] == {"audio": "opus", "video": "vp8"}
    assert (hq["width"], hq["height"], hq["frame_rate"], hq["audio_rate"]) == (320, 180, 30.0, 48000)
    ((coverage),) = hq["coverage"]
    assert coverage["start_s"] == pytest.approx(truth["audio_offset_s"], abs=0.01)
    assert coverage["end_s"] == pytest.approx(truth["video_offset_s"] + 10.0, abs=0.01)
    assert hq["upload"]["parts"] == 1 and hq["upload"]["chunks"] == 5

    manifest = manifest_of(session)
    assert manifest["revision"] == 2 and manifest["state"] == "complete"
    assert manifest["performers"][0]["hq"] == hq
    assert hq["file"] in manifest["files"] and hq["file"]["path"] == f"performers/{PID}.hq.webm"
    assert f"  performers/{PID}.hq.webm\n" in (session / "SHA256SUMS").read_text()
    assert place(session, store) is None  # settled: nothing changes

    status, report = verify(session)
    assert status == 0, report["defects"]
    checked = report["performers"][PID]["hq"]
    assert checked["video_frames"] == 300 and checked["decode_errors"] == 0
    (measured,) = checked["alignment"]
    assert abs(measured["audio_offset_ms"]) < 1.0 and abs(measured["video_offset_ms"]) < 1.0
    # inside the placed copy, sound and pictures are as much in sync as in the live copy
    live_av = report["performers"][PID]["av_offset_ms"]["median"]
    assert checked["av_offset_ms"]["pairs"] >= 9
    assert abs(checked["av_offset_ms"]["median"] - live_av) < 2.0

    tampered = tmp_path / "tampered"
    shutil.copytree(session, tampered)
    copy = tampered / hq["file"]["path"]
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    status, report = verify(tampered)
    assert status == 1 and f"performers/{PID}.hq.webm: sha256 mismatch" in report["defects"]

    misplaced = tmp_path / "misplaced"
    shutil.copytree(session, misplaced)
    shifted_copy(session / hq["file"]["path"], misplaced / hq["file"]["path"], "audio", 20)
    write_sha256sums(misplaced)
    status, report = verify(misplaced)
    assert status == 1
    (defect,) = [d for d in report["defects"] if "against the live copy" in d]
    assert defect.startswith(f"performers/{PID}.hq.webm: audio is 19.") and "ms late" in defect

    # a copy whose sound slipped for 3 s: placement measures a few windows, verify scans them all
    slipped = tmp_path / "slipped"
    shutil.copytree(session, slipped)
    start_s = hq["coverage"][0]["start_s"]
    slip_from, slip_to = int(start_s * 1000) + 3000, int(start_s * 1000) + 6000
    slipped_copy(session / hq["file"]["path"], slipped / hq["file"]["path"], slip_from, slip_to, 60)
    write_sha256sums(slipped)
    status, report = verify(slipped)
    assert status == 0 and report["defects"] == []  # which copy slipped, the archive cannot tell
    (warning,) = report["warnings"]
    assert warning.startswith(f"performers/{PID}.hq.webm: audio slips 6") and "ms early" in warning
    scanned = report["performers"][PID]["hq"]["alignment"][0]["audio_scan"]
    assert scanned["measured"] >= scanned["windows"] - 1 and scanned["off"]
    for window in scanned["off"]:  # only where it slipped, and by what it slipped
        assert slip_from / 1000 - 2.0 <= window["start_s"] and window["end_s"] <= slip_to / 1000 + 2.0
        assert window["offset_ms"] == pytest.approx(60, abs=2)
    assert measured["audio_offset_ms"] is not None  # the good copy scanned clean (status 0 above)
    assert checked["alignment"][0]["audio_scan"]["off"] == []


def test_a_part_whose_only_keyframe_lies_under_the_previous_part_keeps_its_video(
    studio: tuple[Path, UploadStore], media: dict[str, Any]
) -> None:
    session, store = studio
    upload(store, media, "first", 0, chunks=3)
    upload(store, media, "overlapping", 1, chunks=4)
    hq = place(session, store)
    assert hq is not None and hq["state"] == "complete"
    (coverage,) = hq["coverage"] if len(hq["coverage"]) == 1 else [hq["coverage"][-1]]
    truth = media["truths"]["overlapping"]
    assert coverage["end_s"] == pytest.approx(truth["video_offset_s"] + 5.0, abs=0.05)
    status, report = verify(session)
    assert status == 0, report["defects"]
    checked = report["performers"][PID]["hq"]
    # the first part's 120 frames, then the second's from where the first ends: its keyframe
    # and the 19 frames after it under the first part are kept (squeezed) for the rest to decode
    assert checked["video_frames"] == 120 + 150 and checked["decode_errors"] == 0


def test_two_parts_with_a_gap_give_two_coverage_ranges(studio: tuple[Path, UploadStore], media: dict[str, Any]) -> None:
    session, store = studio
    upload(store, media, "first", 0, chunks=3)
    upload(store, media, "second", 1, chunks=4)
    hq = place(session, store)
    assert hq is not None and hq["state"] == "complete", hq["reason"]
    first, second = hq["alignment"]["parts"]
    assert_placed_on_truth(first, media["truths"]["first"])
    assert_placed_on_truth(second, media["truths"]["second"])
    for covered, name, seconds in zip(hq["coverage"], ("first", "second"), (4.0, 5.0)):
        truth = media["truths"][name]
        assert covered["start_s"] == pytest.approx(truth["audio_offset_s"], abs=0.01)
        assert covered["end_s"] == pytest.approx(truth["video_offset_s"] + seconds, abs=0.01)
    assert hq["upload"] == {**hq["upload"], "parts": 2, "chunks": 7}
    status, report = verify(session)
    assert status == 0, report["defects"]
    assert len(report["performers"][PID]["hq"]["alignment"]) == 2


def test_at_the_deadline_what_arrived_is_placed(studio: tuple[Path, UploadStore], media: dict[str, Any]) -> None:
    session, store = studio
    upload(store, media, "whole", 0, chunks=5, skip=frozenset({3}), end=False)
    with pytest.raises(UploadNotReady):
        place(session, store)
    hq = place(session, store, final=True)
    assert hq is not None and hq["state"] == "incomplete"
    assert hq["reason"] == "part 0: 3 of an unknown number of chunks"
    ((coverage),) = hq["coverage"]
    assert 5.0 < coverage["end_s"] - coverage["start_s"] < 7.0  # the first 3 of 5 chunks
    assert_placed_on_truth(hq["alignment"]["parts"][0], media["truths"]["whole"])
    status, report = verify(session)
    assert status == 0, report["defects"]


def test_a_stream_that_is_not_webm_never_enters_the_session(studio: tuple[Path, UploadStore], tmp_path: Path) -> None:
    session, store = studio
    mkv = tmp_path / "mpeg4.mkv"
    with av.open(str(mkv), "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuv420p"
        for i in range(10):
            frame = SCENE.frame(i, 160, 90)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    garbage = EBML_MAGIC + bytes(range(256)) * 64
    for part, data in ((0, garbage), (1, mkv.read_bytes())):
        store.declare_part("ses_studio", PID, part, part_info(STARTED * 1000 + 3000))
        store.put_chunk("ses_studio", PID, part, 0, data, sha256(data), 1, LIMITS)
        store.end_part("ses_studio", PID, part, 1)
    before = manifest_of(session)
    hq = place(session, store)
    assert hq is not None and hq["state"] == "rejected" and hq["file"] is None
    assert hq["reason"].startswith("part 0 rejected: not a WebM stream")
    assert "part 1 rejected: video codec mpeg4 (expected vp8 or vp9)" in hq["reason"]
    after = manifest_of(session)
    assert after["files"] == before["files"] and after["revision"] == before["revision"] + 1
    assert sorted(p.name for p in (session / "performers").iterdir()) == [f"{PID}.webm"]
    status, report = verify(session)
    assert status == 0, report["defects"]


def test_withdrawal_takes_the_copy_and_every_pending_chunk(studio: tuple[Path, UploadStore], media: dict[str, Any]) -> None:
    session, store = studio
    upload(store, media, "whole", 0)
    assert place(session, store) is not None
    store.declare_part("ses_studio", PID, 1, part_info(STARTED * 1000))  # still uploading more
    chunk = EBML_MAGIC + b"more"
    store.put_chunk("ses_studio", PID, 1, 0, chunk, sha256(chunk), 1, LIMITS)
    uploads = store.performer_dir("ses_studio", PID)
    assert withdraw_performer(session, PID, utc_now_iso(), "asked", uploads_root=store.root)
    performer = manifest_of(session)["performers"][0]
    assert performer["hq"]["state"] == "withdrawn" and performer["hq"]["file"] is None
    assert manifest_of(session)["files"] == []
    assert not (session / "performers" / f"{PID}.hq.webm").exists()
    assert list(uploads.glob("p*")) == []
    with pytest.raises(Revoked):
        store.put_chunk("ses_studio", PID, 1, 1, b"x", sha256(b"x"), 2, LIMITS)
    status, report = verify(session)
    assert status == 0, report["defects"]


def test_without_a_live_copy_the_page_clock_places_it(studio: tuple[Path, UploadStore], media: dict[str, Any]) -> None:
    session, store = studio
    manifest = manifest_of(session)
    (session / manifest["performers"][0]["file"]["path"]).unlink()
    manifest["performers"][0]["file"] = None
    manifest["files"] = []
    (session / "manifest.json").write_text(json.dumps(manifest))
    upload(store, media, "whole", 0)
    hq = place(session, store)
    assert hq is not None and hq["state"] == "complete"
    assert hq["reason"] == "no live copy to align against: placed by the page's clock"
    (part,) = hq["alignment"]["parts"]
    assert hq["alignment"]["method"] == "page clock"
    for kind in ("audio", "video"):
        assert part[kind]["method"] == "page clock" and part[kind]["offset_s"] == part["coarse_s"]


def test_finalising_a_studio_session_awaits_every_copy(tmp_path: Path) -> None:
    session = write_session(tmp_path / "ses_capture", performers=2, seconds=2, started_unix=STARTED,
                            video_size=(64, 48))
    manifest = manifest_of(session)
    manifest["profile"] = STUDIO_PROFILE
    (session / "manifest.json").write_text(json.dumps(manifest))
    finalised = finalise_session(session)
    assert [p["hq"]["state"] for p in finalised["performers"]] == ["uploading", "uploading"]
    assert all(p["hq"]["file"] is None and p["hq"]["coverage"] == [] for p in finalised["performers"])
