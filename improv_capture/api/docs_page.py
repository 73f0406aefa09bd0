"""/docs: Swagger UI served from this server, not from a CDN, with no inline script, so that the
same Content-Security-Policy as every page (api/http_guard.py) holds for it: nothing of
another origin runs next to the operator's token. ReDoc is not offered (it needs inline styles
and blob: workers); /openapi.json is the machine-readable contract."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

#: Swagger UI's bundle and stylesheet as the fastapi-offline package ships them.
SWAGGER_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="referrer" content="no-referrer">
  <link rel="icon" href="data:,">
  <title>improv-capture · HTTP API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</head>
<body><div id="swagger-ui"></div></body>
</html>
"""

DOCS_INIT = """window.addEventListener('DOMContentLoaded', () => {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout',
  });
});
"""


def add_api_docs(app: FastAPI) -> None:
    """Needs ``FastAPI(docs_url=None, redoc_url=None)``: FastAPI's own pages load a CDN."""
    if not (SWAGGER_ASSETS / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"Swagger UI assets missing in {SWAGGER_ASSETS}")

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> HTMLResponse:
        return HTMLResponse(DOCS_PAGE)

    @app.get("/docs/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")

    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_ASSETS), name="docs-assets")
