"""The browser playground: ``/`` and its assets under ``/static/``, shipped in the package.

A new user's first request is usually a browser opening the root URL; it must land on a page
that makes an image, not on a JSON 404. The page is a client of the public API only, so it needs
no key to load (its API calls carry the key) and no route of its own beyond its files.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from serve_app.core.errors import NotFoundError

# What each kind of asset is served as. A module script must come with a JavaScript type, or the
# browser refuses to run it (strict MIME checking for <script type="module">, and nosniff).
CONTENT_TYPES: dict[str, str] = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
# Only this origin's scripts and styles; images from anywhere (S3 presigned URLs live elsewhere).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src * data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": CONTENT_SECURITY_POLICY}


def _static() -> Traversable:
    return files("serve_app.api.playground") / "static"


def asset_names() -> list[str]:
    """Every asset under ``static/`` (index.html aside), as paths relative to it: ``js/main.js``.

    Listed once at startup, so the served set is fixed and no request path ever reaches the file
    system; a file of a kind with no content type fails the start instead of being served untyped.
    """
    names: list[str] = []
    folders: list[tuple[str, Traversable]] = [("", _static())]
    while folders:
        prefix, folder = folders.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                folders.append((f"{prefix}{entry.name}/", entry))
            elif entry.name != "index.html":
                if Path(entry.name).suffix not in CONTENT_TYPES:
                    raise RuntimeError(f"playground asset {prefix}{entry.name} has no known content type")
                names.append(f"{prefix}{entry.name}")
    return sorted(names)


def _read(name: str) -> bytes:
    return _static().joinpath(*name.split("/")).read_bytes()


def create_playground_router() -> APIRouter:
    # Read once at startup: a missing file fails the replica's start, not a user's request.
    page = _read("index.html")
    assets = {name: (_read(name), CONTENT_TYPES[Path(name).suffix]) for name in asset_names()}
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=Response)
    async def playground() -> Response:
        # no-cache: after an upgrade the page and the API it calls must match.
        return Response(
            page, media_type="text/html; charset=utf-8", headers={**_HEADERS, "Cache-Control": "no-cache"}
        )

    @router.get("/static/{name:path}", response_class=Response)
    async def asset(name: str) -> Response:
        if name not in assets:
            raise NotFoundError("No such file.", param="name")
        body, content_type = assets[name]
        return Response(body, media_type=content_type, headers={**_HEADERS, "Cache-Control": "no-cache"})

    return router
