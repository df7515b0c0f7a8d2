"""``POST /discord/interactions``: verify, then answer within Discord's 3-second deadline.

Discord gives an interactions endpoint 3 seconds for its first answer. Rendering takes longer, so
``/imagine`` (and a button click) is answered at once with a deferred response (type 5, the
"thinking…" state), the render starts as a background task on this replica, and the result
arrives later by editing that message (see ``imagine_job``). Nothing in this request waits on
the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bot_gateway.admission import JobsPerUser, banned_word_in, guild_allowed
from bot_gateway.commands import IMAGINE, CommandOptionError, params_from_options
from bot_gateway.imagine_job import run_imagine
from bot_gateway.messages import REROLL_ID, RETRY_ID, UnreadableMessageError, params_from_embed
from bot_gateway.protocol import Interaction, InteractionType, ResponseType, ephemeral
from bot_gateway.verification import InvalidSignatureError, verify_interaction
from bot_gateway.webhook_client import DiscordWebhookClient
from serve_app.errors import InvalidRequestError, ServiceUnavailableError, error_body
from serve_app.predictions import PredictionRecord, PredictionService
from serve_app.schemas import GenerationParams, build_jobs
from serve_app.secret_source import CredentialSource
from serve_app.settings import AppSettings

logger = logging.getLogger("ray.serve")

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class _Context:
    received_at: float
    application_id: str
    base_url: str


def _client_error(status: int, message: str, error_type: str) -> JSONResponse:
    return JSONResponse(error_body(message, error_type), status_code=status)


class InteractionHandler:
    def __init__(
        self, settings: AppSettings, predictions: PredictionService, credentials: CredentialSource
    ) -> None:
        self._settings = settings
        self._predictions = predictions
        self._credentials = credentials
        self._limits = JobsPerUser(settings.discord_max_jobs_per_user)
        self._webhooks: dict[str, DiscordWebhookClient] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps only weak ones

    def webhook(self, application_id: str) -> DiscordWebhookClient:
        if application_id not in self._webhooks:
            self._webhooks[application_id] = DiscordWebhookClient(
                self._settings.discord_api_base_url,
                application_id,
                retry_initial_s=self._settings.discord_retry_initial_s,
            )
        return self._webhooks[application_id]

    async def handle(self, request: Request) -> JSONResponse:
        credentials = await self._credentials.current()
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
            return _client_error(401, "Invalid request signature.", "authentication_error")
        try:
            interaction = Interaction.model_validate(json.loads(body))
        except (ValueError, ValidationError) as error:
            return _client_error(400, f"Malformed interaction: {error}", "invalid_request_error")
        context = _Context(
            received_at=time.monotonic(),
            application_id=str(credentials.discord_application_id),
            base_url=(self._settings.public_base_url or str(request.base_url)).rstrip("/"),
        )
        return JSONResponse(await self._dispatch(interaction, context))

    async def _dispatch(self, interaction: Interaction, context: _Context) -> dict[str, Any]:
        kind = interaction.type
        if kind == InteractionType.PING:
            return {"type": ResponseType.PONG}
        if kind == InteractionType.APPLICATION_COMMAND:
            if interaction.data is None or interaction.data.name != IMAGINE:
                return ephemeral("Unknown command.")
            try:
                params = params_from_options(interaction.data.options)
            except (CommandOptionError, ValidationError, ValueError) as error:
                return ephemeral(f"Invalid options: {_short(error)}")
            return await self._start(interaction, params, context)
        if kind == InteractionType.MESSAGE_COMPONENT:
            custom_id = interaction.data.custom_id if interaction.data else None
            if custom_id not in (REROLL_ID, RETRY_ID) or interaction.message is None:
                return ephemeral("This button is not supported.")
            try:
                params = params_from_embed(interaction.message.embeds, keep_seed=custom_id == RETRY_ID)
            except (UnreadableMessageError, ValidationError) as error:
                return ephemeral(f"Cannot repeat this image: {_short(error)}")
            return await self._start(interaction, params, context)
        if kind == InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE:
            return {"type": ResponseType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT, "data": {"choices": []}}
        raise InvalidRequestError(f"Unsupported interaction type {kind}.", param="type")

    async def _start(
        self, interaction: Interaction, params: GenerationParams, context: _Context
    ) -> dict[str, Any]:
        settings = self._settings
        user_id = interaction.user_id
        if user_id is None:
            return ephemeral("Cannot tell who sent this command.")
        if not guild_allowed(interaction.guild_id, settings.discord_allowed_guilds):
            return ephemeral("This bot is not enabled here.")
        word = banned_word_in([params.prompt, params.negative_prompt], settings.discord_banned_words)
        if word is not None:
            return ephemeral(f"Your prompt contains a word that is not allowed here ({word!r}).")
        try:
            build_jobs(params, 1, settings)  # validate before anything is stored
        except InvalidRequestError as error:
            return ephemeral(f"Invalid options: {error.message}")
        expected = self._predictions.client.load.expected_wait_s()
        if expected > settings.discord_max_wait_s:
            return ephemeral(
                f"The queue is too long right now (about {expected / 60:.0f} min); "
                "try again in a few minutes."
            )
        if not self._limits.try_acquire(user_id):
            return ephemeral(
                f"You already have {settings.discord_max_jobs_per_user} images rendering; "
                "wait for one to finish."
            )
        try:
            record = await self._predictions.create(params, 1, None, "discord", context.base_url)
        except Exception:
            self._limits.release(user_id)
            raise
        task = asyncio.create_task(self._run(interaction, record, user_id, context))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"type": ResponseType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE}

    async def _run(
        self, interaction: Interaction, record: PredictionRecord, user_id: str, context: _Context
    ) -> None:
        try:
            await run_imagine(
                interaction,
                record,
                self._predictions,
                self.webhook(context.application_id),
                self._settings.discord_progress_interval_s,
                context.received_at,
            )
        finally:
            self._limits.release(user_id)


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(error)


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


def create_discord_router(
    settings: AppSettings, predictions: PredictionService, credentials: CredentialSource
) -> APIRouter:
    router = APIRouter()
    handler = InteractionHandler(settings, predictions, credentials)

    @router.post("/discord/interactions", include_in_schema=True, summary="Discord interactions endpoint")
    async def discord_interactions(request: Request) -> JSONResponse:
        return await handler.handle(request)

    return router
