"""One settings object for the whole server; every value has an embedded default."""

from __future__ import annotations

import hashlib
import socket
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from improv_capture.media.turn_urls import MIN_SECRET_CHARS, check_turn_url

DEFAULT_CONSENT_TEXT = (
    "I agree that my video and voice in this session are recorded and that the recordings "
    "are used to train and evaluate machine learning models that learn human emotion. "
    "I can withdraw this consent at any time by asking the operator; my recordings are "
    "then deleted from every session."
)


#: Largest WebSocket frame the server reads: above the protocol's own limit (max_message_bytes),
#: so that an oversized message gets a 4413 close rather than a dropped connection.
WS_MAX_BYTES = 1024 * 1024


class Settings(BaseSettings):
    # hide_input_in_errors: a settings error at start-up never prints the tokens and secrets
    # it was given (a model validator's error would otherwise show every input)
    model_config = SettingsConfigDict(env_prefix="IMPROV_", env_nested_delimiter="__",
                                      hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./data")
    #: Base of the invite and console links; defaults to http://host:port (https:// with TLS).
    public_url: str | None = None
    operator_token: str | None = None
    #: PEM certificate chain and its (unencrypted) private key: with both, `serve` speaks
    #: HTTPS and WSS itself and public_url defaults to https://host:port; with neither, plain
    #: HTTP (behind a TLS proxy: docs/deploy.md). Read at start only: a renewed certificate
    #: takes a restart. api/http_server.py checks them (both or neither, readable, a pair).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: HMAC key for invite tokens; generated into the data dir when unset.
    secret_key: str | None = None

    consent_version: str = "1"
    consent_text: str = DEFAULT_CONSENT_TEXT

    #: STUN/TURN servers as RTCIceServer dicts ({urls, username?, credential?}), handed to
    #: pages and used by the server's own peers. Loopback and LAN work with none.
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)

    #: Addresses to gather ICE host candidates on (the only ones answers reveal). Empty with
    #: a public_url: the addresses its host resolves to that are this machine's (none: the
    #: server refuses to start); empty without one (local use): every interface plus loopback.
    ice_addresses: list[str] = Field(default_factory=list)

    # --- TURN (improv_capture/media/turn.py; the coturn set-up: docs/deploy.md) ---
    #: TURN URLs handed to performers and consoles in their `welcome`, with a credential of
    #: their own, e.g. ["turn:turn.example.org:3478?transport=udp",
    #: "turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:5349?transport=tcp"].
    #: The server's own peers never use them (they are the far end of every relayed path).
    turn_urls: list[str] = Field(default_factory=list)
    #: The secret shared with the TURN server (coturn's static-auth-secret, with
    #: use-auth-secret); required with turn_urls, 16 characters at least. Never logged.
    turn_secret: SecretStr | None = None
    #: How long a TURN credential is valid from the welcome that hands it out (a reconnect
    #: gets a new one). Not the invite's remaining life: an invite only gates joining, and a
    #: credential expiring with it would cut a performer who joined just before off mid-take.
    turn_ttl_s: int = Field(default=24 * 3600, ge=60, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _turn_complete(self) -> Settings:
        """TURN URLs that clients can use, and a secret long enough, or no TURN at all."""
        for url in self.turn_urls:
            check_turn_url(url)
        secret = self.turn_secret.get_secret_value() if self.turn_secret is not None else None
        if self.turn_urls and secret is None:
            raise ValueError("IMPROV_TURN_URLS needs IMPROV_TURN_SECRET (coturn's "
                             "static-auth-secret) to make credentials")
        if secret is not None and not self.turn_urls:
            raise ValueError("IMPROV_TURN_SECRET is set but IMPROV_TURN_URLS is empty")
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"IMPROV_TURN_SECRET has {len(secret)} characters; use "
                             f"{MIN_SECRET_CHARS} at least (e.g. `openssl rand -hex 32`)")
        return self

    max_performers: int = 4
    invite_ttl_s: int = 7 * 24 * 3600
    reconnect_grace_s: float = 15.0
    #: after a performer's `leave` while recording, their connection stays open this long so
    #: that what they sent before it (queued on a slow link, or being repaired) lands in the
    #: recording; 0 closes at once
    leave_drain_s: float = Field(default=0.5, ge=0, le=5)
    hello_timeout_s: float = 10.0
    negotiation_timeout_s: float = 15.0
    max_message_bytes: int = 64 * 1024

    video_width: int = 640
    video_height: int = 480
    video_frame_rate: int = 30
    max_video_bitrate: int = 1_200_000

    # --- Capture profiles (improv_capture/rooms/profiles.py) ---
    #: The profile of a room whose create body names none: standard (the live call is the
    #: recording) or studio (each browser also records and uploads a high-quality copy).
    default_profile: Literal["standard", "studio"] = "standard"
    #: Studio: the camera's capture size (kept by the browser's own recording) and the size
    #: and bitrate the live call is sent at.
    studio_width: int = Field(default=1280, ge=160, le=3840)
    studio_height: int = Field(default=720, ge=120, le=2160)
    studio_live_width: int = Field(default=640, ge=160, le=1920)
    studio_live_height: int = Field(default=360, ge=120, le=1080)
    studio_live_max_video_bitrate: int = Field(default=800_000, ge=100_000)
    #: Studio: the browser recording's bitrates and how many seconds go in an upload chunk.
    studio_video_bitrate: int = Field(default=4_000_000, ge=500_000)
    studio_audio_bitrate: int = Field(default=128_000, ge=32_000)
    studio_chunk_s: float = Field(default=2.0, ge=1, le=10)
    #: Largest upload chunk: above it 413 (the page's chunks are ~chunk_s of the bitrates).
    hq_max_chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    #: After a recording stops, how long its high-quality copies may take to arrive; then each
    #: becomes `incomplete` with what did arrive, and later chunks get 409.
    hq_upload_deadline_s: float = Field(default=3600.0, ge=5)
    #: From the end of an upload chunk's request head to the end of its body (a chunk of
    #: hq_max_chunk_bytes over a slow home uplink): past it 408, and the page sends it again.
    hq_chunk_timeout_s: float = Field(default=120.0, gt=0)
    #: Upload chunks a process reads at once (each held in memory until written); one more
    #: waits up to 0.5 s, then gets 503 with Retry-After and the page sends it again.
    hq_max_concurrent_chunks: int = Field(default=16, ge=1, le=256)
    #: High-quality copies placed on a session timeline at once (CPU-heavy decoding): more wait.
    hq_placements: int = Field(default=1, ge=1, le=16)

    #: Packets a subscriber may have queued before the relay drops for it.
    relay_video_queue: int = 120
    relay_audio_queue: int = 50
    #: Minimum gap between two keyframe requests to one publisher.
    pli_interval_s: float = 0.5

    #: passthrough (the product) or transcode: the usual decode-and-re-encode design (aiortc's
    #: own relay and MediaRecorder), kept only as the baseline of scripts/bench_rooms.py, in
    #: improv_capture/bench/transcode_baseline.py (chosen by api/app.py's media_factory).
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
    #: Largest HTTP request body, counted on the bytes received (chunked bodies too): above it
    #: 413, and the rest of the body is discarded unread. Only the operator token may send a
    #: body at all; any other request's body is never read.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: From a connection's first byte, or the end of its previous response, to the end of the
    #: next request's head (request line and headers); past it the connection is closed.
    http_head_timeout_s: float = Field(default=10.0, gt=0)
    #: From the end of a request's head to the end of its body; past it 408 and the connection
    #: is closed.
    http_body_timeout_s: float = Field(default=30.0, gt=0)
    #: An idle keep-alive connection is closed after this.
    http_keep_alive_s: int = Field(default=5, ge=1)
    #: A connection that closes after an answer sent before its request's body was read (a
    #: refused upload chunk, with ``Connection: close`` as a proxy sends it) first reads on and
    #: drops the rest of that body, up to this many bytes ("lingering close": closing with the
    #: body unread resets the connection, and a proxy still sending it answers 502 instead);
    #: past it the connection is closed at once. Keep it above hq_max_chunk_bytes. 0: no linger.
    http_linger_max_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    #: ... and for at most this long; sooner once the client half-closes or sends nothing for
    #: half a second (api/http_server.py LINGER_IDLE_S). The answer itself is never delayed.
    http_linger_s: float = Field(default=5.0, ge=0)
    #: Open connections (HTTP and WebSocket) and running requests, per process: past it every
    #: new request is answered 503 and its connection closed.
    max_connections: int = Field(default=1000, ge=8)

    # --- Signaling and media hardening (SDP, ICE candidates, message rates) ---
    #: Deepest JSON nesting a socket message may have (the protocol needs 3); deeper: close 4400.
    max_message_depth: int = Field(default=32, ge=4, le=500)
    #: Messages a performer or console socket may send per second, sustained; over it each
    #: message gets an `error` `rate_limited` and is dropped (it still counts).
    signal_rate_per_s: float = Field(default=20.0, gt=0)
    #: Messages a socket may send at once above the sustained rate (the bucket's size).
    signal_burst: int = Field(default=40, ge=1)
    #: Dropped messages a socket may run up beyond its budget before it is closed with 4420.
    signal_flood_limit: int = Field(default=100, ge=1)
    #: Shortest time between two publishes of one seat; an earlier publish waits until then.
    publish_min_interval_s: float = Field(default=1.0, ge=0)
    #: Bytes and lines an SDP from a client may have per m-line it may carry (a publish offer:
    #: 2; an answer: as many as our offer); above either: `bad_sdp`, before aiortc parses it.
    sdp_max_bytes_per_media: int = Field(default=16 * 1024, ge=1024)
    sdp_max_lines_per_media: int = Field(default=256, ge=32)
    #: Distinct ICE candidates one description from a client may carry, counting those the
    #: server can check (UDP, component 1: Firefox also lists TCP and RTCP ones for every
    #: address); above it: `bad_sdp`.
    ice_max_candidates: int = Field(default=32, ge=1)
    #: Networks (CIDRs) whose remote ICE candidates are allowed besides global unicast
    #: addresses, e.g. ["10.0.0.0/8"] for a LAN or ["127.0.0.1/32"] for tests. Link-local,
    #: multicast, broadcast, unspecified and reserved addresses and hostnames (.local) are
    #: always dropped; a peer behind them still connects through peer-reflexive candidates.
    ice_allowed_networks: list[str] = Field(default_factory=list)
    #: Pre-join network checks (`probe`) one invite may start in a minute; more: `probe_limited`
    #: with `retry_after_s` (improv_capture/api/network_probe.py, docs/signaling.md).
    probes_per_minute: int = Field(default=4, ge=1, le=60)
    #: Network checks running at once in one server process (each is a peer connection
    #: counting up to 2 MiB); more: `probe_busy` with `retry_after_s`.
    max_probes: int = Field(default=8, ge=1, le=256)

    # --- Downstream and store hardening (caps, tokens, webhooks, files) ---
    #: Rooms one server process keeps (in a cluster: per worker). Creating one more answers
    #: 409 "limit reached"; delete a room first.
    max_rooms: int = Field(default=100, ge=1)
    #: Invites a room keeps (expired ones included). One more answers 409 "limit reached";
    #: make a new room.
    max_invites_per_room: int = Field(default=100, ge=1)
    #: Reader tokens not revoked. One more answers 409 "limit reached"; revoke one first.
    #: Also how many revoked ones stay listed at most (the oldest are deleted first).
    max_reader_tokens: int = Field(default=100, ge=1)
    #: How long a revoked reader token stays listed (GET /api/v1/tokens) before it is deleted.
    revoked_token_retention_s: float = Field(default=30 * 24 * 3600.0, ge=0)
    #: SSE streams (GET /api/v1/events) open at once. One more answers 429 with Retry-After.
    max_event_streams: int = Field(default=100, ge=1)
    #: Let webhook_urls name loopback and private-network receivers (127.0.0.0/8, ::1,
    #: RFC 1918, fc00::/7), for tests and LAN receivers. Link-local (cloud metadata),
    #: multicast, unspecified and reserved addresses are refused even then. Without it a URL
    #: naming such an address fails the start, and a name resolving to one fails its delivery.
    webhook_allow_private: bool = False

    @model_validator(mode="after")
    def _webhook_targets_allowed(self) -> Settings:
        """A webhook URL that could reach the host itself or a metadata service stops the start."""
        from improv_capture.downstream.webhooks import check_webhook_url

        for url in self.webhook_urls:
            check_webhook_url(url, self.webhook_allow_private)
        return self

    # --- Archives in S3-compatible storage (improv_capture/storage/; docs/deploy.md) ---
    #: The store's endpoint, e.g. http://127.0.0.1:9000 (MinIO) or https://s3.eu-west-1.amazonaws.com.
    #: Unset: no store, sessions stay in the data dir only. Credentials are exactly
    #: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment (never a setting here).
    s3_url: str | None = None
    #: The bucket sessions go to (it must exist); required with s3_url.
    s3_bucket: str | None = None
    #: Key prefix: a session is stored under <prefix><session_id>/<path of each file>.
    s3_prefix: str = "sessions/"
    s3_region: str = "us-east-1"
    #: True: the local copy stays after upload. False: a session's media files (not its
    #: manifest.json and SHA256SUMS, which the catalog is rebuilt from) are removed once its
    #: current revision is stored and verified; the files API then redirects to the store.
    s3_keep_local: bool = True
    #: Multipart part size (the store's minimum is 5 MiB; a smaller file goes in one request).
    #: Each upload holds one part in memory: s3_concurrency parts at most.
    s3_part_bytes: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024, le=512 * 1024 * 1024)
    #: Sessions uploaded at once by the background uploader.
    s3_concurrency: int = Field(default=2, ge=1, le=16)
    #: First retry delay of a failed upload, doubling up to s3_retry_max_s between tries;
    #: a session is retried forever (it stays local until it is stored).
    s3_retry_min_s: float = Field(default=1.0, gt=0, le=3600)
    s3_retry_max_s: float = Field(default=300.0, gt=0, le=24 * 3600)
    #: Connect and read timeout of one request to the store.
    s3_timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: How long a presigned URL the files API redirects to stays valid.
    s3_presign_ttl_s: int = Field(default=300, ge=10, le=7 * 24 * 3600)

    @model_validator(mode="after")
    def _s3_complete(self) -> Settings:
        """A store that cannot work stops the start, said in one line."""
        if self.s3_url is None:
            return self
        from urllib.parse import urlsplit

        url = urlsplit(self.s3_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"IMPROV_S3_URL must be an http:// or https:// URL, not {self.s3_url!r}")
        if not self.s3_bucket:
            raise ValueError("IMPROV_S3_URL needs IMPROV_S3_BUCKET (the bucket sessions go to)")
        if self.s3_prefix.startswith("/") or (self.s3_prefix and not self.s3_prefix.endswith("/")):
            raise ValueError("IMPROV_S3_PREFIX must be empty or end with / (and not start with /),"
                             f" not {self.s3_prefix!r}")
        if self.s3_retry_min_s > self.s3_retry_max_s:
            raise ValueError("IMPROV_S3_RETRY_MIN_S must not be above IMPROV_S3_RETRY_MAX_S")
        return self

    # --- Past one machine (docs/architecture.md "Many machines"; docs/deploy.md) ---
    #: This node's name among several: where its sessions are (the catalog's node_id), in
    #: logs and metrics. Defaults to the machine's host name; nodes that share a machine
    #: (tests, a staging box) each need their own.
    node_id: str = Field(default_factory=socket.gethostname,
                         min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    #: PostgreSQL shared by every node (postgresql://user:password@host:port/db): the catalog,
    #: events, webhook deliveries, reader tokens and revocations of all of them; the schema is
    #: migrated at start (improv_capture/database/migrations/postgres/). Unset: SQLite in the
    #: data dir, for one machine.
    database_url: SecretStr | None = None
    #: Connections one node keeps to PostgreSQL at most.
    database_pool_size: int = Field(default=10, ge=1, le=100)
    #: Connect (and take a pooled connection) within this, else the database counts as
    #: unavailable: catalog writes and events wait in the outbox, reads answer 503.
    database_timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: How long a starting node waits for PostgreSQL to answer before it gives up.
    database_start_timeout_s: float = Field(default=30.0, gt=0, le=600)
    #: Catalog writes and events kept in the data dir (outbox.jsonl) while the database is
    #: unavailable, replayed in order when it is back. Past this size new ones are refused
    #: (logged; a session's catalog row is rebuilt from its directory at the next start).
    outbox_max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024, le=2**34)
    #: How often the outbox tries the database again.
    outbox_retry_s: float = Field(default=2.0, gt=0, le=300)

    #: Redis shared by every node (redis://[:password@]host:port/db): nodes register there with
    #: a heartbeat, new rooms are placed on the node with the most headroom, each room's owner
    #: is kept there and operator requests reach it through there (improv_capture/nodes/).
    #: Needs IMPROV_OPERATOR_TOKEN and IMPROV_SECRET_KEY, the same on every node. Unset: one node.
    redis_url: SecretStr | None = None
    #: Every Redis key under this prefix (several deployments may share one Redis).
    redis_key_prefix: str = Field(default="improv:", min_length=1, max_length=64)
    #: Bound on one Redis call; past it Redis counts as unavailable (rooms go on regardless).
    redis_timeout_s: float = Field(default=1.0, gt=0, le=30)
    #: A node beats this often, and drops out of the live nodes this long after its last beat.
    node_heartbeat_s: float = Field(default=2.0, gt=0, le=60)
    node_ttl_s: float = Field(default=10.0, gt=0, le=600)
    #: The CPU load a node reports for its headroom: the machine's (a node per machine), or
    #: this process's own share of the machine's cores (nodes that share a machine).
    node_cpu: Literal["machine", "process"] = "machine"
    #: How long a request sent to another node (an operator's, for a room there) waits for
    #: its answer before 504.
    node_call_timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: A recording that went on here after its node died waits this long for that node to
    #: come back with its part (then fetched and joined: recorder/continued.py); the part
    #: stays a session of its own on that node after.
    node_part_wait_s: float = Field(default=7 * 24 * 3600.0, gt=0, le=90 * 24 * 3600.0)

    @model_validator(mode="after")
    def _nodes_complete(self) -> Settings:
        if self.redis_url is None:
            return self
        from urllib.parse import urlsplit

        url = urlsplit(self.redis_url.get_secret_value())
        if url.scheme not in ("redis", "rediss") or not url.hostname:
            raise ValueError(f"IMPROV_REDIS_URL must be a redis:// or rediss:// URL (scheme {url.scheme!r})")
        if not self.operator_token or not self.secret_key:
            raise ValueError("IMPROV_REDIS_URL needs IMPROV_OPERATOR_TOKEN and IMPROV_SECRET_KEY, the same"
                             " on every node (a node answers for the others' rooms and invites)")
        if self.workers > 1 or self.worker_index is not None:
            raise ValueError("IMPROV_REDIS_URL with IMPROV_WORKERS above 1 is not supported yet:"
                             " run one node per machine")
        if self.node_ttl_s <= self.node_heartbeat_s:
            raise ValueError("IMPROV_NODE_TTL_S must be longer than IMPROV_NODE_HEARTBEAT_S")
        return self

    @model_validator(mode="after")
    def _database_url_is_postgres(self) -> Settings:
        if self.database_url is not None:
            from urllib.parse import urlsplit

            url = urlsplit(self.database_url.get_secret_value())
            if url.scheme not in ("postgresql", "postgres") or not url.hostname:
                raise ValueError("IMPROV_DATABASE_URL must be a postgresql://user:password@host:port/db"
                                 f" URL (scheme {url.scheme!r})")
        return self

    log_level: str = "info"
    #: text (a line per record, for a terminal) or json (one object per line: ts, level,
    #: logger, message and the room_id, session_id and performer_id it is about, for a log
    #: shipper; improv_capture/observability/logs.py).
    log_format: Literal["text", "json"] = "text"

    # --- Monitoring (improv_capture/observability/) ---
    #: A bearer token that reads /metrics and nothing else, for a Prometheus scraper (the
    #: operator token reads it too). Unset: only the operator token does.
    metrics_token: str | None = Field(default=None, min_length=16)
    #: Free space the data dir must keep: below it /readyz answers 503 (``disk_free``), so a
    #: load balancer sends no new performers to a server that cannot record them.
    min_free_bytes: int = Field(default=1024**3, ge=0)
    #: How long one readiness or metrics probe of the disk or the index may take; past it the
    #: check fails (a hung disk), and the probe still running is awaited by the next request
    #: rather than a new one started.
    probe_timeout_s: float = Field(default=2.0, gt=0, le=30)
    #: The performer page and its assets (static/ at the repository root).
    static_dir: Path = Path(__file__).resolve().parent.parent / "static"

    @cached_property
    def consent_sha256(self) -> str:
        return hashlib.sha256(self.consent_text.encode("utf-8")).hexdigest()

    @property
    def sessions_dir(self) -> Path:
        return self.data_dir / "sessions"

    @property
    def uploads_dir(self) -> Path:
        """Chunks of high-quality copies not yet placed in their session (never inside one:
        SHA256SUMS covers every file of a session directory)."""
        return self.data_dir / "uploads"

    @property
    def is_primary(self) -> bool:
        """Serves the catalog, events and webhooks: a lone server, or worker 0 of a cluster."""
        return not self.worker_index

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"
