"""Discord pieces on their own: signatures, options, embeds, admission, attachments, retries."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace

import numpy as np
import pytest
from fake_discord import DiscordSigner, FakeDiscord, ScriptedAnswer
from PIL import Image

from bot_gateway.admission import JobsPerUser, banned_word_in, expected_wait_s, guild_allowed
from bot_gateway.attachments import AttachmentTooLargeError, fit_attachment
from bot_gateway.commands import (
    CommandOptionError,
    image_from_options,
    imagine_command,
    params_from_options,
)
from bot_gateway.messages import (
    REMIX_ID,
    REROLL_ID,
    UPSCALE_ID,
    VARIATIONS_ID,
    StartImage,
    UnreadableMessageError,
    failed_message,
    finished_message,
    params_from_embed,
    progress_text,
    start_image_from_embed,
)
from bot_gateway.protocol import CommandOption, Embed, Interaction, InteractionData, Resolved
from bot_gateway.source_images import host_allowed
from bot_gateway.verification import InvalidSignatureError, verify_interaction
from bot_gateway.webhook_client import DiscordAPIError, DiscordWebhookClient, TokenExpiredError
from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.image_inputs import upscale_size
from serve_app.core.images import ImageSpec
from serve_app.core.load import LoadTracker

# --- verification --------------------------------------------------------------------------------


def test_valid_signature_passes_and_any_change_fails() -> None:
    signer = DiscordSigner()
    body = b'{"type":1}'
    headers = signer.headers(body)
    sig, ts = headers["X-Signature-Ed25519"], headers["X-Signature-Timestamp"]
    verify_interaction(body, sig, ts, signer.public_key_hex)
    with pytest.raises(InvalidSignatureError):
        verify_interaction(body + b" ", sig, ts, signer.public_key_hex)
    with pytest.raises(InvalidSignatureError):
        verify_interaction(body, sig, ts, DiscordSigner().public_key_hex)
    with pytest.raises(InvalidSignatureError, match="too far"):
        verify_interaction(body, sig, ts, signer.public_key_hex, now=int(ts) + 301)
    verify_interaction(body, sig, ts, signer.public_key_hex, now=int(ts) + 299)


# --- command options -----------------------------------------------------------------------------


def test_options_become_generation_params() -> None:
    params = params_from_options(
        [
            CommandOption(name="prompt", type=3, value="a cat"),
            CommandOption(name="seed", type=4, value=5),
            CommandOption(name="guidance", type=10, value=4),
            CommandOption(name="size", type=3, value="512x768"),
        ]
    )
    assert (params.prompt, params.seed, params.guidance_scale, params.size) == ("a cat", 5, 4.0, "512x768")


@pytest.mark.parametrize(
    "options",
    [
        [CommandOption(name="seed", type=4, value=1)],
        [CommandOption(name="prompt", type=3, value="x"), CommandOption(name="steps", type=4, value="10")],
        [CommandOption(name="prompt", type=3, value="x"), CommandOption(name="seed", type=4, value=True)],
        [CommandOption(name="prompt", type=3, value="x"), CommandOption(name="colour", type=3, value="red")],
    ],
    ids=["no-prompt", "steps-as-string", "bool-seed", "unknown"],
)
def test_bad_options_are_rejected(options: list[CommandOption]) -> None:
    with pytest.raises(CommandOptionError):
        params_from_options(options)


def test_command_definition_bounds_match_the_options_we_parse() -> None:
    definition = imagine_command(("64x64",), max_steps=50)
    names = {option["name"] for option in definition["options"]}
    assert names == {
        "prompt", "negative_prompt", "seed", "steps", "size", "guidance", "image", "strength", "count", "ar"
    }
    steps = next(o for o in definition["options"] if o["name"] == "steps")
    assert steps["max_value"] == 50
    kinds = {option["name"]: option["type"] for option in definition["options"]}
    assert (kinds["image"], kinds["strength"]) == (11, 10)  # ATTACHMENT, NUMBER


def test_attachment_option_is_looked_up_in_resolved() -> None:
    attachment = {"id": "555", "filename": "cat.png", "url": "https://cdn.discordapp.com/a/cat.png"}
    data = InteractionData.model_validate(
        {
            "name": "imagine",
            "options": [
                {"name": "prompt", "type": 3, "value": "a cat"},
                {"name": "image", "type": 11, "value": "555"},
                {"name": "strength", "type": 10, "value": 0.4},
            ],
            "resolved": {"attachments": {"555": attachment}},
        }
    )
    assert params_from_options(data.options).prompt == "a cat"  # the image options are not params
    found, strength = image_from_options(data.options, data.resolved)
    assert found is not None and found.url == attachment["url"] and strength == 0.4
    with pytest.raises(CommandOptionError, match="names no attachment"):
        image_from_options(data.options, Resolved())
    with pytest.raises(CommandOptionError, match="needs an 'image'"):
        image_from_options([CommandOption(name="strength", type=10, value=0.5)], Resolved())


# --- messages ------------------------------------------------------------------------------------

JOB = ImageSpec("a castle", 512, 768, 25, 6.5, "euler_a", seed=99, negative_prompt="fog")


def test_finished_message_round_trips_through_its_embed() -> None:
    message = finished_message(JOB, "imagine-99.png", 3.21)
    embeds = [Embed.model_validate(e) for e in message["embeds"]]
    same = params_from_embed(embeds, keep_seed=True)
    assert (same.prompt, same.seed, same.steps, same.size, same.guidance_scale, same.scheduler) == (
        "a castle",
        99,
        25,
        "512x768",
        6.5,
        "euler_a",
    )
    assert same.negative_prompt == "fog"
    assert params_from_embed(embeds, keep_seed=False).seed is None


def test_failed_message_keeps_parameters_for_retry() -> None:
    embeds = [Embed.model_validate(e) for e in failed_message(JOB, "boom")["embeds"]]
    assert params_from_embed(embeds, keep_seed=True).seed == 99


def test_a_message_from_a_picture_names_it_for_its_buttons() -> None:
    txt2img = [Embed.model_validate(e) for e in finished_message(JOB, "a.png", 1.0)["embeds"]]
    assert start_image_from_embed(txt2img) is None
    source = "https://cdn.discordapp.com/attachments/1/2/cat.png?ex=1&hm=2"
    upscaled = replace(JOB, kind="upscale", strength=0.3)
    message = finished_message(upscaled, "a.png", 1.0, source=source)
    # Not stored (no image id): the buttons of messages from before the grid, from the attachment.
    buttons = [b["custom_id"] for row in message["components"] for b in row["components"]]
    assert buttons == [VARIATIONS_ID, UPSCALE_ID, REROLL_ID, REMIX_ID]
    embeds = [Embed.model_validate(e) for e in message["embeds"]]
    assert start_image_from_embed(embeds) == StartImage(source, "upscale", 0.3)
    failed = [Embed.model_validate(e) for e in failed_message(upscaled, "boom", source)["embeds"]]
    assert start_image_from_embed(failed) == StartImage(source, "upscale", 0.3)
    assert params_from_embed(embeds, keep_seed=True).size == "512x768"


def test_only_allowed_attachment_hosts_are_fetched() -> None:
    hosts = AppSettings().discord_attachment_hosts
    assert host_allowed("https://cdn.discordapp.com/attachments/1/2/a.png?ex=1", hosts)
    assert host_allowed("https://media.discordapp.net/attachments/1/2/a.png", hosts)
    for url in (
        "https://cdn.discordapp.com.evil.example/a.png",
        "https://evil.example/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8000/images/x.png",
        "http://localhost/a.png",
        "ftp://cdn.discordapp.com/a.png",
        "cdn.discordapp.com/a.png",
        "http://[::1",
    ):
        assert not host_allowed(url, hosts), url
    # An address entry allows that address (a test server on loopback), and only it.
    assert host_allowed("http://127.0.0.1:9999/a.png", ["127.0.0.1"])
    assert not host_allowed("http://localhost:9999/a.png", ["127.0.0.1"])


def test_upscale_doubles_within_the_largest_size() -> None:
    settings = AppSettings(max_size=1024)
    assert upscale_size(512, 384, settings, "size") == "1024x768"
    with pytest.raises(InvalidRequestError) as refused:
        upscale_size(1024, 512, settings, "size")
    assert refused.value.param == "size" and "2048x1024" in refused.value.message


def test_unreadable_embeds_raise() -> None:
    with pytest.raises(UnreadableMessageError):
        params_from_embed([], keep_seed=False)
    with pytest.raises(UnreadableMessageError):
        params_from_embed([Embed(description="x", fields=[])], keep_seed=False)


def test_progress_text() -> None:
    assert progress_text("queued") == "⏳ Queued…"
    assert progress_text("rendering", 12, 30) == "🎨 Rendering step 12/30…"


def test_user_id_from_member_or_dm() -> None:
    base = {"id": "1", "application_id": "a", "type": 2, "token": "t"}
    assert Interaction.model_validate({**base, "member": {"user": {"id": "g"}}}).user_id == "g"
    assert Interaction.model_validate({**base, "user": {"id": "d"}}).user_id == "d"
    assert Interaction.model_validate(base).user_id is None


# --- admission -------------------------------------------------------------------------------------


def test_jobs_per_user() -> None:
    limits = JobsPerUser(2)
    assert limits.try_acquire("a") and limits.try_acquire("a")
    assert not limits.try_acquire("a")
    assert limits.try_acquire("b")
    limits.release("a")
    assert limits.running("a") == 1 and limits.try_acquire("a")


def test_banned_words_match_whole_words_case_insensitively() -> None:
    assert banned_word_in(["A Gory scene"], ["gory"]) == "gory"
    assert banned_word_in(["allegory"], ["gory"]) is None
    assert banned_word_in(["fine", "also fine"], ["gory"]) is None
    assert banned_word_in(["x"], []) is None


def test_guild_allow_list() -> None:
    assert guild_allowed(None, [])
    assert guild_allowed("1", ["1"])
    assert not guild_allowed("2", ["1"])
    assert not guild_allowed(None, ["1"])


def test_wait_estimate_is_the_cold_start_before_any_measurement_then_grows_with_work() -> None:
    tracker = LoadTracker()
    small = ImageSpec("x", 512, 512, 10, 7.5, "ddim", seed=1)
    # Cold start: nothing measured yet, so a replica may still have to start; never 0.
    assert expected_wait_s(tracker, small, cold_start_s=90.0) == 90.0
    tracker.observe(render_s=8.0, batch_size=4, units=10.0)  # 2 s per image of 10 steps at 512x512
    assert expected_wait_s(tracker, small, cold_start_s=90.0) == pytest.approx(2.0)
    # Cost follows steps and pixels: 40 steps at 1024x1024 is 16 times that work.
    big = ImageSpec("x", 1024, 1024, 40, 7.5, "ddim", seed=1)
    assert expected_wait_s(tracker, big, cold_start_s=90.0) == pytest.approx(32.0)
    tracker.started(9)  # nine images in flight, each like the ones measured
    assert expected_wait_s(tracker, small, cold_start_s=90.0) == pytest.approx(20.0)
    tracker.finished(9)
    tracker.finished(1)
    assert tracker.in_flight == 0


# --- attachments -----------------------------------------------------------------------------------


def _noise_png(size: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_small_png_is_sent_as_is() -> None:
    png = _noise_png(32)
    attachment, note = fit_attachment(png, len(png), "x")
    assert attachment.content == png and attachment.filename == "x.png" and note == ""


def test_large_png_is_reencoded_under_the_limit() -> None:
    png = _noise_png(256)
    for limit in (len(png) // 3, 4000, 600):
        attachment, note = fit_attachment(png, limit, "x")
        assert len(attachment.content) <= limit
        assert Image.open(io.BytesIO(attachment.content)).format in {"WEBP", "JPEG"}
        assert "upload limit" in note
    with pytest.raises(AttachmentTooLargeError):
        fit_attachment(png, 10, "x")


# --- webhook client retries (against the local fake Discord) ---------------------------------------


@pytest.fixture
def fake() -> FakeDiscord:
    server = FakeDiscord()
    yield server
    server.close()


def test_client_retries_429_then_5xx_then_succeeds(fake: FakeDiscord) -> None:
    fake.fail_next(
        "tok",
        ScriptedAnswer(429, {"retry_after": 0.2}),
        ScriptedAnswer(503, {}),
        ScriptedAnswer(500, {}),
    )

    async def edit() -> None:
        client = DiscordWebhookClient(fake.url, "app", retry_initial_s=0.05)
        await client.edit_original("tok", {"content": "hi"})
        await client.aclose()

    asyncio.run(edit())
    assert [c.status for c in fake.calls] == [429, 503, 500, 200]
    assert all(c.json == {"content": "hi"} for c in fake.calls)
    assert fake.calls[1].at - fake.calls[0].at >= 0.2


def test_client_gives_up_at_the_token_deadline_and_does_not_retry_4xx(fake: FakeDiscord) -> None:
    fake.fail_next("tok1", *[ScriptedAnswer(500, {}) for _ in range(100)])
    fake.fail_next("tok2", ScriptedAnswer(404, {"message": "Unknown Webhook"}))

    async def edits() -> None:
        client = DiscordWebhookClient(fake.url, "app", retry_initial_s=0.05)
        with pytest.raises(TokenExpiredError):
            await client.edit_original("tok1", {"content": "x"}, deadline=time.monotonic() + 0.5)
        with pytest.raises(DiscordAPIError) as raised:
            await client.edit_original("tok2", {"content": "x"})
        assert raised.value.status_code == 404
        await client.aclose()

    asyncio.run(edits())
    assert 2 <= len(fake.calls_to("tok1")) <= 6
    assert len(fake.calls_to("tok2")) == 1


def test_client_retries_when_discord_is_unreachable() -> None:
    async def edit() -> None:
        client = DiscordWebhookClient("http://127.0.0.1:9/api", "app", retry_initial_s=0.05)
        with pytest.raises(TokenExpiredError, match="ConnectError"):
            await client.edit_original("t", {"content": "x"}, deadline=time.monotonic() + 0.3)
        await client.aclose()

    asyncio.run(edit())


def test_a_default_negative_prompt_is_left_out_for_a_model_that_takes_none() -> None:
    from bot_gateway.user_settings import UserDefaults, with_defaults
    from serve_app.core.params import GenerationParams

    defaults = UserDefaults(model="flux", negative_prompt="blurry")
    takes = {"flux": False, "sd": True}.__getitem__
    chosen_by_default = with_defaults(GenerationParams(prompt="x"), defaults, False, takes)
    assert chosen_by_default.model == "flux" and not chosen_by_default.negative_prompt
    named = with_defaults(GenerationParams(prompt="x", model="sd"), defaults, False, takes)
    assert named.negative_prompt == "blurry"
    typed = with_defaults(
        GenerationParams(prompt="x", model="flux", negative_prompt="fog"), defaults, False, takes
    )
    assert typed.negative_prompt == "fog"  # what the command names is the edge's to judge
