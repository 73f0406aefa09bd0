"""Capture profiles resolve to every value a room runs with, and refuse what cannot work."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from improv_capture.rooms.profiles import ProfileRequest, live_media, resolve_profile
from improv_capture.settings import Settings

pytestmark = pytest.mark.unit


def test_studio_records_raw_full_size_and_sends_the_call_scaled_down() -> None:
    profile = resolve_profile("studio", Settings())
    assert profile["capture"] == {"width": 1280, "height": 720, "frame_rate": 30,
                                  "echo_cancellation": False, "noise_suppression": False,
                                  "auto_gain_control": False}
    assert live_media(profile) == {"width": 640, "height": 360, "frame_rate": 30,
                                   "max_video_bitrate": 800_000}
    assert profile["hq"]["mime_type"] == "video/webm;codecs=vp8,opus"
    assert profile["hq"]["upload_deadline_s"] == 3600.0


def test_standard_is_todays_capture_and_the_server_default_applies() -> None:
    standard = resolve_profile(None, Settings())
    assert standard["name"] == "standard" and standard["hq"] is None
    assert standard["capture"]["echo_cancellation"] is True
    assert live_media(standard) == {"width": 640, "height": 480, "frame_rate": 30,
                                    "max_video_bitrate": 1_200_000}
    assert resolve_profile(None, Settings(default_profile="studio"))["name"] == "studio"


def test_overrides_switch_each_value_and_bad_ones_are_refused() -> None:
    request = ProfileRequest.model_validate(
        {"name": "studio", "capture": {"echo_cancellation": True}, "hq": {"video_bitrate": 8_000_000}})
    profile = resolve_profile(request, Settings())
    assert profile["capture"]["echo_cancellation"] is True
    assert profile["capture"]["noise_suppression"] is False
    assert profile["hq"]["video_bitrate"] == 8_000_000
    with pytest.raises(ValueError, match="live size"):
        resolve_profile(ProfileRequest.model_validate(
            {"name": "studio", "live": {"width": 1920, "height": 1080}}), Settings())
    with pytest.raises(ValueError, match="standard room takes no hq"):
        resolve_profile(ProfileRequest.model_validate(
            {"name": "standard", "hq": {"chunk_s": 2}}), Settings())
    with pytest.raises(ValidationError):
        ProfileRequest.model_validate({"name": "studio", "capture": {"echo": False}})
    with pytest.raises(ValidationError):
        ProfileRequest.model_validate({"name": "cinema"})
