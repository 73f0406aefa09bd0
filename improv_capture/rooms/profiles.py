"""Capture profiles: what a room asks of the performers' browsers.

``standard`` records what the live call carries. ``studio`` also has each browser record its
raw camera and microphone at full quality and upload it during the take (the high-quality, or
hq, copy), while the live call is sent scaled down. A room's profile is resolved once, when the
room is made, from its name, the server's settings and the operator's overrides, and every
resolved value goes into the room, the performers' pages and each session's manifest.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from improv_capture.settings import Settings

ProfileName = Literal["standard", "studio"]

#: What a studio page holds in memory of its copy once the browser's storage refuses it
#: (QuotaExceededError); past it the page stops its local recording (the live copy remains).
#: Lower it for rooms of phones or small laptops, raise it for long takes on big machines.
PAGE_MEMORY_BYTES = 256 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaptureOverrides(_Strict):
    width: int | None = Field(default=None, ge=160, le=3840)
    height: int | None = Field(default=None, ge=120, le=2160)
    frame_rate: int | None = Field(default=None, ge=5, le=60)
    echo_cancellation: bool | None = None
    noise_suppression: bool | None = None
    auto_gain_control: bool | None = None


class LiveOverrides(_Strict):
    width: int | None = Field(default=None, ge=160, le=1920)
    height: int | None = Field(default=None, ge=120, le=1080)
    max_video_bitrate: int | None = Field(default=None, ge=100_000, le=8_000_000)


class HqOverrides(_Strict):
    video_bitrate: int | None = Field(default=None, ge=500_000, le=40_000_000)
    audio_bitrate: int | None = Field(default=None, ge=32_000, le=512_000)
    chunk_s: float | None = Field(default=None, ge=1, le=10)
    upload_deadline_s: float | None = Field(default=None, ge=60, le=7 * 24 * 3600)
    #: a few chunks at least; a tab holds no more than a few GiB
    page_memory_bytes: int | None = Field(default=None, ge=1024 * 1024, le=4 * 1024**3)


class ProfileRequest(_Strict):
    """What a room's create body may say of its profile: a name, and values to override."""

    name: ProfileName
    capture: CaptureOverrides = Field(default_factory=CaptureOverrides)
    live: LiveOverrides = Field(default_factory=LiveOverrides)
    hq: HqOverrides = Field(default_factory=HqOverrides)


def _merge(base: dict[str, Any], overrides: BaseModel) -> dict[str, Any]:
    return {**base, **overrides.model_dump(exclude_none=True)}


def resolve_profile(request: ProfileRequest | ProfileName | None, settings: Settings) -> dict[str, Any]:
    """Every value a room's capture runs with. ``None``: the server's default profile."""
    if request is None or isinstance(request, str):
        request = ProfileRequest(name=request or settings.default_profile)
    if request.name == "standard":
        if request.hq.model_dump(exclude_none=True):
            raise ValueError("a standard room takes no hq values: use \"name\": \"studio\"")
        capture = {"width": settings.video_width, "height": settings.video_height,
                   "frame_rate": settings.video_frame_rate, "echo_cancellation": True,
                   "noise_suppression": True, "auto_gain_control": True}
        live = {"width": settings.video_width, "height": settings.video_height,
                "max_video_bitrate": settings.max_video_bitrate}
        hq = None
    else:
        capture = {"width": settings.studio_width, "height": settings.studio_height,
                   "frame_rate": settings.video_frame_rate,
                   "echo_cancellation": False, "noise_suppression": False,
                   "auto_gain_control": False}
        live = {"width": settings.studio_live_width, "height": settings.studio_live_height,
                "max_video_bitrate": settings.studio_live_max_video_bitrate}
        hq = _merge({"mime_type": "video/webm;codecs=vp8,opus",
                     "video_bitrate": settings.studio_video_bitrate,
                     "audio_bitrate": settings.studio_audio_bitrate,
                     "chunk_s": settings.studio_chunk_s,
                     "max_chunk_bytes": settings.hq_max_chunk_bytes,
                     "upload_deadline_s": settings.hq_upload_deadline_s,
                     "page_memory_bytes": PAGE_MEMORY_BYTES}, request.hq)
    capture = _merge(capture, request.capture)
    live = _merge(live, request.live)
    if live["width"] > capture["width"] or live["height"] > capture["height"]:
        raise ValueError("the live size cannot be larger than the capture size")
    return {"name": request.name, "capture": capture, "live": live, "hq": hq}


def live_media(profile: dict[str, Any]) -> dict[str, Any]:
    """The `media` of a performer's `welcome`: the size and bitrate the live call is sent at."""
    live = profile["live"]
    return {"width": live["width"], "height": live["height"],
            "frame_rate": profile["capture"]["frame_rate"],
            "max_video_bitrate": live["max_video_bitrate"]}
