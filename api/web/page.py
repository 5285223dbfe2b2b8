"""The web page: `/` and its assets under `/static/`, straight from `api/web/static/`.

A chat with the todo assistant (through the todo API) or any other assistant of `/v1/models`
(through Chat Completions), with its tasks, its runs' tool calls (a line in words, the tool's name,
arguments and result behind a toggle), Stop, and a card per tool call a run stopped at for approval
(decided through the runs API). The round mark beside a pending task completes it with the todo
assistant's own `complete_task` tool, called over `/mcp` with the user's credential.

Plain files, no build step and nothing fetched from elsewhere at run time, so a fresh clone serves
them. The page is public (it holds no data); every data call it makes carries the user's key.

Caching: every response is `no-cache` with an ETag, so a browser revalidates each time (a cheap 304)
and never runs yesterday's script against today's API. The page gets a strict Content-Security-Policy:
its own origin only, no inline script or style, no frames, no plugins.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Explicit, so the answer does not depend on the host's /etc/mime.types.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

ASSET_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

PAGE_HEADERS = {
    **ASSET_HEADERS,
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class _Assets(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        content_type = CONTENT_TYPES.get(Path(full_path).suffix)
        if content_type is None:
            # Only the page's own kinds of file are served, whatever else lands in the folder.
            raise HTTPException(status_code=404)
        response = super().file_response(full_path, stat_result, scope, status_code)
        if response.status_code != 304:
            response.headers["Content-Type"] = content_type
        # The page is the page wherever it is fetched from: /static/index.html gets its policy too.
        response.headers.update(PAGE_HEADERS if content_type.startswith("text/html") else ASSET_HEADERS)
        return response


assets = _Assets(directory=STATIC_DIR)


async def index(request: Request) -> Response:
    return await assets.get_response("index.html", request.scope)


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Mount("/static", app=assets, name="static"),
]
