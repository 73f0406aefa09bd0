"""What the browser tests share: how Chromium is started (with or without a known clip on its
fake camera and microphone), what a performer does on the page (join from an invite link,
watch another performer's video play), and the operator's console signed in and watching."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.helpers import ServerProcess
from tests.static.clip import Clip

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    # ICE over loopback only; no mDNS names that would need multicast to resolve
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # this machine has no internet: keep Chromium from trying
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-gpu",
]


def fake_capture_args(clip: Clip) -> list[str]:
    """Chromium's arguments for a fake camera and microphone that play ``clip``."""
    return CHROMIUM_ARGS + [
        f"--use-file-for-fake-video-capture={clip.video}",
        f"--use-file-for-fake-audio-capture={clip.audio}",
    ]


@contextmanager
def chromium(args: list[str], browser_required: bool) -> Iterator[Any]:
    """Headless Debian Chromium with ``args`` (skips the test where Chromium is missing, unless
    browser tests are required)."""
    if not shutil.which(CHROMIUM):
        if browser_required:
            pytest.fail(f"{CHROMIUM} is missing and browser tests are required")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield instance
        finally:
            instance.close()


@contextmanager
def chromium_playing(clip: Clip, browser_required: bool) -> Iterator[Any]:
    """Headless Chromium whose fake camera and microphone play ``clip``."""
    with chromium(fake_capture_args(clip), browser_required) as instance:
        yield instance


def open_invite(browser: Any, invite_url: str, enforce_csp: bool = False) -> Any:
    """A new performer page on an invite link, in a context of its own (its own storage).
    Its Content-Security-Policy is bypassed unless ``enforce_csp``: wait_for_function
    evaluates with eval(), which the policy refuses (waits by selector do not); the pages
    under the enforced policy: tests/static/test_content_security_policy.py."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=not enforce_csp)
    page = context.new_page()
    page.goto(invite_url)
    return page


def leave(*pages: Any) -> None:
    """Close each page's context: its camera, encoders and connections stop. Done as soon as a
    test has what it needs from the pages, so that what it checks next (verify decodes every
    frame, the server places the copies) has the machine's two cores to itself."""
    for page in pages:
        page.context.close()


def accept_and_join(page: Any) -> Any:
    """Accept the consent and press join once it is enabled."""
    page.get_by_test_id("consent-accept").click()
    page.wait_for_selector("[data-testid=join]:not([disabled])", timeout=15000)
    page.get_by_test_id("join").click()
    return page


def join(browser: Any, invite_url: str, enforce_csp: bool = False) -> Any:
    """A new performer page: open the invite link, accept the consent, press join."""
    return accept_and_join(open_invite(browser, invite_url, enforce_csp))


def upload_state(page: Any) -> dict[str, Any]:
    """A studio page's high-quality upload as it shows it (`window.improv.upload`)."""
    return dict(page.evaluate("() => window.improv.upload"))


def remote_video(page: Any, performer_id: str) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """(pid) => {
                const v = document.querySelector(
                    `video[data-testid=remote-video][data-performer-id="${pid}"]`);
                return v ? {width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
                            paused: v.paused} : null;
            }""",
            performer_id,
        )
        or {}
    )


def wait_playing(page: Any, performer_id: str, timeout: float = 20) -> dict[str, Any]:
    """Wait until the page plays the other performer's 640x480 video for a second."""
    deadline = time.time() + timeout
    first: dict[str, Any] = {}
    while time.time() < deadline:
        video = remote_video(page, performer_id)
        if video.get("width") == 640 and video["time"] > 0:
            if not first:
                first = video
            elif video["time"] >= first["time"] + 1.0:
                return video
        time.sleep(0.2)
    raise AssertionError(f"remote video of {performer_id} did not play: {remote_video(page, performer_id)}")


def max_level(page: Any, performer_id: str, above: float, seconds: float = 4) -> float:
    """The loudest level of a remote performer a Chromium page measured, watched until it is
    ``above`` or for a few seconds (the fake microphone beeps about once a second)."""
    best = 0.0
    deadline = time.time() + seconds
    while time.time() < deadline and best <= above:
        best = max(best, float(page.evaluate("(p) => window.improv.analyserLevel(p)", performer_id)))
        time.sleep(0.05)
    return best


def console_page(browser: Any, server: ServerProcess) -> Any:
    # wait_for_function evaluates with eval(), which the pages' CSP refuses; the pages under
    # the enforced policy: tests/static/test_content_security_policy.py
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{server.url}/console")
    page.get_by_test_id("signin-token").fill("wrong-token")
    page.get_by_test_id("signin-submit").click()
    page.get_by_test_id("signin-error").wait_for(state="visible", timeout=5000)
    page.get_by_test_id("signin-token").fill(server.token)
    page.get_by_test_id("signin-submit").click()
    page.wait_for_function("document.body.dataset.console === 'ready'", timeout=10000)
    return page


def tile_ready(page: Any, performer_id: str) -> bool:
    return bool(page.evaluate(
        """(pid) => {
            const v = document.querySelector(
                `[data-testid=monitor-video][data-performer-id="${pid}"]`);
            return !!v && v.videoWidth === 640 && v.currentTime > 0.5;
        }""",
        performer_id,
    ))
