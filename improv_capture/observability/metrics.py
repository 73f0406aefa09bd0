"""``/metrics`` in Prometheus' text format: what runs now, read from the live state at each
scrape, and the few counters no state holds (HTTP requests, WebSockets), counted in one
place, :class:`TrafficCounter`.

Each app has its own registry (tests run several apps in one process). A scrape first takes
the looks that block (free disk space, the webhook backlog) in threads, bounded in time
(health.py's Probes), then renders the registry on the event loop, where the rooms are read
in one go with nothing changing under it. Label values stay bounded: a performer's series
exist while the performer sits in a room, an upload's while it is still taking chunks, a
route is its template (``/api/v1/rooms/{room_id}``), never the path a client sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from improv_capture.api.http_guard import bearer_of
from improv_capture.downstream.outbox import Outbox
from improv_capture.downstream.webhooks import Deliverer
from improv_capture.nodes.service import Nodes
from improv_capture.observability.health import Probes
from improv_capture.rooms.hq_uploads import SETTLED
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import tokens_equal
from improv_capture.rooms.recording import Recording
from improv_capture.rooms.store import RoomStore
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)

#: Methods counted by name; any other (a client may send any token) counts as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
HQ_STATES = ("pending", "uploading", *SETTLED)


def route_label(scope: Scope) -> str:
    """The template of the route that took the request (the router leaves it in the scope);
    ``unmatched`` for a path no route takes (a 404 before any route)."""
    route = scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None) or UNMATCHED


class Traffic:
    """The counters of what reached the app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.http_requests = Counter(
            "improv_http_requests", "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"], registry=registry)
        self.websockets_opened = Counter(
            "improv_websockets_opened", "WebSockets accepted, by route (/api/v1/signal: "
            "performers, /api/v1/operator: consoles).", ["route"], registry=registry)
        self.websockets_closed = Counter(
            "improv_websockets_closed", "WebSockets ended after being accepted, by route.",
            ["route"], registry=registry)
        self.websockets_open = Gauge(
            "improv_websockets_open", "WebSockets open now, by route.", ["route"], registry=registry)


