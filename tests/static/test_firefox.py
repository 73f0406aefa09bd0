"""The browsers performers use: a Firefox performer next to a Chromium one, and what the page
says of a browser it cannot serve.

Firefox is Debian's firefox-esr driven over WebDriver BiDi (tests/firefox.py); Chromium is the
usual Playwright one (tests/static/pages.py). Both use their browsers' fake camera and
microphone: Firefox's is a 640x480 picture at 30 fps and a steady 1 kHz tone, Chromium's a
640x480 picture at 20 fps and a beep. Firefox's Web Audio never runs here (no audio output
device: its AudioContext stays suspended), so what Firefox receives is read from its RTP stats,
not from the page's level meter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.firefox import FirefoxPerformer, firefox_missing
from tests.helpers import (
    REPO,
    ServerProcess,
    manifest,
    room_state,
    start_recording,
    stop_recording,
    verify,
)
from tests.static.pages import (
    accept_and_join,
    join,
    max_level,
    open_invite,
    wait_playing,
)

pytestmark = pytest.mark.browser

RECORD_S = 6.0
#: of the frames the camera's frame rate promises over a track's duration: the fake cameras
#: keep theirs to within 3 % on an idle machine; a loaded one makes Chromium's stutter
MIN_FRAME_SHARE = 0.85
#: Opus packets are 20 ms
AUDIO_FRAMES_PER_S = 50
#: browser and server share this machine's clock, so a sender clock that is the wall clock
#: (as RTCP sender reports' NTP times are) maps to the server's within the path's delay
MAX_SYNC_OFFSET_S = 0.25
USE_INSTEAD = "use a recent Chrome, Edge or Firefox"

#: A lesser browser, made from Chromium: no VP8 among its send codecs, and a MediaRecorder that
#: records MP4 only (as Safari's did before WebM). What browser_support.js reads, nothing else.
LESSER_BROWSER_JS = """
(() => {
  const capabilities = RTCRtpSender.getCapabilities.bind(RTCRtpSender);
  RTCRtpSender.getCapabilities = (kind) => {
    const caps = capabilities(kind);
    if (!caps || kind !== 'video') return caps;
    return { ...caps, codecs: caps.codecs.filter((c) => c.mimeType.toLowerCase() !== 'video/vp8') };
  };
  MediaRecorder.isTypeSupported = (type) => type.toLowerCase().startsWith('video/mp4');
})();
"""
#: Only the recorder is lesser: the call works, a studio room's high-quality copy does not.
MP4_ONLY_RECORDER_JS = "MediaRecorder.isTypeSupported = (type) => type.toLowerCase().startsWith('video/mp4');"
BROWSER_PROBLEMS_JS = """async (studio) => {
  const module = await import('/static/js/performer/browser_support.js');
  return module.browserProblems({ studio });
}"""


class _WithInitScript:
    """A browser whose new contexts run ``script`` first, so that ``open_invite`` can be reused."""

    def __init__(self, browser: Any, script: str) -> None:
        self.browser = browser
        self.script = script

    def new_context(self, **kwargs: Any) -> Any:
        context = self.browser.new_context(**kwargs)
        context.add_init_script(self.script)
        return context


@pytest.fixture
def firefox(browser_required: bool, tmp_path: Path) -> Iterator[FirefoxPerformer]:
    """A Firefox performer, started by the test; stopped (Firefox and node killed) after it."""
    reason = firefox_missing()
    if reason:
        if browser_required:
            pytest.fail(f"{reason}, and browser tests are required")
        pytest.skip(reason)
    with FirefoxPerformer(log_dir=tmp_path) as performer:
        yield performer



def test_a_firefox_and_a_chromium_performer_play_each_other_and_record_complete(
    server: ServerProcess, browser: Any, firefox: FirefoxPerformer
) -> None:
    room = server.create_room("two browsers")
    fox, chrome = server.invite(room, "Firefox"), server.invite(room, "Chromium")
    fox_id, chrome_id = fox["performer_id"], chrome["performer_id"]
    firefox.start(fox["url"])
    page = join(browser, chrome["url"])
    joined = firefox.wait(lambda s: s.get("state") == "joined", 30, "the Firefox page to join")
    assert joined["browser_problems"] == [], joined  # browser_support.js: Firefox can do it all
    page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)

    # each plays the other: pictures move on both pages, sound arrives both ways
    played = wait_playing(page, fox_id)  # Firefox's fake camera, 640x480
    assert (played["width"], played["height"]) == (640, 480), played
    assert firefox.wait_playing(chrome_id)["height"] == 480
    assert max_level(page, fox_id, above=0.01) > 0.01, "Chromium hears nothing from Firefox"
    state = firefox.wait(lambda s: s["receiving"].get("audio", {}).get("audio_energy", 0) > 0, 10,
                         "Firefox to decode sound from Chromium")
    assert state["receiving"]["audio"]["codec"] == "audio/opus", state
    assert state["receiving"]["video"]["codec"] == "video/VP8", state
    assert (state["sending"]["audio"]["codec"], state["sending"]["video"]["codec"]) == (
        "audio/opus", "video/VP8"), state
    captures = {p["performer_id"]: p["capture"] for p in room_state(server, room)["performers"]}
    assert "Firefox/" in captures[fox_id]["user_agent"], captures[fox_id]
    assert "Chrome/" in captures[chrome_id]["user_agent"], captures[chrome_id]

    session = start_recording(server, room)
    time.sleep(RECORD_S)
    assert stop_recording(server, room)["state"] == "complete"
    session_dir = server.session_dir(session["session_id"])
    archive = manifest(session_dir)
    assert archive["state"] == "complete", archive["reason"]
    performers = {p["performer_id"]: p for p in archive["performers"]}
    assert set(performers) == {fox_id, chrome_id}
    status, report = verify(session_dir)
    assert status == 0, report["defects"]
    for pid, performer in performers.items():
        tracks = {t["kind"]: t for t in performer["tracks"]}
        video, audio = tracks["video"], tracks["audio"]
        assert (video["codec"], audio["codec"]) == ("vp8", "opus"), tracks
        assert (video["width"], video["height"]) == (640, 480), video
        assert video["gaps"] == [] and audio["gaps"] == [], tracks
        assert video["duration_s"] > RECORD_S - 0.5 and audio["duration_s"] > RECORD_S - 0.5, tracks
        frame_rate = performer["capture"]["video_settings"]["frameRate"]
        assert video["frames"] >= MIN_FRAME_SHARE * frame_rate * video["duration_s"], (pid, frame_rate, video)
        assert audio["frames"] >= 0.95 * AUDIO_FRAMES_PER_S * audio["duration_s"], (pid, audio)
        decoded = report["performers"][pid]
        assert decoded["decode_errors"] == 0, decoded
        assert (decoded["video_frames"], decoded["audio_frames"]) == (video["frames"], audio["frames"])
        # placed by the browser's RTCP sender reports, Firefox's as well as Chromium's
        sync = performer["sync"]
        assert sync["method"] == "sender_reports", (pid, sync)
        assert sync["sender_reports"]["video"] >= 1 and sync["sender_reports"]["audio"] >= 1, (pid, sync)
        assert abs(sync["offset_s"]) < MAX_SYNC_OFFSET_S and 0 <= sync["rtt_s"] < 0.1, (pid, sync)
        assert sync["segments"] == 1, (pid, sync)


def test_the_browser_support_check_names_what_a_browser_lacks(server: ServerProcess, browser: Any) -> None:
    """browser_support.js in Chromium as it is (nothing lacking), and in a Chromium made lesser."""
    room = server.create_room("support")
    page = open_invite(browser, server.invite(room, "Chromium")["url"])
    assert page.evaluate(BROWSER_PROBLEMS_JS, True) == []

    lesser = open_invite(_WithInitScript(browser, LESSER_BROWSER_JS), server.invite(room, "Lesser")["url"])
    standard = lesser.evaluate(BROWSER_PROBLEMS_JS, False)
    assert [(p["code"], p["fatal"]) for p in standard] == [("vp8", True)], standard
    assert standard[0]["message"] == f"This browser cannot send VP8 video: {USE_INSTEAD}"
    studio = lesser.evaluate(BROWSER_PROBLEMS_JS, True)
    assert [(p["code"], p["fatal"]) for p in studio] == [("vp8", True), ("webm", False)], studio
    assert "WebM" in studio[1]["message"] and "you can still join" in studio[1]["message"], studio


def _page_shows_browser_problems() -> bool:
    return 'data-testid="browser-problems"' in (REPO / "static" / "performer.html").read_text()


@pytest.mark.skipif(not _page_shows_browser_problems(),
                    reason="static/performer.html has no browser-problems element yet: "
                           "main.js does not call browser_support.js")
def test_the_page_names_a_browser_it_cannot_serve(server: ServerProcess, browser: Any) -> None:
    """No VP8: the page says so and what to use, and offers no join. A studio room in a browser
    that records no WebM: before joining, the page says what is missing; the performer still
    joins (the live call is recorded; the high-quality copy then reports its own failure)."""
    standard = server.create_room("standard")
    page = open_invite(_WithInitScript(browser, LESSER_BROWSER_JS), server.invite(standard, "Lesser")["url"])
    page.wait_for_function("document.body.dataset.state === 'error'", timeout=15000)
    error = page.get_by_test_id("error").inner_text()
    assert "VP8" in error and USE_INSTEAD in error, error
    assert page.get_by_test_id("join").is_disabled()

    studio = server.create_room("studio", profile="studio")
    recorder = _WithInitScript(browser, MP4_ONLY_RECORDER_JS)
    page = open_invite(recorder, server.invite(studio, "MP4 only")["url"])
    problems = page.get_by_test_id("browser-problems")
    problems.wait_for(state="visible", timeout=15000)
    assert "WebM" in problems.inner_text() and USE_INSTEAD in problems.inner_text(), problems.inner_text()
    assert not page.get_by_test_id("join").is_hidden()
    accept_and_join(page)  # a notice before joining (as the headphones one), not a stop
    page.wait_for_function("document.body.dataset.state === 'joined'", timeout=20000)
