"""A studio performer's page whose browser storage refuses the high-quality copy: a real
QuotaExceededError from IndexedDB (Chromium's DevTools protocol shrinks the origin's quota to one
byte, Storage.overrideQuotaForOrigin), not a stand-in for IndexedDB.

With the upload reachable the take is kept in the tab's memory, said so, and arrives whole. With
the upload unreachable too, the chunks pile up in memory to the room's bound (the profile's
hq.page_memory_bytes); then the page stops its local recording, ends the part and says so, the
live call and the live recording go on, and once the server is reachable again what the page kept
arrives and is placed, covering the stretch it recorded."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.helpers import (
    ServerProcess,
    manifest,
    start_recording,
    stop_recording,
    wait_for,
)
from tests.static.clip import write_clip
from tests.static.pages import (
    accept_and_join,
    chromium_playing,
    leave,
    open_invite,
    upload_state,
)
from tests.static.test_studio_revocation import STORED_CHUNKS

pytestmark = pytest.mark.browser

#: The origin's quota: every IndexedDB write of the page is refused.
QUOTA_BYTES = 1
#: The room's bound on the copy held in memory: two seconds of the 4 Mbit/s recording.
MEMORY_BOUND = 1024 * 1024
#: The grainy camera's picture (a dim room: the encoder spends its whole bitrate on it).
GRAIN_SIZE, GRAIN_LUMA = (640, 360), 40
#: Every request of the page's high-quality upload (status, part info, chunks, ends).
UPLOADS = re.compile(r"/hq(/|$)")
#: From the stop until the page sent everything / the server placed the copy (loopback).
UPLOAD_TIMEOUT_S = 30.0
PLACE_TIMEOUT_S = 30.0

#: A write into a scratch database of the page's origin: the error it ends with, or "ok".
STORE_PROBE = """async () => {
    const db = await new Promise((ok, no) => {
        const r = indexedDB.open('quota-probe', 1);
        r.onupgradeneeded = () => r.result.createObjectStore('s');
        r.onsuccess = () => ok(r.result);
        r.onerror = () => no(r.error);
    });
    const tx = db.transaction('s', 'readwrite');
    tx.objectStore('s').put(new Blob([new Uint8Array(64 * 1024)]), 1);
    const result = await new Promise((ok) => {
        tx.oncomplete = () => ok('ok');
        tx.onabort = () => ok(tx.error ? tx.error.name : 'aborted');
    });
    db.close();
    await new Promise((ok) => { const r = indexedDB.deleteDatabase('quota-probe'); r.onsuccess = r.onerror = ok; });
    return result;
}"""


@pytest.fixture
def grainy_browser(browser_required: bool, tmp_path: Path) -> Iterator[Any]:
    """Chromium whose fake camera and microphone play the flash/beep clip (so the copy aligns
    as in a real take) under heavy grain, so the page's copy grows at its full bitrate
    (Chromium's own fake picture is coded at an eighth of it: the bound would take 18 s)."""
    clip = write_clip(tmp_path / "clip", seconds=2, size=GRAIN_SIZE)
    add_grain(clip.video, GRAIN_SIZE)
    with chromium_playing(clip, browser_required) as browser:
        yield browser


def add_grain(y4m: Path, size: tuple[int, int]) -> None:
    """Add random grain (+-GRAIN_LUMA) to the luma of every frame of a Y4M file, in place."""
    width, height = size
    data = y4m.read_bytes()
    header, _, body = data.partition(b"\n")
    frame = len(b"FRAME\n") + width * height * 3 // 2
    rng = np.random.default_rng(11)
    frames = []
    for start in range(0, len(body), frame):
        raw = body[start : start + frame]
        luma = np.frombuffer(raw, np.uint8, width * height, len(b"FRAME\n")).astype(np.int16)
        luma += rng.integers(-GRAIN_LUMA, GRAIN_LUMA, luma.size, dtype=np.int16, endpoint=True)
        frames.append(raw[: len(b"FRAME\n")] + np.clip(luma, 16, 235).astype(np.uint8).tobytes()
                      + raw[len(b"FRAME\n") + width * height :])
    y4m.write_bytes(header + b"\n" + b"".join(frames))


def refuse_storage(page: Any, origin: str) -> Any:
    """Shrink the origin's storage quota (the CDP session must stay open: it holds the override)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": QUOTA_BYTES})
    assert page.evaluate(STORE_PROBE) == "QuotaExceededError"
    return cdp


def studio_room(server: ServerProcess, name: str, hq: dict[str, Any] | None = None) -> dict[str, Any]:
    response = server.api("POST", "/api/v1/rooms",
                          json={"name": name, "profile": {"name": "studio", "hq": hq or {}}})
    assert response.status_code == 201, response.text
    return dict(response.json())


def joined(page: Any) -> None:
    accept_and_join(page)
    page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)


def wait_warning(page: Any, text: str, timeout: float) -> str:
    """The storage notice under the upload line, once it shows ``text``."""
    warning = page.get_by_test_id("upload-warning")
    deadline = time.monotonic() + timeout
    while not (warning.is_visible() and text in warning.inner_text()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"no warning {text!r} after {timeout} s: {upload_state(page)}")
        time.sleep(0.2)
    return str(warning.inner_text())


def wait_settled(session_dir: Path, performer_id: str) -> dict[str, Any]:
    """The performer's manifest entry once its hq copy left `uploading`."""
    def settled() -> dict[str, Any] | None:
        (performer,) = manifest(session_dir)["performers"]
        assert performer["performer_id"] == performer_id
        return performer if (performer.get("hq") or {}).get("state") != "uploading" else None
    return wait_for(settled, PLACE_TIMEOUT_S, "the hq copy placed", every=0.3)


def decoded(path: Path) -> dict[str, Any]:
    """Every frame of both streams decoded: counts, the largest picture, where each stream
    ends (seconds of the file: the session timeline)."""
    frames = {"video": 0, "audio": 0}
    ends = {"video": 0.0, "audio": 0.0}
    size = (0, 0)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0, audio=0):
            kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
            frames[kind] += 1
            if kind == "video":
                size = max(size, (frame.width, frame.height))
            if frame.time is not None:
                ends[kind] = max(ends[kind], float(frame.time))
    return {**frames, "size": size, "video_end_s": ends["video"], "audio_end_s": ends["audio"],
            "end_s": max(ends.values())}


