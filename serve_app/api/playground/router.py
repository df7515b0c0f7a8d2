"""The browser playground: ``/`` and its assets under ``/static/``, shipped in the package.

A new user's first request is usually a browser opening the root URL; it must land on a page
that makes an image, not on a JSON 404. The page is a client of the public API only, so it needs
no key to load (its API calls carry the key) and no route of its own beyond its files.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from serve_app.core.errors import NotFoundError

# The only files served: a fixed list, so no request path ever reaches the file system.
ASSETS: dict[str, str] = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
}
# Only this origin's scripts and styles; images from anywhere (S3 presigned URLs live elsewhere).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src * data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": CONTENT_SECURITY_POLICY}


def _read(name: str) -> bytes:
    return (files("serve_app.api.playground") / "static" / name).read_bytes()


def create_playground_router() -> APIRouter:
    # Read once at startup: a missing file fails the replica's start, not a user's request.
    page = _read("index.html")
    assets = {name: _read(name) for name in ASSETS}
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=Response)
    async def playground() -> Response:
        # no-cache: after an upgrade the page and the API it calls must match.
        return Response(
            page, media_type="text/html; charset=utf-8", headers={**_HEADERS, "Cache-Control": "no-cache"}
        )

    @router.get("/static/{name}", response_class=Response)
    async def asset(name: str) -> Response:
        if name not in assets:
            raise NotFoundError("No such file.", param="name")
        return Response(
            assets[name], media_type=ASSETS[name], headers={**_HEADERS, "Cache-Control": "no-cache"}
        )

    return router
