"""One settings object for the whole server; every value has an embedded default."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CONSENT_TEXT = (
    "I agree that my video and voice in this session are recorded and that the recordings "
    "are used to train and evaluate machine learning models that learn human emotion. "
    "I can withdraw this consent at any time by asking the operator; my recordings are "
    "then deleted from every session."
)


#: Largest HTTP request body (413 above it).
MAX_BODY_BYTES = 1024 * 1024
#: Largest WebSocket frame the server reads: above the protocol's own limit (max_message_bytes),
#: so that an oversized message gets a 4413 close rather than a dropped connection.
WS_MAX_BYTES = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMPROV_", env_nested_delimiter="__")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    #: Base of the invite and console links; defaults to http://host:port.
    public_url: str | None = None
    operator_token: str | None = None
    #: HMAC key for invite tokens; generated into the data dir when unset.
    secret_key: str | None = None

    consent_version: str = "1"
    consent_text: str = DEFAULT_CONSENT_TEXT

    #: STUN/TURN servers as RTCIceServer dicts ({urls, username?, credential?}), handed to
    #: pages and used by the server's own peers. Loopback and LAN work with none.
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)

    #: Addresses to gather ICE host candidates on; empty: every interface plus loopback.
    ice_addresses: list[str] = Field(default_factory=list)

    max_performers: int = 4
    invite_ttl_s: int = 7 * 24 * 3600
    reconnect_grace_s: float = 15.0
    hello_timeout_s: float = 10.0
    negotiation_timeout_s: float = 15.0
    max_message_bytes: int = 64 * 1024

    video_width: int = 640
    video_height: int = 480
    video_frame_rate: int = 30
    max_video_bitrate: int = 1_200_000

    #: Packets a subscriber may have queued before the relay drops for it.
    relay_video_queue: int = 120
    relay_audio_queue: int = 50
    #: Minimum gap between two keyframe requests to one publisher.
    pli_interval_s: float = 0.5

    #: passthrough (the product) or transcode: the usual decode-and-re-encode design (aiortc's
    #: own relay and MediaRecorder), kept only as the baseline of scripts/bench_rooms.py.
    relay_mode: Literal["passthrough", "transcode"] = "passthrough"

    #: Items (packets, reports, events) the recorder may hold before it drops into a gap.
    recorder_queue: int = 4096

    #: Webhook receivers of session.started, session.finalized and consent.revoked.
    webhook_urls: list[str] = Field(default_factory=list)
    #: HMAC key of webhook signatures; generated into the data dir when unset.
    webhook_secret: str | None = None
    #: First retry delay (doubling, at most 10 min apart) and when to give up (>= 1 h).
    webhook_backoff_s: float = 1.0
    webhook_give_up_s: float = 6 * 3600.0

    #: Server processes that carry rooms. Above 1, `serve` runs a router on host:port that
    #: spreads rooms over this many workers (one event loop, so one core, each) and routes
    #: every room's HTTP and signaling to the worker that owns it (docs/architecture.md).
    workers: int = Field(default=1, ge=1, le=64)
    #: Set by the router for its workers, never by hand: this worker's index (0 is the
    #: primary, which also serves sessions, events and webhooks) and the primary's URL.
    worker_index: int | None = Field(default=None, ge=0)
    primary_url: str | None = None

    # --- HTTP hardening (request bodies, slow clients, headers, logs) ---

    # --- Signaling and media hardening (SDP, ICE candidates, message rates) ---

    # --- Downstream and store hardening (caps, tokens, webhooks, files) ---

    log_level: str = "info"
    #: The performer page and its assets (static/ at the repository root).
    static_dir: Path = Path(__file__).resolve().parent.parent / "static"

    @cached_property
    def consent_sha256(self) -> str:
        return hashlib.sha256(self.consent_text.encode("utf-8")).hexdigest()

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "sessions"

    @property
    def is_primary(self) -> bool:
        """Serves the catalog, events and webhooks: a lone server, or worker 0 of a cluster."""
        return not self.worker_index

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"
