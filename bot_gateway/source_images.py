"""Fetching the picture a Discord job starts from, and turning it into the job's image.

The URL comes from the interaction (an ``/imagine`` attachment, or the image on the message whose
button was clicked), and a signed interaction proves only that it came through Discord, not where
the URL points: a crafted one could aim the service at loopback, the VPC or the cloud metadata
endpoint. So only the hosts in ``discord_attachment_hosts`` (Discord's CDN by default) are
fetched; their names must still resolve to public addresses (``outbound_urls``), unless an entry
is an IP address or block (a test server on loopback); the connection goes to the address that was
checked, no redirect is followed, and the download stops at ``max_input_bytes``. What arrives is
decoded and checked like every other uploaded image (``image_inputs``).

Images this service stored (the U/V buttons, Vary and Upscale name them by id; a Source that is
one of our image URLs) are read from the store instead: nothing is fetched, and one that expired
or was deleted is a ``SourceImageError`` saying so.

All of it happens before Discord gets its answer, so it is bounded in time by the caller.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from urllib.parse import urlsplit

import httpx

from bot_gateway.messages import StartImage
from bot_gateway.webhook_client import USER_AGENT
from serve_app.config.settings import AppSettings
from serve_app.config.sizes import parse_size
from serve_app.core.errors import InvalidRequestError
from serve_app.core.image_inputs import check_strength, decode_image, image_specs, output_size
from serve_app.core.images import ImageSpec
from serve_app.core.outbound_urls import (
    AllowList,
    Destination,
    ForbiddenDestinationError,
    resolve_destination,
)
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.storage import ImageStore

GONE = (
    "That image is no longer stored (it expired or was deleted), so it cannot be used; "
    "🎲 Re-roll or /imagine draws the prompt again."
)


class SourceImageError(ValueError):
    """The picture cannot be used; the message is for the user (an ephemeral answer)."""


def host_allowed(url: str, entries: list[str]) -> bool:
    """Whether ``url`` is http(s) on a host the allow-list names (by name, or by address for IPs)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    allowed = AllowList.parse(entries)
    try:
        return allowed.allows_address(ipaddress.ip_address(host))
    except ValueError:
        return allowed.allows_host(host)


async def fetch_image(url: str, settings: AppSettings) -> bytes:
    entries = settings.discord_attachment_hosts
    if not host_allowed(url, entries):
        raise SourceImageError(
            "Images are only taken from Discord's own attachments "
            f"({', '.join(entries) or 'no host is allowed'})."
        )
    # Names were checked above; what they resolve to must be public. Only IP entries may be private.
    addresses_only = AllowList(frozenset(), AllowList.parse(entries).networks)
    try:
        destination = await resolve_destination(url, addresses_only)
    except ForbiddenDestinationError:
        raise SourceImageError("The image's address cannot be reached from here.") from None
    try:
        return await _get_pinned(destination, settings.max_input_bytes)
    except httpx.HTTPError as error:
        raise SourceImageError(f"The image could not be downloaded ({type(error).__name__}).") from None


async def _get_pinned(destination: Destination, limit: int) -> bytes:
    """GET the checked address while the server still sees its own name (Host, TLS SNI)."""
    original = httpx.URL(destination.url)
    pinned = original.copy_with(host=destination.address)
    headers = {"Host": original.netloc.decode("ascii").rpartition("@")[2], "User-Agent": USER_AGENT}
    extensions = {"sni_hostname": destination.host} if original.scheme == "https" else {}
    too_large = SourceImageError(f"The image is over the {limit / 1024 / 1024:.0f} MiB this bot takes.")
    # trust_env=False: a proxy from the environment would connect wherever the name resolves there.
    async with (
        httpx.AsyncClient(follow_redirects=False, trust_env=False) as http,
        http.stream("GET", pinned, headers=headers, extensions=extensions) as response,
    ):
        if response.status_code != 200:
            raise SourceImageError(
                f"Discord answered {response.status_code} for the image (attachment links expire)."
            )
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    return b"".join(chunks)


async def read_stored(image_id: str, store: ImageStore) -> bytes:
    png = await asyncio.to_thread(store.get_image, image_id)
    if png is None:
        raise SourceImageError(GONE)
    return png


async def start_image_specs(
    params: GenerationParams,
    start: StartImage,
    settings: AppSettings,
    store: ImageStore,
    count: int = 1,
) -> list[ImageSpec]:
    """The ``count`` jobs for ``params`` (consecutive seeds) starting from ``start``'s picture.

    Raises InvalidRequestError for options the service refuses (checked before anything is
    fetched) and SourceImageError for a picture it cannot use.
    """
    jobs = build_image_specs(params, count, settings)
    check_strength(start.strength, jobs[0].steps)
    if start.image_id is not None:
        data = await read_stored(start.image_id, store)
    else:
        data = await fetch_image(start.url, settings)
    try:
        image = await asyncio.to_thread(decode_image, data, "image", settings)
    except InvalidRequestError as error:
        raise SourceImageError(error.message.replace("'image' ", "The image ", 1)) from None
    if params.size is None:
        # No size chosen: the picture's own shape at about the default size's area, not squashed
        # into the default's shape.
        default_width, default_height = settings.default_dimensions
        scale = (default_width * default_height / (image.width * image.height)) ** 0.5
        width, height = parse_size(output_size(image, None, settings, scale))
        jobs = [replace(job, width=width, height=height) for job in jobs]
    # A model whose family cannot start from a picture (FLUX.2-klein) is refused, ephemerally.
    return await asyncio.to_thread(
        image_specs, jobs, start.kind, image, start.strength, catalogue=settings.catalogue
    )
