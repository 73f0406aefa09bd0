"""The part of a take recorded on a node that died joins the session that went on elsewhere
(recorder/continued.py): real archives, written by the recorder and decoded by verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from improv_capture.recorder.continued import (
    PartRefused,
    join_earlier_part,
    missing_part,
    part_files,
    waiting_for,
)
from improv_capture.recorder.finalise import finalise_session
from improv_capture.recorder.manifest import read_manifest
from improv_capture.recorder.synthetic import write_session
from improv_capture.recorder.verify import check_sums, verify_session
from improv_capture.recorder.withdraw import withdraw_performer

pytestmark = pytest.mark.unit

STARTED = 1_780_000_000.0


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The earlier part (two performers, interrupted: its node died 3.5 s in) and the session
    that went on 5 s after it started (one of them), written once for the module."""
    sessions = tmp_path_factory.mktemp("parts") / "sessions"
    small = (160, 120)
    earlier_dir = write_session(sessions / "ses_earlier", performers=2, seconds=3,
                                started_unix=STARTED, video_size=small)
    earlier = finalise_session(earlier_dir, reason="interrupted")
    later_dir = write_session(sessions / "ses_later", performers=1, seconds=3,
                              started_unix=STARTED + 5, video_size=small)
    manifest = json.loads((later_dir / "manifest.json").read_text())
    manifest["continues"] = missing_part("ses_earlier", earlier["started_at"], "node-a")
    (later_dir / "manifest.json").write_text(json.dumps(manifest))
    finalise_session(later_dir)
    return sessions


def two_parts(written: Path, tmp_path: Path) -> tuple[Path, dict[str, Any], Path]:
    """A copy of the two sessions, and the earlier files as this node fetched them."""
    sessions = shutil.copytree(written, tmp_path / "sessions")
    earlier = read_manifest(sessions / "ses_earlier")
    fetched = tmp_path / "incoming"
    for entry in part_files(earlier):
        (fetched / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sessions / "ses_earlier" / entry["path"], fetched / entry["path"])
    return sessions / "ses_later", earlier, fetched


def test_until_it_joins_the_part_is_missing_then_every_file_of_it_is_in_the_session(written: Path, tmp_path: Path) -> None:
    later_dir, earlier, fetched = two_parts(written, tmp_path)
    before = read_manifest(later_dir)
    assert waiting_for(before) == "ses_earlier" and before["continues"]["state"] == "missing"

    merged = join_earlier_part(later_dir, earlier, fetched)
    assert merged is not None and merged["revision"] == 2
    continues = merged["continues"]
    assert continues["state"] == "merged" and continues["path"] == "parts/ses_earlier"
    assert continues["offset_s"] == -5.0  # the earlier part's t = 0 on this timeline
    assert continues["part_state"] == "partial" and "interrupted" in continues["part_reason"]
    # the stretch neither node recorded: from the earlier part's end to this one's start
    assert continues["gap"]["reason"] == "reconnected" and continues["gap"]["end_s"] == 0.0
    assert continues["gap"]["start_s"] == pytest.approx(earlier["duration_s"] - 5.0)
    entries = {p["performer_id"]: p for p in merged["performers"]}
    assert set(entries) == {"p_synth0", "p_synth1"}
    assert entries["p_synth1"]["file"] is None  # in the earlier part only
    for pid, entry in entries.items():
        path = entry["earlier"]["file"]["path"]
        assert path == f"parts/ses_earlier/performers/{pid}.webm"
        assert (later_dir / path).read_bytes() == (
            later_dir.parent / "ses_earlier" / "performers" / f"{pid}.webm").read_bytes()
        assert path in {f["path"] for f in merged["files"]}
    report = verify_session(later_dir)
    assert report["ok"], report["defects"]
    assert all(report["performers"][pid]["earlier"]["video_frames"] > 60 for pid in entries)
    assert join_earlier_part(later_dir, earlier, fetched) is None  # a second notice: nothing


def test_a_withdrawn_performer_leaves_both_parts(written: Path, tmp_path: Path) -> None:
    later_dir, earlier, fetched = two_parts(written, tmp_path)
    join_earlier_part(later_dir, earlier, fetched)
    assert withdraw_performer(later_dir, "p_synth0", "2026-12-02T08:00:00.000000Z", "asked")
    manifest = read_manifest(later_dir)
    assert not (later_dir / "parts/ses_earlier/performers/p_synth0.webm").exists()
    assert not (later_dir / "performers/p_synth0.webm").exists()
    assert not any("p_synth0" in f["path"] for f in manifest["files"])
    entry = next(p for p in manifest["performers"] if p["performer_id"] == "p_synth0")
    assert entry["earlier"]["file"] is None and entry["withdrawn"]["reason"] == "asked"
    assert check_sums(later_dir) == [] and verify_session(later_dir)["ok"]


def test_media_of_a_performer_withdrawn_here_never_joins(written: Path, tmp_path: Path) -> None:
    later_dir, earlier, fetched = two_parts(written, tmp_path)
    assert withdraw_performer(later_dir, "p_synth0", "2026-12-02T08:00:00.000000Z", None)
    merged = join_earlier_part(later_dir, earlier, fetched)
    assert merged is not None
    assert not (later_dir / "parts/ses_earlier/performers/p_synth0.webm").exists()
    assert (later_dir / "parts/ses_earlier/performers/p_synth1.webm").exists()


def test_a_part_that_is_not_the_one_awaited_or_names_paths_outside_is_refused(written: Path, tmp_path: Path) -> None:
    later_dir, earlier, fetched = two_parts(written, tmp_path)
    assert join_earlier_part(later_dir, {**earlier, "session_id": "ses_other"}, fetched) is None
    hostile = json.loads(json.dumps(earlier))
    hostile["performers"][0]["file"]["path"] = "../../escape.webm"
    with pytest.raises(PartRefused):
        join_earlier_part(later_dir, hostile, fetched)
    with pytest.raises(PartRefused):
        join_earlier_part(later_dir, {**earlier, "state": "recording"}, fetched)
    for broken in ({**earlier, "performers": [{"display_name": "no id"}]},
                   {**earlier, "started_at": "yesterday"},
                   {k: v for k, v in earlier.items() if k != "performers"}):
        with pytest.raises(PartRefused):
            join_earlier_part(later_dir, broken, fetched)
    assert read_manifest(later_dir)["revision"] == 1 and not (later_dir / "parts").exists()