class TrafficCounter:
    """Counts every HTTP request when its answer starts (its status; 500 when the app raised
    before answering) and every WebSocket when it is accepted and when it ends."""

    def __init__(self, app: ASGIApp, traffic: Traffic) -> None:
        self.app = app
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered: int | None = None

        async def counted(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and answered is None:
                answered = int(message["status"])
                method = scope["method"] if scope["method"] in METHODS else "other"
                self.traffic.http_requests.labels(method, route_label(scope), str(answered)).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except Exception:
            if answered is None:
                method = scope["method"] if scope["method"] in METHODS else "other"
                self.traffic.http_requests.labels(method, route_label(scope), "500").inc()
            raise

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        route: str | None = None

        async def counted(message: Message) -> None:
            nonlocal route
            if message["type"] == "websocket.accept" and route is None:
                route = route_label(scope)
                self.traffic.websockets_opened.labels(route).inc()
                self.traffic.websockets_open.labels(route).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            if route is not None:
                self.traffic.websockets_closed.labels(route).inc()
                self.traffic.websockets_open.labels(route).dec()


class LatestStats:
    """Every room's latest per-second stats, heard as a console hears them (a listener of
    the hub's stats fan-out, rooms/stats_fanout.py): the sampler runs once a second for all,
    and a scrape reads its last result instead of sampling again. A deleted room's go with it."""

    def __init__(self, store: RoomStore) -> None:
        self.store = store
        self.rooms: dict[str, dict[str, Any]] = {}

    def rooms_changed(self) -> None:
        for gone in [room_id for room_id in self.rooms if room_id not in self.store.rooms]:
            del self.rooms[gone]

    def stats(self, room_id: str, performers: dict[str, Any]) -> None:
        self.rooms[room_id] = performers


def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


def counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class LiveState(Collector):
    """The rooms, performers, recordings, uploads, disk and webhooks as they are now."""

    def __init__(self, settings: Settings, hub: Hub, probes: Probes,
                 deliverer: Deliverer | None, outbox: Outbox | None = None,
                 nodes: Nodes | None = None) -> None:
        self.settings = settings
        self.hub = hub
        self.probes = probes
        self.deliverer = deliverer
        self.outbox = outbox
        self.nodes = nodes
        self.latest = LatestStats(hub.store)
        hub.stats.listeners.add(self.latest)
        self._free_bytes: int | None = None
        self._deliveries: dict[str, int] | None = None

    async def refresh(self) -> None:
        """The looks that block, before the registry is rendered; one that fails or times out
        leaves its series out of this scrape (and says why in the log)."""
        looks: dict[str, Awaitable[Any]] = {"disk space": self.probes.free_bytes()}
        if self.deliverer is not None:  # only the process that delivers webhooks
            looks["webhook backlog"] = self.probes.once("webhooks", self.deliverer.backlog)
        results = dict(zip(looks, await asyncio.gather(*looks.values(), return_exceptions=True)))
        for look, result in results.items():
            if isinstance(result, BaseException):
                logger.warning("metrics: the %s look failed: %r", look, result)
        free, deliveries = results["disk space"], results.get("webhook backlog")
        self._free_bytes = free if isinstance(free, int) else None
        self._deliveries = deliveries if isinstance(deliveries, dict) else None

    def collect(self) -> Iterator[Metric]:
        yield from self._rooms()
        yield from self._uploads()
        disk = gauge("improv_data_dir_free_bytes",
                     "Free space on the data dir's filesystem.")
        if self._free_bytes is not None:
            disk.add_metric([], self._free_bytes)
        yield disk
        floor = gauge("improv_data_dir_min_free_bytes",
                      "IMPROV_MIN_FREE_BYTES: below it /readyz answers 503.")
        floor.add_metric([], self.settings.min_free_bytes)
        yield floor
        webhooks = gauge("improv_webhook_deliveries",
                         "Webhook deliveries not yet made (pending) and given up (failed).",
                         ["status"])
        for state, count in (self._deliveries or {}).items():
            webhooks.add_metric([state], count)
        yield webhooks
        if self.outbox is not None:
            yield GaugeMetricFamily(
                "improv_index_outbox_entries",
                "Catalog writes and events waiting in the data dir for the database (0 while it "
                "answers).", value=self.outbox.waiting)
        if self.nodes is not None:
            yield GaugeMetricFamily(
                "improv_node_registered",
                "1 while this node's heartbeat reaches Redis (IMPROV_REDIS_URL).",
                value=int(self.nodes.registry.registered))

    def _rooms(self) -> Iterator[Metric]:
        rooms = list(self.hub.store.rooms.values())
        states = {"joined": 0, "reconnecting": 0}
        performer = ["room_id", "performer_id"]
        track = [*performer, "kind"]
        bitrate = gauge("improv_performer_bitrate_bits_per_second",
                        "What a performer sends, over the last second, by kind.", track)
        loss = gauge("improv_performer_packet_loss_ratio",
                     "Share of a performer's packets lost on the way in, over the last "
                     "second, by kind.", track)
        lost = counter("improv_performer_packets_lost",
                       "Packets of a performer lost on the way in since it last published.", track)
        jitter = gauge("improv_performer_jitter_seconds",
                       "Interarrival jitter of what a performer sends, by kind.", track)
        fps = gauge("improv_performer_video_frames_per_second",
                    "Video frames a performer sent over the last second.", performer)
        rtt = gauge("improv_performer_rtt_seconds",
                    "Round trip to a performer (from its receiver reports).", performer)
        queue = gauge("improv_recorder_queue_items",
                      "Items waiting for a recording's writer thread, by room.", ["room_id"])
        dropped = counter("improv_recorder_dropped_items",
                          "Items a recording dropped into gaps (its queue was full), since it "
                          "started, by room.", ["room_id"])
        recording_rooms = 0
        for room in rooms:
            sampled = self.latest.rooms.get(room.room_id, {})
            for member in room.members.values():
                states[member.state] = states.get(member.state, 0) + 1
                stats = sampled.get(member.performer_id)
                if stats is None:
                    continue
                ids = [room.room_id, member.performer_id]
                for kind in ("video", "audio"):
                    t = stats.get(kind)
                    if not t:
                        continue
                    bitrate.add_metric([*ids, kind], t["bitrate_kbps"] * 1000)
                    loss.add_metric([*ids, kind], t["loss_pct"] / 100)
                    lost.add_metric([*ids, kind], max(t["packets_lost"], 0))
                    jitter.add_metric([*ids, kind], t["jitter_ms"] / 1000)
                    if kind == "video":
                        fps.add_metric(ids, t["fps"])
                if stats.get("rtt_ms") is not None:
                    rtt.add_metric(ids, stats["rtt_ms"] / 1000)
            if room.recording is not None:
                recording_rooms += 1
                if isinstance(room.recording, Recording):
                    queue.add_metric([room.room_id], room.recording.writer.queued)
                    dropped.add_metric([room.room_id], room.recording.writer.dropped)
        yield GaugeMetricFamily("improv_rooms", "Rooms this process keeps.", value=len(rooms))
        members = gauge("improv_performers",
                        "Performers seated in rooms: joined (socket connected) or "
                        "reconnecting (seat held for the reconnect grace).", ["state"])
        for state, count in states.items():
            members.add_metric([state], count)
        yield members
        yield GaugeMetricFamily("improv_recordings", "Rooms recording now.", value=recording_rooms)
        yield GaugeMetricFamily(
            "improv_recorder_queue_capacity_items",
            "IMPROV_RECORDER_QUEUE: a recording's queue; when full it drops into a gap.",
            value=self.settings.recorder_queue)
        yield from (bitrate, loss, lost, jitter, fps, rtt, queue, dropped)

    def _uploads(self) -> Iterator[Metric]:
        """Studio rooms' high-quality copies: how many in each state (settled ones stay
        counted for a while, rooms/hq_uploads.py), and the progress of those still open."""
        entries = list(self.hub.uploads.progress.values())
        counts = dict.fromkeys(HQ_STATES, 0)
        upload = ["room_id", "session_id", "performer_id"]
        received = gauge("improv_hq_upload_received_bytes",
                         "Bytes of a high-quality copy received so far.", upload)
        acked = gauge("improv_hq_upload_acked_chunks",
                      "Chunks of a high-quality copy stored so far.", upload)
        recorded = gauge("improv_hq_upload_recorded_chunks",
                         "Chunks the browser says it recorded (once it said).", upload)
        for entry in entries:
            counts[entry["state"]] = counts.get(entry["state"], 0) + 1
            if entry["state"] in SETTLED:
                continue
            ids = [entry["room_id"], entry["session_id"], entry["performer_id"]]
            received.add_metric(ids, entry["bytes"])
            acked.add_metric(ids, entry["chunks"]["acked"])
            if entry["chunks"]["recorded"] is not None:
                recorded.add_metric(ids, entry["chunks"]["recorded"])
        states = gauge("improv_hq_uploads",
                       "High-quality copies by upload state.", ["state"])
        for state, count in counts.items():
            states.add_metric([state], count)
        yield from (states, received, acked, recorded)


class Metrics:
    """One app's registry: its traffic counters, its live state, the process' own numbers."""

    def __init__(self, settings: Settings, hub: Hub, probes: Probes,
                 deliverer: Deliverer | None, outbox: Outbox | None = None,
                 nodes: Nodes | None = None) -> None:
        disable_created_metrics()  # a `_created` twin of every counter series: noise here
        self.registry = CollectorRegistry(auto_describe=False)
        self.traffic = Traffic(self.registry)
        self.live = LiveState(settings, hub, probes, deliverer, outbox, nodes)
        self.registry.register(self.live)
        ProcessCollector(registry=self.registry)
        self.metrics_token = settings.metrics_token

    def allowed(self, token: str | None, operator_token: str) -> bool:
        if token is None:
            return False
        return tokens_equal(token, operator_token) or (
            self.metrics_token is not None and tokens_equal(token, self.metrics_token))

    async def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The registry in the format the scraper asks for (``Accept``): Prometheus' text
        format, or OpenMetrics; and its content type."""
        await self.live.refresh()
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format, for the operator token or IMPROV_METRICS_TOKEN (docs/api.md)."""
    state = request.app.state
    exporter: Metrics = state.metrics
    if not exporter.allowed(bearer_of(request.headers.get("authorization")), state.operator_token):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a metrics or operator token is needed",
                            headers={"WWW-Authenticate": "Bearer"})
    body, content_type = await exporter.exposition(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
