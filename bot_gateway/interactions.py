"""Verified Discord interactions, answered within Discord's 3-second deadline.

Discord gives an interactions endpoint 3 seconds for its first answer. Rendering takes longer, so
``/imagine`` (and a button click) is answered at once with a deferred response (type 5, the
"thinking…" state), the job is stored and started through the shared job runner, and the result
arrives later by editing that message (see ``delivery``). Nothing in this request waits on
the model, and the one storage write it needs is bounded: a store that does not answer in time
turns into an ephemeral "try again", never into a missed deadline.

A job that starts from a picture (an ``/imagine`` attachment; Variations and Upscale, which start
from the clicked message's image) fetches and checks the picture here, before the answer, also
bounded: the job is stored with its picture, so any replica can run or adopt it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot_gateway.admission import DiscordQuotas, JobsPerUser, banned_word_in, expected_wait_s, guild_allowed
from bot_gateway.aspect_ratios import AspectRatioError, size_for_ratio
from bot_gateway.commands import (
    IMAGINE,
    MAX_NEGATIVE_PROMPT_LENGTH,
    MAX_PROMPT_LENGTH,
    CommandOptionError,
    default_count,
    grid_from_options,
    image_from_options,
    max_grid,
    params_from_options,
)
from bot_gateway.delivery import (
    DELIVERY_MARGIN_S,
    DiscordTarget,
    delete_message,
    deliver_stored_image,
    stored_link,
)
from bot_gateway.messages import (
    REMIX_ID,
    Button,
    StartImage,
    UnreadableMessageError,
    count_from_embed,
    params_from_embed,
    parse_custom_id,
    remix_modal,
    seed_of,
    spec_from_embed,
    start_image_from_embed,
)
from bot_gateway.model_choices import autocomplete_choices
from bot_gateway.protocol import (
    MANAGE_MESSAGES,
    TOKEN_LIFETIME_S,
    Interaction,
    InteractionType,
    Message,
    ResponseType,
    ephemeral,
)
from bot_gateway.settings_command import (
    SETTINGS,
    SettingsOptionError,
    changes_from_options,
    describe,
    invalid,
    updated_defaults,
)
from bot_gateway.source_images import GONE, SourceImageError, start_image_specs
from bot_gateway.user_settings import UnknownUserError, UserDefaults, UserSettingsStore, with_defaults
from serve_app.config.credentials import CredentialSource
from serve_app.config.settings import AppSettings
from serve_app.config.sizes import parse_size
from serve_app.core.errors import InvalidRequestError, RateLimitedError
from serve_app.core.image_inputs import upscale_size
from serve_app.core.images import ImageSpec
from serve_app.core.model_choice import resolve_model
from serve_app.core.params import GenerationParams
from serve_app.jobs.records import JobRecord, new_record
from serve_app.jobs.runner import JobRunner
from serve_app.jobs.usage import UsageBook
from serve_app.ops import metrics as service_metrics
from serve_app.storage import stored_image_id

logger = logging.getLogger("ray.serve")

# Storing the job is the only wait before the ACK, and Discord drops an answer after 3 s: past
# this the store counts as down for this interaction.
ACCEPT_TIMEOUT_S = 1.5
# Fetching and decoding a picture a job starts from, before the answer: with the store's 1.5 s,
# this keeps the answer inside Discord's 3 s.
SOURCE_IMAGE_TIMEOUT_S = 1.2
# Reading the user's /settings defaults before an /imagine answer: taken from the picture's budget.
USER_DEFAULTS_TIMEOUT_S = 0.3
# /settings reads and then writes the store, and does nothing else before its answer.
SETTINGS_STORE_TIMEOUT_S = 1.2
STORE_DOWN = "storage is not answering. Try again in a moment."
# Reading a picked image (U1-U4) before the answer: it must exist for the click to be accepted.
PICK_READ_TIMEOUT_S = 1.5


@dataclass(frozen=True)
class InteractionContext:
    received_at: float  # epoch seconds
    application_id: str
    base_url: str


class InteractionHandler:
    """Everything after the signature check: commands, buttons, autocomplete, /settings."""

    def __init__(self, settings: AppSettings, runner: JobRunner, credentials: CredentialSource) -> None:
        self._settings = settings
        self._runner = runner
        self._credentials = credentials
        self._limits = JobsPerUser(settings.discord_max_jobs_per_user)
        # Per-user and per-guild limits; users' daily counts refreshed from the usage records.
        self._quotas = DiscordQuotas(settings, UsageBook(runner.jobs.images))
        self._user_settings = UserSettingsStore(runner.jobs.images)
        # Edits and deletions that follow an answer without a job (U1-U4, Delete): held so the
        # event loop does not drop them half-way.
        self._background: set[asyncio.Task[None]] = set()

    async def dispatch(self, interaction: Interaction, context: InteractionContext) -> dict[str, Any]:
        kind = interaction.type
        if kind == InteractionType.PING:
            return {"type": ResponseType.PONG}
        if kind == InteractionType.APPLICATION_COMMAND:
            if interaction.data is not None and interaction.data.name == SETTINGS:
                return await self._settings_command(interaction)
            if interaction.data is None or interaction.data.name != IMAGINE:
                return ephemeral("Unknown command.")
            return await self._imagine(interaction, context)
        if kind == InteractionType.MESSAGE_COMPONENT:
            button = parse_custom_id(interaction.data.custom_id if interaction.data else None)
            if button is None or interaction.message is None:
                return ephemeral("This button is not supported.")
            return await self._button(interaction, context, button, interaction.message)
        if kind == InteractionType.MODAL_SUBMIT:
            return await self._remix_submitted(interaction, context)
        if kind == InteractionType.APPLICATION_COMMAND_AUTOCOMPLETE:
            # Past 25 models (or LoRAs) the options are autocompleted (bot_gateway/model_choices.py).
            options = interaction.data.options if interaction.data else []
            choices = autocomplete_choices(options, self._settings.catalogue)
            result = ResponseType.APPLICATION_COMMAND_AUTOCOMPLETE_RESULT
            return {"type": result, "data": {"choices": choices}}
        raise InvalidRequestError(f"Unsupported interaction type {kind}.", param="type")

    async def _imagine(self, interaction: Interaction, context: InteractionContext) -> dict[str, Any]:
        assert interaction.data is not None
        options = interaction.data.options
        try:
            params = params_from_options(options)
            attachment, strength = image_from_options(options, interaction.data.resolved)
            count, ratio = grid_from_options(options)
        except (CommandOptionError, ValidationError, ValueError) as error:
            return ephemeral(f"Invalid options: {_short(error)}")
        most = max_grid(self._settings)
        if count is not None and not 1 <= count <= most:
            return ephemeral(f"Invalid options: 'count' must be between 1 and {most}.")
        started = time.monotonic()
        defaults = await self._user_defaults(interaction.user_id)
        if defaults is not None and params.model is None and defaults.model:
            if defaults.model not in self._settings.catalogue.entries:
                return ephemeral(
                    f"Your default model {defaults.model!r} is no longer served; pick another with "
                    f"/settings (models: {', '.join(self._settings.catalogue.names)})."
                )
        params = with_defaults(
            params, defaults or UserDefaults(), attachment is not None, self._takes_negative_prompt
        )
        if ratio is not None:
            try:
                params = params.model_copy(update={"size": self._ratio_size(ratio, params)})
            except (AspectRatioError, InvalidRequestError) as error:
                message = error.message if isinstance(error, InvalidRequestError) else str(error)
                return ephemeral(f"Invalid options: {message}")
        spent_s = time.monotonic() - started
        start = None
        if attachment is not None:
            if attachment.size is not None and attachment.size > self._settings.max_input_bytes:
                return ephemeral(
                    f"The image is over the {self._settings.max_input_bytes / 1024 / 1024:.0f} MiB "
                    "this bot takes."
                )
            if strength is None:
                strength = self._settings.default_strength
            start = StartImage(str(attachment.url), "img2img", strength)
        return await self._start(
            interaction,
            params,
            context,
            start,
            count=count or default_count(self._settings),
            spent_s=spent_s,
            store_answered=defaults is not None,
        )

    def _takes_negative_prompt(self, model: str | None) -> bool:
        """Whether ``model`` (None: the catalogue's default) takes a negative prompt as SD does; an
        unknown name is left to the edge, whose 400 names it."""
        catalogue = self._settings.catalogue
        entry = catalogue.entries.get(model) if model else catalogue.default
        return entry is None or entry.spec.negative_prompt == "cfg"

    def _ratio_size(self, ratio: str, params: GenerationParams) -> str:
        """``ar``'s size for the model that will draw it, at about that model's native area."""
        model = resolve_model(self._settings.catalogue, params.model, params.loras).model
        settings = self._settings.for_model(model)
        return size_for_ratio(ratio, settings.default_dimensions, settings.min_size, settings.max_size)

    async def _button(
        self, interaction: Interaction, context: InteractionContext, button: Button, message: Message
    ) -> dict[str, Any]:
        if button.action == "delete":
            return self._delete(interaction, context, button)
        if button.action == "remix":
            try:
                return remix_modal(message.embeds, MAX_PROMPT_LENGTH, MAX_NEGATIVE_PROMPT_LENGTH)
            except UnreadableMessageError as error:
                return ephemeral(f"Cannot remix this image: {_short(error)}")
        if button.action == "pick":
            return await self._pick(interaction, context, button, message)
        try:
            params, start, count = self._from_message(message, button, context)
        except (UnreadableMessageError, ValidationError) as error:
            return ephemeral(f"Cannot repeat this image: {_short(error)}")
        except InvalidRequestError as error:
            return ephemeral(f"Cannot do that: {error.message}")
        return await self._start(interaction, params, context, start, count=count)

    def _from_message(
        self, message: Message, button: Button, context: InteractionContext
    ) -> tuple[GenerationParams, StartImage | None, int]:
        """What a button on ``message`` renders, and how many: all of it read from the message and
        the button's custom_id (stateless).

        Re-roll and Retry repeat the message's job (as many images, from its source picture, if it
        had one); V1-V4 and Vary start from a stored image of ours; Upscale from the stored image
        (or, on messages from before the grid, the attachment), like the legacy Variations.
        """
        settings = self._settings
        action = button.action
        grid = count_from_embed(message.embeds)
        params = params_from_embed(message.embeds, keep_seed=action in ("retry", "upscale"))
        if action in ("reroll", "retry"):
            start = self._source_of(message, context)
            return params, start, grid or (1 if action == "retry" else default_count(settings))
        if button.image_id is not None:
            url = self._runner.jobs.images.image_url(button.image_id, context.base_url)
        else:
            url = next((a.url for a in message.attachments if a.url), None)
            if url is None:
                raise UnreadableMessageError("the message has no image")
        if action in ("vary", "subtle", "strong", "variations"):
            strength = settings.variation_strength
            if action == "subtle":
                strength = settings.discord_subtle_variation_strength
            # A new grid near that image, new seeds (the legacy Variations button: one image).
            count = default_count(settings) if action != "variations" else 1
            return params, StartImage(url, "img2img", strength, button.image_id), count
        try:
            width, height = parse_size(str(params.size))
        except ValueError:
            raise UnreadableMessageError(f"the embed's size {params.size!r} is not WIDTHxHEIGHT") from None
        doubled = upscale_size(width, height, settings, "size")
        return (
            params.model_copy(update={"size": doubled}),
            StartImage(url, "upscale", settings.upscale_strength, button.image_id),
            1,
        )

    def _source_of(self, message: Message, context: InteractionContext) -> StartImage | None:
        """The picture the message's images started from: our stored image is read from the store."""
        start = start_image_from_embed(message.embeds)
        if start is None:
            return None
        image_id = stored_image_id(start.url, self._runner.jobs.images, context.base_url)
        return StartImage(start.url, start.kind, start.strength, image_id)

    async def _pick(
        self, interaction: Interaction, context: InteractionContext, button: Button, message: Message
    ) -> dict[str, Any]:
        """U1-U4: that image of the grid alone, from the store (never rendered again)."""
        assert button.image_id is not None
        try:
            first_seed = int(params_from_embed(message.embeds, keep_seed=True).seed or 0)
            job = spec_from_embed(message.embeds, seed_of(first_seed, button.index))
            source = self._source_of(message, context)
        except (UnreadableMessageError, ValidationError) as error:
            return ephemeral(f"Cannot show this image: {_short(error)}")
        user_id = interaction.user_id
        if user_id is None:
            return ephemeral("Cannot tell who sent this command.")
        if not guild_allowed(interaction.guild_id, self._settings.discord_allowed_guilds):
            return ephemeral("This bot is not enabled here.")
        store = self._runner.jobs.images
        try:
            png = await asyncio.wait_for(
                asyncio.to_thread(store.get_image, button.image_id), PICK_READ_TIMEOUT_S
            )
        except Exception as error:
            logger.warning("picked image unreadable (%s)", type(error).__name__)
            return ephemeral(f"Could not read the image: {STORE_DOWN}")
        if png is None:
            return ephemeral(GONE)
        target = self._target(interaction, context, source)
        link = stored_link(store, button.image_id, context.base_url)
        task = asyncio.create_task(
            deliver_stored_image(self._settings, target, job, png, button.image_id, link)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return {"type": ResponseType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE}

    def _delete(
        self, interaction: Interaction, context: InteractionContext, button: Button
    ) -> dict[str, Any]:
        """Delete: by the user who asked, or a member who may manage messages; nobody else."""
        user_id = interaction.user_id
        member = interaction.member
        allowed = user_id is not None and user_id == button.user_id
        if not allowed and (member is None or not member.has_permission(MANAGE_MESSAGES)):
            return ephemeral("Only the person who asked for this image (or a moderator) can delete it.")
        expires = interaction.created_at(context.received_at) + TOKEN_LIFETIME_S
        task = asyncio.create_task(
            delete_message(self._settings, context.application_id, interaction.token, expires)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        # Acknowledged without a new message; the deletion follows through the click's token.
        return {"type": ResponseType.DEFERRED_UPDATE_MESSAGE}

    async def _remix_submitted(self, interaction: Interaction, context: InteractionContext) -> dict[str, Any]:
        """The Remix modal's text: the message's grid again with the same seed and settings."""
        data = interaction.data
        if data is None or data.custom_id != REMIX_ID:
            return ephemeral("This form is not supported.")
        if interaction.message is None:
            return ephemeral("Cannot remix: open Remix from the image's button.")
        values = data.modal_values()
        try:
            params = params_from_embed(interaction.message.embeds, keep_seed=True)
            update: dict[str, Any] = {"prompt": values.get("prompt", "")}
            if "negative_prompt" in values:
                update["negative_prompt"] = values["negative_prompt"]
            params = GenerationParams.model_validate({**params.model_dump(), **update})
            start = self._source_of(interaction.message, context)
            count = count_from_embed(interaction.message.embeds) or default_count(self._settings)
        except (UnreadableMessageError, ValidationError) as error:
            return ephemeral(f"Cannot remix this image: {_short(error)}")
        if len(params.prompt) > MAX_PROMPT_LENGTH:
            return ephemeral(f"Invalid options: 'prompt' is longer than {MAX_PROMPT_LENGTH} characters.")
        return await self._start(interaction, params, context, start, count=count)

    async def _user_defaults(self, user_id: str | None) -> UserDefaults | None:
        """The user's /settings defaults; None when the store did not answer in time."""
        if user_id is None:
            return UserDefaults()
        try:
            return await self._user_settings.load(user_id, USER_DEFAULTS_TIMEOUT_S)
        except UnknownUserError:
            return UserDefaults()  # not a Discord snowflake: nothing can have been stored for it
        except Exception as error:
            logger.warning("user defaults unreadable (%s)", type(error).__name__)
            return None

    async def _settings_command(self, interaction: Interaction) -> dict[str, Any]:
        """``/settings``: show or change the user's defaults; every answer is ephemeral."""
        user_id = interaction.user_id
        if user_id is None:
            return ephemeral("Cannot tell who sent this command.")
        if not guild_allowed(interaction.guild_id, self._settings.discord_allowed_guilds):
            return ephemeral("This bot is not enabled here.")
        try:
            values, reset = changes_from_options(interaction.data.options if interaction.data else [])
        except SettingsOptionError as error:
            return invalid(error)
        try:
            current = await self._user_settings.load(user_id, SETTINGS_STORE_TIMEOUT_S)
        except UnknownUserError:
            return ephemeral("Settings can only be kept for Discord users.")
        except Exception as error:
            logger.warning("user defaults unreadable (%s)", type(error).__name__)
            return ephemeral(f"Could not read your settings: {STORE_DOWN}")
        if not values and not reset:
            return ephemeral(describe(current, self._settings, saved=False))
        try:
            updated = updated_defaults(current, values, reset, self._settings)
        except InvalidRequestError as error:
            return invalid(error)
        except ValidationError as error:
            return ephemeral(f"Not saved: {_short(error)}")
        try:
            await self._user_settings.save(user_id, updated, SETTINGS_STORE_TIMEOUT_S)
        except Exception as error:
            logger.warning("user defaults not stored (%s)", type(error).__name__)
            return ephemeral(f"Not saved: {STORE_DOWN}")
        return ephemeral(describe(updated, self._settings, saved=True))

    async def _start(
        self,
        interaction: Interaction,
        params: GenerationParams,
        context: InteractionContext,
        start: StartImage | None = None,
        count: int = 1,
        spent_s: float = 0.0,
        store_answered: bool = True,
    ) -> dict[str, Any]:
        """Admit and queue a job of ``count`` images (one grid when more than one).

        ``spent_s``: of the picture's fetch budget, already used; ``store_answered``: False when
        the user's defaults could not be read, which refuses the job (after the admission checks)
        rather than rendering it without them."""
        settings = self._settings
        user_id = interaction.user_id
        if user_id is None:
            return ephemeral("Cannot tell who sent this command.")
        if not guild_allowed(interaction.guild_id, settings.discord_allowed_guilds):
            return ephemeral("This bot is not enabled here.")
        word = banned_word_in([params.prompt, params.negative_prompt], settings.discord_banned_words)
        if word is not None:
            return ephemeral(f"Your prompt contains a word that is not allowed here ({word!r}).")
        if count > self._limits.limit:
            service_metrics.rejected("admission")
            return ephemeral(
                f"You may have at most {self._limits.limit} images rendering at once; "
                f"ask for fewer with count (at most {self._limits.limit})."
            )
        token_expires_at = interaction.created_at(context.received_at) + TOKEN_LIFETIME_S
        jobs = None
        if start is not None:
            try:
                async with asyncio.timeout(max(0.1, SOURCE_IMAGE_TIMEOUT_S - spent_s)):
                    jobs = await start_image_specs(params, start, settings, self._runner.jobs.images, count)
            except InvalidRequestError as error:
                return ephemeral(f"Invalid options: {error.message}")
            except SourceImageError as error:
                return ephemeral(f"Cannot use this image: {error}")
            except TimeoutError:
                return ephemeral("The image took too long to fetch; try again, or a smaller image.")
        try:
            record = self._record(interaction, params, context, token_expires_at, count, jobs, start)
        except InvalidRequestError as error:
            return ephemeral(f"Invalid options: {error.message}")
        # The job must be rendered by its deadline; anything expected to take longer is refused now.
        job = record.image_specs()[0]
        expected = expected_wait_s(self._runner.client.load, job, settings.discord_cold_start_s, count)
        allowed = min(settings.discord_max_wait_s, float(record.deadline_at or 0) - time.time())
        if expected > allowed:
            service_metrics.rejected("admission")
            return ephemeral(
                f"The queue is too long right now (about {expected / 60:.0f} min); "
                "try again in a few minutes."
            )
        if not store_answered:
            return ephemeral(f"Could not queue your image: {STORE_DOWN}")
        # Images, not commands: a grid of four takes four of the user's slots.
        if not self._limits.try_acquire(user_id, count):
            service_metrics.rejected("admission")
            running = self._limits.running(user_id)
            return ephemeral(
                f"You already have {running} images rendering (at most {self._limits.limit} at once); "
                "wait for them to finish, or ask for fewer with count."
            )
        try:
            quota = self._quotas.admit(user_id, interaction.guild_id, count)
        except RateLimitedError as error:
            self._limits.release(user_id, count)
            service_metrics.rejected("rate_limit")
            return ephemeral(f"{error.message} Try again in {error.retry_after_s} s.")
        self._quotas.stamp(record.jobs, user_id)  # fair share and usage per user
        try:
            await self._runner.jobs.accept(record, timeout_s=ACCEPT_TIMEOUT_S)
        except Exception as error:
            self._limits.release(user_id, count)
            self._quotas.refund(quota)
            logger.warning("discord job not queued: the store failed (%s)", type(error).__name__)
            return ephemeral("Could not queue your image: storage is not answering. Try again in a moment.")
        task = self._runner.start(record)
        task.add_done_callback(lambda _: self._limits.release(user_id, count))
        task.add_done_callback(lambda _: self._quotas.release(quota))
        return {"type": ResponseType.DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE}

    def _target(
        self,
        interaction: Interaction,
        context: InteractionContext,
        start: StartImage | None,
        token_expires_at: float | None = None,
    ) -> DiscordTarget:
        """What editing this interaction's message needs, so any replica can do it."""
        if token_expires_at is None:
            token_expires_at = interaction.created_at(context.received_at) + TOKEN_LIFETIME_S
        return DiscordTarget(
            application_id=context.application_id,
            interaction_id=interaction.id,
            token=interaction.token,
            token_expires_at=token_expires_at,
            attachment_size_limit=interaction.attachment_size_limit,
            source_image_url=start.url if start else None,
            requester_id=interaction.user_id,
        )

    def _record(
        self,
        interaction: Interaction,
        params: GenerationParams,
        context: InteractionContext,
        token_expires_at: float,
        count: int,
        jobs: list[ImageSpec] | None = None,
        start: StartImage | None = None,
    ) -> JobRecord:
        """The job with everything its delivery needs: any replica can finish it and edit the message."""
        target = self._target(interaction, context, start, token_expires_at)
        shown = {"kind": start.kind, "strength": start.strength, "image": start.url} if start else None
        return new_record(
            params,
            count,
            self._settings,
            "discord",
            base_url=context.base_url,
            reply_to=target.model_dump(),
            deadline_at=token_expires_at - DELIVERY_MARGIN_S,
            jobs=jobs,
            extra_input=shown,
        )


def _short(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(error)
