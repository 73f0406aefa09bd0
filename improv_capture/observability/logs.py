"""The server's log lines: text (the default) or one JSON object per line
(``IMPROV_LOG_FORMAT=json``), each carrying the room, session and performer it is about.

Those ids live in context variables, set where a request, a socket or a recording takes up a
room, a session or a performer; every line logged from there on (in tasks and threads started
from there too: asyncio copies the context) carries them, whoever logs it. No line needs to
name them itself. Secrets stay out as before: the redaction filters (api/http_guard.py) change
a record before any formatter sees it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.requests import HTTPConnection

from improv_capture.settings import Settings

#: The ids a log line may carry, in the order a JSON line lists them.
ID_NAMES = ("room_id", "session_id", "performer_id")
_IDS: dict[str, ContextVar[str | None]] = {
    name: ContextVar(f"improv_log_{name}", default=None) for name in ID_NAMES
}


def bind(**ids: str | None) -> None:
    """Tag every later line of the current task (and what it starts) with ``ids``. For a task
    that handles one room or performer to its end: a request, a socket."""
    for name, value in ids.items():
        _IDS[name].set(value)


@contextmanager
def log_ids(**ids: str | None) -> Iterator[None]:
    """Tag the lines logged inside the block with ``ids``; the previous ones come back after
    it (for code that handles one room among many, e.g. a recording stopped at shutdown)."""
    tokens = [(_IDS[name], _IDS[name].set(value)) for name, value in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_ids() -> dict[str, str]:
    return {name: value for name, var in _IDS.items() if (value := var.get()) is not None}


async def path_ids(connection: HTTPConnection) -> None:
    """An app-wide dependency: a route whose path names a room, session or performer tags the
    lines of its request or socket with them (set before the route runs, so its own lines and
    the access log line carry them)."""
    params = connection.path_params
    found = {name: params[name] for name in ID_NAMES if isinstance(params.get(name), str)}
    if found:
        bind(**found)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the ids of the line's context,
    and exc (the traceback) when there is one."""

    def __init__(self, worker_index: int | None = None) -> None:
        super().__init__()
        self.worker_index = worker_index

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker_index is not None:
            line["worker"] = self.worker_index
        line.update(current_ids())
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exc"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    """The root logger of `serve` (a lone server, a worker or the router), in the format the
    settings name. In JSON every line goes through the root handler: uvicorn is given no
    logging config of its own (api/http_server.py), and Python warnings become lines too."""
    level = settings.log_level.upper()
    if settings.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter(settings.worker_index))
        logging.basicConfig(level=level, handlers=[handler], force=True)
        logging.captureWarnings(True)
        return
    who = f"worker {settings.worker_index} " if settings.worker_index is not None else ""
    logging.basicConfig(level=level, format=f"%(asctime)s {who}%(levelname)s %(name)s: %(message)s")
