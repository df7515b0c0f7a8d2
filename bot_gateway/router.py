"""``POST /discord/interactions``: verify, then answer within Discord's 3-second deadline.

This module is the door: it reads the body (bounded), checks Discord's Ed25519 signature over the
raw bytes (Discord probes with bad signatures and drops an endpoint that accepts one), answers
PINGs, and hands every verified interaction to ``interactions.InteractionHandler``.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bot_gateway.interactions import InteractionContext, InteractionHandler
from bot_gateway.protocol import Interaction, InteractionType, ResponseType
from bot_gateway.verification import InvalidSignatureError, verify_interaction
from serve_app.config.credentials import CredentialSource
from serve_app.config.settings import AppSettings
from serve_app.core.errors import ServiceUnavailableError, error_body
from serve_app.jobs.runner import JobRunner
from serve_app.ops import metrics as service_metrics

logger = logging.getLogger("ray.serve")

MAX_BODY_BYTES = 1024 * 1024


def create_discord_router(
    settings: AppSettings, runner: JobRunner, credentials: CredentialSource
) -> APIRouter:
    router = APIRouter()
    handler = InteractionHandler(settings, runner, credentials)

    @router.post("/discord/interactions", include_in_schema=True, summary="Discord interactions endpoint")
    async def discord_interactions(request: Request) -> JSONResponse:
        received = time.perf_counter()
        try:
            return await _answer(request, handler, settings, credentials)
        finally:
            # Discord drops an interaction not answered within 3 s: this is the number to watch.
            service_metrics.discord_acked(time.perf_counter() - received)

    return router


async def _answer(
    request: Request, handler: InteractionHandler, settings: AppSettings, source: CredentialSource
) -> JSONResponse:
    credentials = await source.current()
    if not credentials.discord_configured:
        raise ServiceUnavailableError(
            "Discord is not configured: set DISCORD_PUBLIC_KEY and DISCORD_APPLICATION_ID "
            "(environment variables or app args) and restart the service."
        )
    body = await _read_limited(request, MAX_BODY_BYTES)
    if body is None:
        return _client_error(413, "Request body over 1 MiB.", "invalid_request_error")
    try:
        verify_interaction(
            body,
            request.headers.get("x-signature-ed25519"),
            request.headers.get("x-signature-timestamp"),
            str(credentials.discord_public_key),
        )
    except InvalidSignatureError as error:
        logger.info("rejected interaction: %s", error)
        service_metrics.rejected("auth")
        return _client_error(401, "Invalid request signature.", "authentication_error")
    try:
        document = json.loads(body)
        if isinstance(document, dict) and document.get("type") == InteractionType.PING:
            # Discord checks the endpoint with PINGs and needs nothing but the type to answer one.
            return JSONResponse({"type": ResponseType.PONG})
        interaction = Interaction.model_validate(document)
    except (ValueError, ValidationError) as error:
        return _client_error(400, f"Malformed interaction: {error}", "invalid_request_error")
    context = InteractionContext(
        received_at=time.time(),
        application_id=str(credentials.discord_application_id),
        base_url=settings.base_url_for(str(request.base_url)),
    )
    return JSONResponse(await handler.dispatch(interaction, context))


def _client_error(status: int, message: str, error_type: str) -> JSONResponse:
    return JSONResponse(error_body(message, error_type), status_code=status)


async def _read_limited(request: Request, limit: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
