"""A session of two Chromium performers exported: the operator marks two takes (the second runs
to the stop); each take's clip opens on the keyframe the browser sent when the take was marked,
decodes whole, and its WAV is the archive's sound sample for sample."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import av
import pytest

from tests.export.checks import RATE, decoded_sound, export, unmatched, read_wav, sample_metas
from tests.helpers import ServerProcess, manifest, publishing, start_recording, stop_recording, wait_for
from tests.static.pages import join, leave

pytestmark = pytest.mark.browser

TAKES_S = (3.0, 2.5)
#: from the recording's start to the first mark: a page that has just published may ignore a
#: keyframe request while its encoder starts (the recorder asks again: capture.py)
SETTLE_S = 1.0
#: the server asks every publisher for a keyframe at a take marker; Chromium sends one within a
#: frame or two (scripts/bench_keyframes.py)
KEYFRAME_WITHIN_S = 0.2
#: ... and that frame may have been captured a little before the mark reached the server (it
#: was on its way to the encoder): a frame's time earlier at most
FRAME_S = 1 / 30


def test_chromium_takes_export_on_their_keyframes_sample_exact(
    server: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    room = server.create_room("exported")
    invites = [server.invite(room, "Ada"), server.invite(room, "Ben")]
    pages = [join(browser, invite["url"]) for invite in invites]
    for page in pages:
        page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
    wait_for(lambda: publishing(server, room, 2), 20, "both pages publishing")
    session = start_recording(server, room)["session_id"]
    time.sleep(SETTLE_S)
    prompt = {"text": "The last train has gone", "target_emotion": "anger", "intensity": 0.9}
    assert server.api("POST", f"/api/v1/rooms/{room}/prompt", json=prompt).status_code == 201
    for index, seconds in enumerate(TAKES_S, 1):
        marker = {"kind": "take", "label": f"take {index}"}
        assert server.api("POST", f"/api/v1/rooms/{room}/markers", json=marker).status_code == 201
        time.sleep(seconds)
    assert stop_recording(server, room)["state"] == "complete"
    leave(*pages)

    session_dir = server.session_dir(session)
    dest = tmp_path / "dataset"
    done = export(session_dir, dest, "--format", "webdataset", "--format", "lhotse")
    assert done.returncode == 0, done.stderr
    archive = manifest(session_dir)
    marks = [m["t_s"] for m in archive["markers"]]
    takes = list(csv.DictReader((dest / "takes.csv").read_text().splitlines()))
    assert [float(t[edge]) for t in takes for edge in ("start_s", "end_s")] == pytest.approx(
        [marks[0], marks[1], marks[1], archive["duration_s"]], abs=1e-6)
    assert {t["prompt_text"] for t in takes} == {prompt["text"]}  # pushed before the first, in force after

    metas = sample_metas(dest)
    assert len(metas) == 4
    files = {p["performer_id"]: session_dir / p["file"]["path"] for p in archive["performers"]}
    sounds = {pid: decoded_sound(path) for pid, path in files.items()}
    for key, meta in metas.items():
        video = meta["video"]
        assert -FRAME_S <= video["keyframe_offset_s"] <= KEYFRAME_WITHIN_S, (key, video)
        with av.open(str(dest / "media" / meta["session_id"] / video["file"])) as container:
            frames = list(container.decode(video=0))
        assert frames[0].key_frame and len(frames) == video["frames"] > 20, (key, video)
        # the camera's 640x480, or less where the browser scaled its encoding down (a busy CPU)
        assert (frames[0].width, frames[0].height) == (video["width"], video["height"])
        assert video["width"] <= 640 and video["height"] <= 480
        wav = read_wav(dest / "media" / meta["session_id"] / meta["audio"]["file"])
        take = meta["take"]
        assert wav.size == round(take["end_s"] * RATE) - round(take["start_s"] * RATE)
        assert unmatched(wav, sounds[meta["performer_id"]], meta) == 0, key