def live_end_s(performer: dict[str, Any]) -> float:
    """Where the live copy ends on the session timeline."""
    return max(t["start_s"] + t["duration_s"] for t in performer["tracks"])


def test_refused_storage_keeps_the_take_in_memory_and_loses_nothing(
    server: ServerProcess, browser: Any
) -> None:
    room = studio_room(server, "quota")
    assert room["profile"]["hq"]["page_memory_bytes"] == 256 * 1024 * 1024  # the default
    invite = server.invite(room["room_id"], "Ann")
    page = open_invite(browser, invite["url"])
    cdp = refuse_storage(page, server.url)
    joined(page)
    session = start_recording(server, room["room_id"])["session_id"]

    text = wait_warning(page, "kept in this tab's memory", 15)
    assert text.startswith("Browser storage is full") and "256 MB" in text, text
    wait_for(lambda: upload_state(page)["acked"] >= 10, 15, "chunks uploading from memory")
    assert page.evaluate(STORED_CHUNKS) == 0  # none of them went into IndexedDB
    assert stop_recording(server, room["room_id"])["state"] == "complete"

    done = wait_for(lambda: (u := upload_state(page))["state"] == "complete" and u, UPLOAD_TIMEOUT_S,
                    "every chunk acknowledged")
    assert done["pending"] == 0 and done["acked"] == done["recorded"], done
    assert [p["ended"] for p in done["parts"]] == [True], done
    # nothing waits in this tab any more: the notice to keep it open goes
    page.get_by_test_id("upload-warning").wait_for(state="hidden", timeout=5000)
    cdp.detach()
    leave(page)
    performer = wait_settled(server.session_dir(session), invite["performer_id"])
    hq = performer["hq"]
    assert hq["state"] == "complete", hq
    assert (hq["upload"]["parts"], hq["upload"]["chunks"]) == (1, done["recorded"]), (hq, done)
    frames = decoded(server.session_dir(session) / hq["file"]["path"])
    print("placed:", hq["coverage"], frames, "live ends at", live_end_s(performer))
    assert frames["size"] == (1280, 720) and frames["video"] > 30 and frames["audio"] > 50, frames
    # the copy covers the take: it ends where the live copy does, within the stop's latency
    assert live_end_s(performer) - hq["coverage"][0]["end_s"] < 1.5, (hq["coverage"], performer)


