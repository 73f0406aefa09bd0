"""A reader's request for a session that another node holds (its directory is in that node's
data dir: the catalog's node_url), answered through this node: forwarded with the reader's own
token (tokens are shared by every node's database) and its Range, streamed back as it comes.
A redirect would not do: HTTP clients drop the Authorization header on a redirect to another
origin. A redirect the holder answers (its presigned store URL) is passed on as it is."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import HTTPException, Request, status
from fastapi.responses import Response, StreamingResponse

#: request headers a reader's fetch depends on, and response headers passed back
FORWARDED_REQUEST = ("authorization", "range", "if-none-match", "if-range")
FORWARDED_RESPONSE = ("content-type", "content-length", "content-range", "accept-ranges", "etag",
                      "x-content-sha256", "location", "cache-control", "last-modified")
#: marks a forwarded request: the node it reaches answers it itself (never forwards it again)
FORWARDED_HEADER = "x-improv-forwarded"
#: connect within this, and wait this long at most between two reads of the holder's answer
TIMEOUT_S = 10.0
CHUNK = 256 * 1024


async def forward(request: Request, node_url: str) -> Response:
    """The holder's answer to the same path and query (502 when it cannot be reached)."""
    target = node_url.rstrip("/") + request.url.path
    if request.url.query:
        target += "?" + request.url.query
    headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_REQUEST}
    headers[FORWARDED_HEADER] = "1"
    client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
    try:
        upstream = await client.send(client.build_request("GET", target, headers=headers), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        raise HTTPException(status.HTTP_502_BAD_GATEWAY,
                            f"the node holding this session ({node_url}) cannot be reached") from exc

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw(CHUNK):
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    passed = {k: v for k, v in upstream.headers.items() if k.lower() in FORWARDED_RESPONSE}
    return StreamingResponse(body(), status_code=upstream.status_code, headers=passed)
