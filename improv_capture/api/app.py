"""The ASGI application: routes, static pages, error shapes and the lifespan of live rooms."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from improv_capture import secrets_store
from improv_capture.api.console_socket import ConsoleSocket
from improv_capture.api.docs_page import add_api_docs
from improv_capture.api.earlier_parts import EarlierParts
from improv_capture.api.http_guard import error_response
from improv_capture.api.network_probe import NetworkProbes
from improv_capture.api.node_routing import NodeRouting, answer_request
from improv_capture.api.node_wiring import RoomCopies, node_of, revoked_here
from improv_capture.api.operator_routes import router
from improv_capture.api.performer_socket import PerformerSocket
from improv_capture.api.reader_routes import router as sessions_router
from improv_capture.api.upload_forward import UploadForward
from improv_capture.api.upload_routes import router as uploads_router
from improv_capture.cluster.internal_api import PrimaryNotifier
from improv_capture.cluster.internal_api import router as internal_router
from improv_capture.database.base import DatabaseUnavailable
from improv_capture.downstream.service import Downstream
from improv_capture.media import aiortc_hooks
from improv_capture.media.sdp_policy import server_gathering_addresses
from improv_capture.observability import health, metrics
from improv_capture.observability.logs import path_ids
from improv_capture.recorder.recover import recover_sessions
from improv_capture.rooms.factory import PASSTHROUGH, MediaFactory
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import InviteSigner
from improv_capture.rooms.store import RoomStore, rooms_file, rooms_of_other_workers
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)


def media_factory(settings: Settings) -> MediaFactory:
    """The product relays and records media undecoded; IMPROV_RELAY_MODE=transcode swaps in
    the benchmark's decode-and-re-encode baseline (scripts/bench_rooms.py), the one place
    that design is chosen."""
    if settings.relay_mode == "transcode":
        # imported here only: the product never loads the benchmark's module
        from improv_capture.bench.transcode_baseline import TRANSCODE

        return TRANSCODE
    return PASSTHROUGH


def create_app(settings: Settings) -> FastAPI:
    aiortc_hooks.install()
    aiortc_hooks.restrict_ice_addresses(server_gathering_addresses(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    operator_token = secrets_store.operator_token(settings)
    secret_key = secrets_store.invite_key(settings)
    store = RoomStore(rooms_file(settings.data_dir, settings.worker_index))
    webhook_secret = settings.webhook_secret or secrets_store.load_or_create(
        settings.data_dir / "webhook_secret"
    )
    downstream = Downstream(settings, webhook_secret)
    notifier = None
    if not settings.is_primary:
        if not settings.primary_url:
            raise ValueError("a worker other than 0 needs IMPROV_PRIMARY_URL")
        notifier = PrimaryNotifier(settings.primary_url, operator_token)
    sessions = notifier or downstream
    hub = Hub(settings, store, sessions, media_factory(settings))
    network_probes = NetworkProbes(settings)  # the performer page's network check
    probes = health.Probes(settings, downstream.db)
    # only a lone server or a cluster's primary delivers webhooks
    nodes = node_of(settings, store)
    exporter = metrics.Metrics(settings, hub, probes,
                               downstream.deliverer if notifier is None else None,
                               downstream.outbox if notifier is None else None, nodes)
    consoles: set[ConsoleSocket] = set()
    earlier_parts: EarlierParts | None = None
    if nodes is not None:
        # rooms outlive their node: a copy in Redis, taken in by the node they move to
        RoomCopies(nodes, hub, store)

        def tell_consoles() -> None:
            """Another node's rooms changed: the consoles here list every node's rooms."""
            for console in list(consoles):
                console.rooms_changed()

        nodes.heard_rooms_changed = tell_consoles
        # a recording that went on here gets the part its dead node recorded, once it is back
        earlier_parts = EarlierParts(settings, operator_token, sessions.session_updated)
        nodes.part_recovered = earlier_parts.heard

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # in a cluster, the sessions of rooms that another worker owns may be live
        skip = await asyncio.to_thread(
            rooms_of_other_workers, settings.data_dir, settings.worker_index
        )
        recovered = await asyncio.to_thread(recover_sessions, settings.sessions_dir, skip)
        if notifier is None:
            await downstream.start()
        else:
            await downstream.open()
            notifier.start()
        for manifest in recovered:
            logger.warning("recovered interrupted session %s as %s",
                           manifest["session_id"], manifest["state"])
            await sessions.session_finalised(settings.sessions_dir / manifest["session_id"])
        await hub.start()
        if nodes is not None:
            await nodes.start(lambda request: answer_request(app, request))
            await nodes.save_owned({rid: room.snapshot() for rid, room in store.rooms.items()})
            await nodes.tell_parts_recovered([m["session_id"] for m in recovered])
        # a revocation made through any node leaves this node's live rooms too
        downstream.events.on_event(lambda event: revoked_here(hub, event))
        yield
        if nodes is not None:
            await nodes.stop()
        if earlier_parts is not None:
            await earlier_parts.stop()
        await network_probes.close()
        await hub.shutdown()
        if notifier is None:
            await downstream.stop()
        else:
            await notifier.stop()
            await downstream.tokens.stop()
        await downstream.close()

    # every route whose path names a room, session or performer tags its log lines with them
    app = FastAPI(title="improv-capture", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # /docs: api/docs_page.py
                  dependencies=[Depends(path_ids)])
    app.add_middleware(metrics.TrafficCounter, traffic=exporter.traffic)
    if nodes is not None:
        app.add_middleware(NodeRouting, nodes=nodes, store=store, operator_token=operator_token)
        app.add_middleware(UploadForward, nodes=nodes, store=store, sessions_dir=settings.sessions_dir)
    app.state.nodes = nodes
    app.state.settings = settings
    app.state.operator_token = operator_token
    app.state.signer = InviteSigner(secret_key)
    app.state.store = store
    app.state.hub = hub
    app.state.downstream = downstream
    app.state.probes = probes
    app.state.metrics = exporter

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(DatabaseUnavailable)
    async def database_unavailable(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        # PostgreSQL restarting or cut off: what was asked can be asked again shortly
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the database is unavailable; retry later"},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    app.include_router(health.router)  # /healthz, /readyz
    app.include_router(metrics.router)  # /metrics
    app.include_router(router)
    app.include_router(sessions_router)
    app.include_router(uploads_router)
    add_api_docs(app)
    if settings.worker_index is not None:
        app.include_router(internal_router)

    @app.websocket("/api/v1/signal")
    async def signal(websocket: WebSocket) -> None:
        await PerformerSocket(websocket, hub, app.state.signer, network_probes, nodes).run()

    @app.websocket("/api/v1/operator")
    async def operator(websocket: WebSocket) -> None:
        await ConsoleSocket(websocket, hub, operator_token, nodes, consoles).run()

    static_dir = settings.static_dir

    @app.get("/join", include_in_schema=False)
    async def performer_page() -> FileResponse:
        return FileResponse(static_dir / "performer.html", headers={"Cache-Control": "no-store"})

    @app.get("/console", include_in_schema=False, response_model=None)
    async def console_page() -> FileResponse | HTMLResponse:
        console = static_dir / "console.html"
        if console.exists():
            return FileResponse(console, headers={"Cache-Control": "no-store"})
        return HTMLResponse(
            "<!doctype html><title>improv-capture</title><p>The operator console is not built "
            "yet; use the HTTP API (<a href='/docs'>/docs</a>).</p>"
        )

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console")

    app.mount("/static", StaticFiles(directory=static_dir), name="static")
    return app