def test_past_the_memory_bound_the_copy_stops_and_the_live_recording_goes_on(
    server: ServerProcess, grainy_browser: Any
) -> None:
    bad = server.api("POST", "/api/v1/rooms",
                     json={"profile": {"name": "studio", "hq": {"page_memory_bytes": 1000}}})
    assert bad.status_code == 422, bad.text
    assert any(e["loc"][-1] == "page_memory_bytes" and "greater than or equal to 1048576" in e["msg"]
               for e in bad.json()["detail"]), bad.json()

    room = studio_room(server, "bound", {"page_memory_bytes": MEMORY_BOUND})
    assert room["profile"]["hq"]["page_memory_bytes"] == MEMORY_BOUND
    invite = server.invite(room["room_id"], "Ben")
    page = open_invite(grainy_browser, invite["url"])
    cdp = refuse_storage(page, server.url)
    page.route(UPLOADS, lambda route: route.abort("connectionrefused"))
    # The take is under way when the performer joins, so the copy starts clearly after the
    # session does (improv_capture/recorder/hq/place.py drops video stamped before the session's
    # start, and with it everything up to the next keyframe: for a copy starting a few ms early,
    # all of a short one's video).
    session = start_recording(server, room["room_id"])["session_id"]
    joined(page)

    text = wait_warning(page, "recording stopped", 20)
    assert "1 MB" in text and "live recording goes on" in text, text
    full = upload_state(page)
    print("at the bound:", full)
    (part,) = full["parts"]
    assert part["ended"] and part["acked"] == 0 and part["pending"] == part["recorded"] > 0, full
    assert full["error"] and "not reachable" in full["error"], full
    # the live call goes on without the local copy: no new part, the server still records it
    time.sleep(3)
    later = upload_state(page)
    assert [p["recorded"] for p in later["parts"]] == [part["recorded"]], later
    assert page.evaluate("[document.body.dataset.state, window.improv.pcs.publish.connectionState]"
                         ) == ["joined", "connected"]
    assert stop_recording(server, room["room_id"])["state"] == "complete"

    page.unroute(UPLOADS)
    done = wait_for(lambda: (u := upload_state(page))["state"] == "complete" and u, UPLOAD_TIMEOUT_S,
                    "what the page kept acknowledged")
    cdp.detach()
    leave(page)
    assert done["acked"] == done["recorded"] == part["recorded"] and done["pending"] == 0, done
    performer = wait_settled(server.session_dir(session), invite["performer_id"])
    hq = performer["hq"]
    print("placed:", hq["state"], hq["coverage"], "live ends at", live_end_s(performer))
    # an ended part whose every chunk arrived is whole: the copy is complete, and covers the
    # stretch before the bound; the live copy goes on past it
    assert hq["state"] == "complete", hq
    assert (hq["upload"]["parts"], hq["upload"]["chunks"]) == (1, part["recorded"]), hq
    assert hq["upload"]["bytes"] <= MEMORY_BOUND, hq["upload"]  # what the tab could hold
    (covered,) = hq["coverage"]
    assert covered["end_s"] - covered["start_s"] > 0.5, covered
    frames = decoded(server.session_dir(session) / hq["file"]["path"])
    print("decoded:", frames, "alignment:", hq["alignment"]["parts"])
    assert frames["size"] == GRAIN_SIZE and frames["video"] > 30 and frames["audio"] > 20, frames
    assert abs(frames["end_s"] - covered["end_s"]) < 0.5, (frames, covered)  # session timeline
    # the live copy went on for the 3 s after the copy stopped (its audio: placed to 0.1 ms)
    assert live_end_s(performer) - frames["audio_end_s"] > 3, (frames, performer["tracks"])
