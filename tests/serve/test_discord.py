"""The Discord bot end to end: signed interactions in, webhook edits out to a local fake Discord.

A real local Ray Serve runs the app; a real HTTP server on loopback stands in for Discord's API;
interactions are signed with a test Ed25519 key exactly as Discord signs them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fake_discord import (
    DiscordSigner,
    FakeDiscord,
    RecordedCall,
    ScriptedAnswer,
    imagine_interaction,
    message_html,
    snowflake,
)
from PIL import Image
from playwright.sync_api import sync_playwright
from ray import serve
from support import (
    HangingServer,
    decode_png,
    deploy_fixed_capacity_app,
    kill_serve_replica,
    max_pixel_difference,
    serve_replicas,
    wait_for,
)

from bot_gateway.delivery import DELIVERY_MARGIN_S, DiscordTarget
from bot_gateway.grids import tile
from bot_gateway.messages import finished_message
from bot_gateway.protocol import TOKEN_LIFETIME_S
from serve_app.app import build_app, compose
from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageSpec
from serve_app.jobs.records import JobRecord, JobStore
from serve_app.storage import LocalImageStore

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".cache" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
APP_ID = "app123"
GUILD = "g1"
PROGRESS_INTERVAL_S = 0.3


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bot-store")


def discord_args(fake: FakeDiscord, signer: DiscordSigner) -> dict:
    return {
        "discord_public_key": signer.public_key_hex,
        "discord_application_id": APP_ID,
        "discord_api_base_url": fake.url,
        "discord_progress_interval_s": PROGRESS_INTERVAL_S,
        "discord_retry_initial_s": 0.05,
        "discord_max_jobs_per_user": 8,  # images: two grids of four
        "discord_banned_words": ["forbidden"],
        "discord_allowed_guilds": [GUILD, "g2"],
        # The fake Discord's "CDN" listens on loopback: allowed by address (names must be public).
        "discord_attachment_hosts": ["127.0.0.1"],
    }


@pytest.fixture(scope="module")
def bot(
    serve_url: str, tiny_model_dir: Path, fake: FakeDiscord, signer: DiscordSigner, data_dir: Path
) -> str:
    args = {
        "models": [{"name": "tiny-sd", "model": str(tiny_model_dir), "default": True}],
        "default_size": "64x64",
        "default_steps": 4,
        "max_steps": 100,
        "data_dir": str(data_dir),
        # Jobs whose ingress died are adopted within seconds (heartbeats come every second).
        "prediction_stale_s": 4,
        "prediction_sweep_interval_s": 0.5,
        **discord_args(fake, signer),
    }
    serve.run(build_app(args), name="bot", route_prefix="/")
    return serve_url


@pytest.fixture(autouse=True)
def clean_fake(fake: FakeDiscord) -> None:
    fake.reset()


def command(
    prompt: str = "a cat",
    user: str = "u1",
    guild: str | None = GUILD,
    created_at: float | None = None,
    **options: object,
) -> dict:
    return imagine_interaction(APP_ID, prompt, user, guild, created_at=created_at, **options)


def click(message_payload: dict, custom_id: str, user: str = "u1") -> dict:
    return {
        "id": snowflake(),
        "application_id": APP_ID,
        "type": 3,
        "token": f"tok-{uuid.uuid4().hex}",
        "guild_id": GUILD,
        "member": {"user": {"id": user}},
        "data": {"custom_id": custom_id, "component_type": 2},
        "message": {
            "id": "m1",
            "embeds": message_payload["embeds"],
            "attachments": message_payload.get("attachments", []),
        },
    }


def post(base: str, signer: DiscordSigner, interaction: dict | bytes, prefix: str = "") -> httpx.Response:
    body = interaction if isinstance(interaction, bytes) else json.dumps(interaction).encode()
    return httpx.post(
        f"{base}{prefix}/discord/interactions", content=body, headers=signer.headers(body), timeout=30
    )


def final_edit(fake: FakeDiscord, token: str, timeout_s: float = 90) -> RecordedCall:
    """The edit that ends an interaction: the image (multipart) or a failure message."""

    def done(calls: list[RecordedCall]) -> bool:
        return any(
            token in c.path
            and c.status < 300
            and (c.files or str(c.json.get("content", "")).startswith("❌"))
            for c in calls
        )

    fake.wait_for(done, timeout_s, f"final edit of {token}")
    return [c for c in fake.calls_to(token) if c.status < 300][-1]


def assert_nothing_sent(
    base: str, signer: DiscordSigner, fake: FakeDiscord, token: str, prefix: str = ""
) -> None:
    """No edit for ``token``, checked once a later job has been delivered.

    A job started for ``token`` would have edited its message ("Queued") at once, long before a
    job started after it could render and deliver its image.
    """
    sentinel = command("sentinel", user="sentinel", steps=1, count=1)
    assert post(base, signer, sentinel, prefix).json() == {"type": 5}
    final_edit(fake, sentinel["token"])
    assert fake.calls_to(token) == []


# --- endpoint and verification ---------------------------------------------------------------


def test_ping_is_answered_with_pong(bot: str, signer: DiscordSigner) -> None:
    response = post(bot, signer, {"id": "1", "application_id": APP_ID, "type": 1, "token": "t"})
    assert response.status_code == 200
    assert response.json() == {"type": 1}


def test_minimal_ping_is_answered_with_pong(bot: str, signer: DiscordSigner) -> None:
    # Discord's endpoint check may send nothing but the type; a verified PING always gets PONG.
    response = post(bot, signer, b'{"type": 1}')
    assert response.status_code == 200, response.text
    assert response.json() == {"type": 1}


def _tampered(signer: DiscordSigner, body: bytes) -> dict[str, dict[str, str] | tuple]:
    now = str(int(time.time()))
    good = signer.headers(body, now)
    return {
        "wrong-key": DiscordSigner().headers(body, now),
        "tampered-body": (good, body.replace(b"imagine", b"imagino")),
        "tampered-timestamp": {**good, "X-Signature-Timestamp": str(int(now) + 1)},
        "stale-timestamp": signer.headers(body, str(int(time.time()) - 400)),
        "future-timestamp": signer.headers(body, str(int(time.time()) + 400)),
        "missing-signature": {k: v for k, v in good.items() if k != "X-Signature-Ed25519"},
        "missing-timestamp": {k: v for k, v in good.items() if k != "X-Signature-Timestamp"},
        "non-hex-signature": {**good, "X-Signature-Ed25519": "zz" * 64},
        "short-signature": {**good, "X-Signature-Ed25519": good["X-Signature-Ed25519"][:64]},
        "non-numeric-timestamp": {**good, "X-Signature-Timestamp": "yesterday"},
        "empty-body": (good, b""),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong-key",
        "tampered-body",
        "tampered-timestamp",
        "stale-timestamp",
        "future-timestamp",
        "missing-signature",
        "missing-timestamp",
        "non-hex-signature",
        "short-signature",
        "non-numeric-timestamp",
        "empty-body",
    ],
)
def test_bad_signatures_are_401_and_nothing_runs(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, case: str
) -> None:
    interaction = command("should never render")
    body = json.dumps(interaction).encode()
    headers = _tampered(signer, body)[case]
    if isinstance(headers, tuple):
        headers, body = headers
    response = httpx.post(f"{bot}/discord/interactions", content=body, headers=headers, timeout=30)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == "authentication_error"
    assert_nothing_sent(bot, signer, fake, interaction["token"])


def test_malformed_payloads_are_4xx(bot: str, signer: DiscordSigner) -> None:
    assert post(bot, signer, b"{not json").status_code == 400
    assert post(bot, signer, b"[]").status_code == 400
    assert (
        post(bot, signer, {"id": "1", "application_id": APP_ID, "type": 99, "token": "t"}).status_code == 400
    )
    assert post(bot, signer, {"type": 2}).status_code == 400
    huge = json.dumps({"type": 1, "pad": "x" * (1024 * 1024 + 10)}).encode()
    assert post(bot, signer, huge).status_code == 413


# --- /imagine ------------------------------------------------------------------------------------


def test_imagine_defers_then_edits_original_with_png(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    interaction = command("a red fox", seed=77, steps=6, size="64x96", count=1)
    started = time.monotonic()
    response = post(bot, signer, interaction)
    ack_s = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == {"type": 5}
    assert ack_s < 3.0

    final = final_edit(fake, interaction["token"])
    assert final.method == "PATCH"
    assert final.path == f"/api/v10/webhooks/{APP_ID}/{interaction['token']}/messages/@original"
    assert "authorization" not in final.headers
    assert final.headers["user-agent"].startswith("DiscordBot (")
    filename, content_type, data = final.files["files[0]"]
    assert (filename, content_type) == ("imagine-77.png", "image/png")
    assert decode_png(data).shape == (96, 64, 3)
    payload = final.json
    assert payload["attachments"] == [{"id": 0, "filename": "imagine-77.png"}]
    (embed,) = payload["embeds"]
    assert embed["description"] == "a red fox"
    assert embed["image"]["url"] == "attachment://imagine-77.png"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Seed"] == "77" and fields["Steps"] == "6" and fields["Size"] == "64x96"
    assert fields["Render time"].endswith(" s")
    # The title links to the stored full-quality original.
    assert embed["url"].startswith(f"{bot}/images/img_")
    assert decode_png(httpx.get(embed["url"], timeout=30).content).shape == (96, 64, 3)
    image_id = embed["url"].rsplit("/", 1)[1].removesuffix(".png")
    buttons = [b.get("custom_id") for row in payload["components"] for b in row["components"]]
    assert buttons == [
        f"imagine:upscale:{image_id}",
        f"imagine:subtle:{image_id}",
        f"imagine:strong:{image_id}",
        "imagine:reroll",
        "imagine:remix",
        "imagine:delete:u1",
        None,  # the link to the full-size file
    ]
    # The message said "Queued" before the image replaced it.
    first = fake.calls_to(interaction["token"])[0]
    assert first.json["content"].startswith("⏳ Queued")


def test_progress_edits_are_throttled_and_precede_the_image(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    interaction = command("slow painting", steps=60, count=1)
    assert post(bot, signer, interaction).json() == {"type": 5}
    final = final_edit(fake, interaction["token"])
    edits = [c for c in fake.calls_to(interaction["token"]) if c.status < 300]
    progress = [c for c in edits if not c.files]
    assert edits[-1] is final and final.files
    rendering = [c.json["content"] for c in progress if "Rendering step" in c.json["content"]]
    assert rendering, [c.json for c in progress]
    assert rendering[-1].endswith("/60…")
    # Never two edits closer than the configured interval (minus scheduling jitter).
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
    assert all(gap >= PROGRESS_INTERVAL_S * 0.8 for gap in gaps), gaps


def test_reroll_uses_the_message_parameters_and_a_new_seed(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    original = command("a lighthouse", seed=5, steps=5, size="96x64", guidance=3.5, count=1)
    post(bot, signer, original)
    shown = final_edit(fake, original["token"]).json

    reroll = click(shown, "imagine:reroll")
    assert post(bot, signer, reroll).json() == {"type": 5}
    rerolled = final_edit(fake, reroll["token"])
    fields = {f["name"]: f["value"] for f in rerolled.json["embeds"][0]["fields"]}
    assert rerolled.json["embeds"][0]["description"] == "a lighthouse"
    assert (fields["Steps"], fields["Size"], fields["Guidance"]) == ("5", "96x64", "3.5")
    assert fields["Seed"] != "5" and fields["Images"] == "1"  # one image asked for: one again
    assert decode_png(rerolled.files["files[0]"][2]).shape == (64, 96, 3)


def test_unreadable_button_message_is_an_ephemeral_refusal(bot: str, signer: DiscordSigner) -> None:
    response = post(bot, signer, click({"embeds": [{"title": "something else"}]}, "imagine:reroll"))
    assert response.json()["type"] == 4
    assert response.json()["data"]["flags"] == 64


def test_rate_limit_429_is_waited_out_and_retried(bot: str, signer: DiscordSigner, fake: FakeDiscord) -> None:
    interaction = command("patience")
    fake.fail_next(
        interaction["token"],
        ScriptedAnswer(429, {"message": "You are being rate limited.", "retry_after": 0.4, "global": False}),
    )
    post(bot, signer, interaction)
    final = final_edit(fake, interaction["token"])
    calls = fake.calls_to(interaction["token"])
    assert calls[0].status == 429
    assert calls[1].json == calls[0].json  # the same edit, retried
    assert calls[1].at - calls[0].at >= 0.4
    assert final.files


def test_discord_5xx_is_retried_with_backoff(bot: str, signer: DiscordSigner, fake: FakeDiscord) -> None:
    interaction = command("resilience")
    fake.fail_next(
        interaction["token"],
        ScriptedAnswer(500, {"message": "oops"}),
        ScriptedAnswer(502, {"message": "bad gateway"}),
    )
    post(bot, signer, interaction)
    final = final_edit(fake, interaction["token"])
    statuses = [c.status for c in fake.calls_to(interaction["token"])]
    assert statuses[:3] == [500, 502, 200], statuses
    assert final.files


def test_image_over_the_upload_limit_is_reencoded_to_fit(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    interaction = command("detailed", seed=3, size="128x128", count=1)
    interaction["attachment_size_limit"] = 6000
    post(bot, signer, interaction)
    final = final_edit(fake, interaction["token"])
    filename, content_type, data = final.files["files[0]"]
    assert len(data) <= 6000
    assert content_type in {"image/webp", "image/jpeg"}
    assert filename.rsplit(".", 1)[1] in {"webp", "jpg"}
    assert final.json["attachments"][0]["filename"] == filename
    assert "upload limit" in final.json["content"]


def test_per_user_limit_counts_images_not_commands(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    # The limit is 8 images: two grids of four fill it, and even one more image is refused.
    jobs = [command(f"job {i}", user="eager", steps=6) for i in range(2)]
    jobs.append(command("one more", user="eager", steps=2, count=1))
    answers = [post(bot, signer, job).json() for job in jobs]
    assert answers[0] == {"type": 5} and answers[1] == {"type": 5}
    assert answers[2]["type"] == 4 and answers[2]["data"]["flags"] == 64
    assert "already have 8 images" in answers[2]["data"]["content"], answers[2]
    assert post(bot, signer, command("someone else", user="patient", steps=2, count=1)).json() == {"type": 5}
    for job in jobs[:2]:
        final_edit(fake, job["token"])
    # Slots are released when a job ends.
    later = command("again", user="eager", steps=2)
    assert post(bot, signer, later).json() == {"type": 5}
    final_edit(fake, later["token"])


@pytest.mark.parametrize(
    ("interaction", "expected"),
    [
        (command("a forbidden thing"), "not allowed"),
        (command("a cat", negative_prompt="FORBIDDEN"), "not allowed"),
        (command("a cat", guild="other-guild"), "not enabled here"),
        (command("a cat", guild=None), "not enabled here"),
        (command("a cat", size="100x100"), "size"),
        (command("a cat", steps=500), "steps"),
        (command("a cat", seed="not a number"), "seed"),
        (command("a cat", count=9), "'count' must be between 1 and 4"),
        (command("a cat", ar="5:4"), "'ar' must be one of"),
        (command("a cat", ar="16:9", size="64x64"), "'ar' or option 'size'"),
    ],
    ids=[
        "banned",
        "banned-negative",
        "guild",
        "dm",
        "size",
        "steps",
        "seed-type",
        "count",
        "ar",
        "ar-and-size",
    ],
)
def test_refusals_are_ephemeral_and_start_nothing(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, interaction: dict, expected: str
) -> None:
    response = post(bot, signer, interaction)
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == 4 and body["data"]["flags"] == 64
    assert expected in body["data"]["content"]
    assert_nothing_sent(bot, signer, fake, interaction["token"])


def test_ack_stays_fast_while_the_model_is_saturated(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    load_done = threading.Event()
    statuses: list[int] = []

    def load() -> None:
        with httpx.Client(base_url=bot, timeout=300) as http:
            threads = [
                threading.Thread(
                    target=lambda i=i: statuses.append(
                        http.get("/imagine", params={"prompt": f"load {i}", "steps": 10}).status_code
                    )
                )
                for i in range(16)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        load_done.set()

    load_started = time.time()
    threading.Thread(target=load, daemon=True).start()
    handle = serve.get_deployment_handle("DiffusionModel", app_name="bot")
    # Saturated: the model is rendering a full batch of the load requests.
    wait_for(
        lambda: any(b["at"] >= load_started and b["size"] > 1 for b in handle.batch_log.remote().result()),
        timeout_s=60,
        what="the model to start a batch of the load",
    )
    assert not load_done.is_set(), "the load finished before the ACK could be measured"
    interaction = command("while busy", user="busy-user")
    started = time.monotonic()
    response = post(bot, signer, interaction)
    ack_s = time.monotonic() - started
    assert response.json() == {"type": 5}
    assert ack_s < 3.0, ack_s
    assert load_done.wait(300)
    assert set(statuses) == {200}
    assert final_edit(fake, interaction["token"], timeout_s=180).files


# --- failures after the deferral always end in an edited message -----------------------------


@pytest.fixture(scope="module")
def failing_bot(bot: str, tiny_model_dir: Path, fake: FakeDiscord, signer: DiscordSigner) -> str:
    """A bot whose model takes one job at a time, queues one, and gives up after 3 seconds."""
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=4,
        max_steps=500,
        request_timeout_s=3,
        **discord_args(fake, signer),
    )
    deploy_fixed_capacity_app(settings, "failing", "/failing", in_flight=1, queued=1)
    return bot


def test_timeout_after_deferral_edits_the_message_with_the_error(
    failing_bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    interaction = command("never finishes", steps=500, seed=9, count=1)
    assert post(failing_bot, signer, interaction, prefix="/failing").json() == {"type": 5}
    final = final_edit(fake, interaction["token"])
    assert not final.files
    assert final.json["content"].startswith("❌")
    assert "not ready within 3 seconds" in final.json["content"]
    fields = {f["name"]: f["value"] for f in final.json["embeds"][0]["fields"]}
    assert fields["Seed"] == "9"
    assert final.json["components"][0]["components"][0]["custom_id"] == "imagine:retry"


def test_full_model_queue_edits_the_message_with_a_busy_error(
    failing_bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    jobs = [command(f"crowd {i}", user=f"user{i}", steps=300, count=1) for i in range(4)]
    for job in jobs:
        assert post(failing_bot, signer, job, prefix="/failing").json() == {"type": 5}
    finals = [final_edit(fake, job["token"]) for job in jobs]
    contents = [f.json.get("content", "") for f in finals]
    assert any("at capacity" in c for c in contents), contents
    assert all(f.files or c.startswith("❌") for f, c in zip(finals, contents, strict=True))


def test_retry_button_keeps_the_seed(failing_bot: str, signer: DiscordSigner, fake: FakeDiscord) -> None:
    failed = {
        "embeds": [
            {
                "description": "again",
                "fields": [
                    {"name": "Seed", "value": "123"},
                    {"name": "Steps", "value": "2"},
                    {"name": "Size", "value": "64x64"},
                    {"name": "Guidance", "value": "7.5"},
                    {"name": "Scheduler", "value": "ddim"},
                ],
            }
        ]
    }
    retry = click(failed, "imagine:retry")
    assert post(failing_bot, signer, retry, prefix="/failing").json() == {"type": 5}
    final = final_edit(fake, retry["token"])
    fields = {f["name"]: f["value"] for f in final.json["embeds"][0]["fields"]}
    assert fields["Seed"] == "123"
    assert final.files


def test_job_that_cannot_finish_in_the_token_window_is_refused_up_front(
    failing_bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    first = command("measure me", steps=2, count=1)  # a render has been measured: the estimate is real
    assert post(failing_bot, signer, first, prefix="/failing").json() == {"type": 5}
    assert final_edit(fake, first["token"]).files
    # Created 14 min 40 s ago (its id says so): less time is left than any render takes.
    refused = command("too late", steps=2, count=1, created_at=time.time() - TOKEN_LIFETIME_S + 20)
    body = post(failing_bot, signer, refused, prefix="/failing").json()
    assert body["type"] == 4 and body["data"]["flags"] == 64
    assert "queue is too long" in body["data"]["content"]
    assert_nothing_sent(failing_bot, signer, fake, refused["token"], prefix="/failing")


# --- starting from a picture: attachments, Variations, Upscale ------------------------------------


def noise_png(seed: int, size: int = 64) -> bytes:
    pixels = (np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def with_attachment(interaction: dict, url: str, size: int = 1000, **options: object) -> dict:
    """The interaction as Discord sends an ATTACHMENT option: an id, resolved in ``data.resolved``."""
    data = interaction["data"]
    data["options"].append({"name": "image", "type": 11, "value": "4242"})
    data["options"] += [{"name": k, "type": 10, "value": v} for k, v in options.items()]
    attachment = {"id": "4242", "filename": "in.png", "url": url, "size": size, "content_type": "image/png"}
    data["resolved"] = {"attachments": {"4242": attachment}}
    return interaction


def shown_message(call: RecordedCall) -> dict:
    """The message as a later click carries it: its embeds, and its attachments with CDN URLs."""
    return {"embeds": call.json["embeds"], "attachments": call.answer["attachments"]}


def fields_of(call: RecordedCall) -> dict[str, str]:
    return {f["name"]: f["value"] for f in call.json["embeds"][0]["fields"]}


def image_edit(base: str, image: bytes, **fields: object) -> np.ndarray:
    """The same job through the OpenAI edits API: what the Discord job must have rendered."""
    response = httpx.post(
        f"{base}/v1/images/edits",
        data={k: str(v) for k, v in fields.items()},
        files={"image": ("image.png", image, "image/png")},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))


def fetched(fake: FakeDiscord, url: str) -> list[RecordedCall]:
    path = httpx.URL(url).path
    return [c for c in fake.calls if c.method == "GET" and c.path.split("?")[0] == path]


def test_imagine_with_an_attachment_renders_from_that_picture(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    picture = noise_png(1)
    url = fake.host(f"/ephemeral-attachments/{uuid.uuid4().hex}/in.png?ex=1&hm=2", picture)
    interaction = with_attachment(command("a painting", seed=41, size="64x64", count=1), url, strength=0.5)
    assert post(bot, signer, interaction).json() == {"type": 5}
    assert len(fetched(fake, url)) == 1  # fetched once, before the answer
    final = final_edit(fake, interaction["token"])
    assert final.files, final.json
    fields = fields_of(final)
    assert (fields["Mode"], fields["Strength"], fields["Seed"]) == ("img2img", "0.5", "41")
    assert fields["Source"] == url  # Re-roll and Retry start from it again
    rendered = decode_png(final.files["files[0]"][2])
    # It rendered exactly the img2img job of that picture (the same job through the edits API).
    same = image_edit(bot, picture, prompt="a painting", seed=41, strength=0.5, size="64x64", steps=4)
    assert max_pixel_difference(rendered, same) <= 1
    other = image_edit(bot, noise_png(2), prompt="a painting", seed=41, strength=0.5, size="64x64", steps=4)
    assert max_pixel_difference(rendered, other) > 10  # and the picture mattered
    assert final.json["components"][0]["components"][0]["custom_id"].startswith("imagine:upscale:img_")


def custom_ids(call: RecordedCall) -> dict[str, str]:
    """The message's buttons by their label (link buttons have no custom_id)."""
    return {
        b["label"]: b.get("custom_id", b.get("url"))
        for row in call.json["components"]
        for b in row["components"]
    }


def test_upscale_and_vary_start_from_the_stored_image(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    original = command("a harbour", seed=5, steps=4, size="64x64", count=1)
    post(bot, signer, original)
    shown = final_edit(fake, original["token"])
    message = shown_message(shown)
    png = shown.files["files[0]"][2]
    buttons = custom_ids(shown)
    image_id = buttons["🔍 Upscale"].rsplit(":", 1)[1]
    stored_url = f"{bot}/images/{image_id}.png"
    assert buttons["Full size"] == stored_url

    subtle = click(message, buttons["🎨 Vary (subtle)"])
    assert post(bot, signer, subtle).json() == {"type": 5}
    varied = final_edit(fake, subtle["token"])
    fields = fields_of(varied)
    assert (fields["Mode"], fields["Strength"], fields["Source"]) == ("img2img", "0.35", stored_url)
    assert (fields["Images"], fields["Size"]) == ("4", "64x64") and fields["Seed"] != "5"
    # A grid of four variations; the first is exactly the img2img of the stored image at its seed.
    expected = image_edit(
        bot, png, prompt="a harbour", seed=fields["Seed"], strength=0.35, size="64x64", steps=4
    )
    first = np.asarray(tile(varied.files["files[0]"][2], 0, 4).convert("RGB"))
    assert max_pixel_difference(first, expected) <= 1

    upscale = click(message, buttons["🔍 Upscale"])
    assert post(bot, signer, upscale).json() == {"type": 5}
    upscaled = final_edit(fake, upscale["token"])
    fields = fields_of(upscaled)
    assert (fields["Mode"], fields["Strength"]) == ("upscale", "0.3")
    assert (fields["Seed"], fields["Size"], fields["Source"]) == ("5", "128x128", stored_url)
    big = decode_png(upscaled.files["files[0]"][2])
    assert big.shape == (128, 128, 3)
    # The resize then the low-strength img2img pass, of the stored image.
    expected = image_edit(bot, png, prompt="a harbour", seed=5, strength=0.3, size="128x128", steps=4)
    assert max_pixel_difference(big, expected) <= 1

    # Stateless: a Re-roll of the upscaled message starts again from its source, at its size.
    reroll = click(shown_message(upscaled), "imagine:reroll")
    assert post(bot, signer, reroll).json() == {"type": 5}
    rerolled = final_edit(fake, reroll["token"])
    fields = fields_of(rerolled)
    assert (fields["Mode"], fields["Source"], fields["Size"]) == ("upscale", stored_url, "128x128")
    assert fields["Seed"] != "5"
    assert decode_png(rerolled.files["files[0]"][2]).shape == (128, 128, 3)
    # Every one of them read the picture from the store: Discord's copy was never fetched.
    assert fetched(fake, message["attachments"][0]["url"]) == []


def test_upscale_past_the_largest_size_is_refused_before_fetching(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    url = fake.host(f"/attachments/{uuid.uuid4().hex}/big.png", noise_png(3))
    job = ImageSpec("huge", 1024, 512, 4, 7.5, "ddim", seed=1)
    message = {
        "embeds": finished_message(job, "big.png", 1.0)["embeds"],
        "attachments": [{"id": "1", "url": url}],
    }
    response = post(bot, signer, click(message, "imagine:upscale")).json()
    assert response["type"] == 4 and response["data"]["flags"] == 64, response
    assert "2048x1024" in response["data"]["content"] and "largest size" in response["data"]["content"]
    assert fetched(fake, url) == []


@pytest.mark.parametrize(
    "where",
    ["localhost", "metadata", "not-an-image", "too-large"],
)
def test_attachments_from_elsewhere_or_unusable_are_refused(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, where: str
) -> None:
    path = f"/attachments/{uuid.uuid4().hex}/in.png"
    data = b"not an image at all" if where == "not-an-image" else noise_png(4)
    url = fake.host(path, data)
    size = len(data)
    if where == "localhost":  # the same fake server by a name that is not on the allow-list
        url = url.replace("127.0.0.1", "localhost")
    elif where == "metadata":
        url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    elif where == "too-large":
        size = 30 * 1024 * 1024  # Discord says how large the upload is: over max_input_bytes
    interaction = with_attachment(command("from elsewhere"), url, size=size)
    body = post(bot, signer, interaction).json()
    assert body["type"] == 4 and body["data"]["flags"] == 64, body
    expected = {
        "localhost": "only taken from Discord",
        "metadata": "only taken from Discord",
        "not-an-image": "not a PNG, JPEG or WebP",
        "too-large": "MiB",
    }[where]
    assert expected in body["data"]["content"], body
    assert len(fetched(fake, path)) == (1 if where == "not-an-image" else 0)
    assert fake.calls_to(interaction["token"]) == []


# --- the grid: U1-U4, V1-V4, Remix, Delete, aspect ratios -----------------------------------------


def generated(base: str, **fields: object) -> list[np.ndarray]:
    """The same images through the OpenAI API: what a grid's images must be."""
    response = httpx.post(f"{base}/v1/images/generations", json=fields, timeout=120)
    assert response.status_code == 200, response.text
    return [decode_png(base64.b64decode(item["b64_json"])) for item in response.json()["data"]]


def stored_png(base: str, image_id: str) -> bytes:
    response = httpx.get(f"{base}/images/{image_id}.png", timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def batches_since(at: float) -> list[dict]:
    handle = serve.get_deployment_handle("DiffusionModel", app_name="bot")
    return [b for b in handle.batch_log.remote().result() if b["at"] >= at]


def modal_submit(message: dict, values: dict[str, str], user: str = "u1") -> dict:
    """A Remix modal's submission as Discord sends it: its text inputs, and the message it came from."""
    submitted = click(message, "imagine:remix", user)
    submitted["type"] = 5
    submitted["data"] = {
        "custom_id": "imagine:remix",
        "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": name, "value": value}]}
            for name, value in values.items()
        ],
    }
    return submitted


@pytest.fixture(scope="module")
def grid(bot: str, signer: DiscordSigner, fake: FakeDiscord) -> RecordedCall:
    """One /imagine of four images (the default count), as the finished edit delivered it."""
    interaction = command("a harbour at dusk", seed=500, steps=4, negative_prompt="fog")
    assert post(bot, signer, interaction).json() == {"type": 5}
    return final_edit(fake, interaction["token"])


def test_imagine_posts_a_grid_of_four_with_numbered_buttons(bot: str, grid: RecordedCall) -> None:
    filename, content_type, data = grid.files["files[0]"]
    assert (filename, content_type) == ("grid-500.png", "image/png")
    assert decode_png(data).shape == (128, 128, 3)  # 2x2 of 64x64
    fields = fields_of(grid)
    assert (fields["Seed"], fields["Images"], fields["Size"]) == ("500", "4", "64x64")
    rows = grid.json["components"]
    assert [[b["label"] for b in row["components"]] for row in rows] == [
        ["U1", "U2", "U3", "U4"],
        ["V1", "V2", "V3", "V4"],
        ["🎲 Re-roll", "✏️ Remix", "🗑️ Delete"],
    ]
    ids = custom_ids(grid)
    assert all(len(custom_id) <= 100 for custom_id in ids.values())
    # Each image is in the store, and the grid shows exactly those, in order: consecutive seeds
    # from 500, the same four images the OpenAI API renders for seed 500.
    expected = generated(
        bot, prompt="a harbour at dusk", negative_prompt="fog", n=4, seed=500, size="64x64", steps=4
    )
    for n in range(1, 5):
        image_id = ids[f"U{n}"].rsplit(":", 1)[1]
        assert ids[f"V{n}"] == f"imagine:v{n}:{image_id}"
        stored = decode_png(stored_png(bot, image_id))
        assert max_pixel_difference(stored, expected[n - 1]) <= 1
        assert np.array_equal(np.asarray(tile(data, n - 1, 4).convert("RGB")), stored)


def test_u2_answers_with_the_stored_second_image_without_rendering(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, grid: RecordedCall
) -> None:
    image_id = custom_ids(grid)["U2"].rsplit(":", 1)[1]
    clicked_at = time.time()
    pick = click(shown_message(grid), f"imagine:u2:{image_id}")
    assert post(bot, signer, pick).json() == {"type": 5}
    picked = final_edit(fake, pick["token"])
    filename, content_type, data = picked.files["files[0]"]
    assert (filename, content_type) == ("imagine-501.png", "image/png")
    assert data == stored_png(bot, image_id)  # the stored file itself, byte for byte
    assert batches_since(clicked_at) == []  # and the model rendered nothing for it
    fields = fields_of(picked)
    assert (fields["Seed"], fields["Size"], fields["Steps"], fields["Negative prompt"]) == (
        "501",
        "64x64",
        "4",
        "fog",
    )
    assert "Images" not in fields and picked.json["embeds"][0]["description"] == "a harbour at dusk"
    buttons = custom_ids(picked)
    assert buttons["🔍 Upscale"] == f"imagine:upscale:{image_id}"
    assert buttons["🎨 Vary (subtle)"] == f"imagine:subtle:{image_id}"
    assert buttons["🎨 Vary (strong)"] == f"imagine:strong:{image_id}"
    assert buttons["Full size"] == f"{bot}/images/{image_id}.png"
    assert {"🎲 Re-roll", "✏️ Remix", "🗑️ Delete"} <= set(buttons)


def test_v3_gives_four_variations_of_the_third_image(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, grid: RecordedCall
) -> None:
    image_id = custom_ids(grid)["V3"].rsplit(":", 1)[1]
    vary = click(shown_message(grid), f"imagine:v3:{image_id}")
    assert post(bot, signer, vary).json() == {"type": 5}
    varied = final_edit(fake, vary["token"])
    fields = fields_of(varied)
    stored_url = f"{bot}/images/{image_id}.png"
    assert (fields["Mode"], fields["Strength"], fields["Source"]) == ("img2img", "0.6", stored_url)
    assert (fields["Images"], fields["Size"]) == ("4", "64x64")
    assert [b["label"] for b in varied.json["components"][0]["components"]] == ["U1", "U2", "U3", "U4"]
    # Each is the img2img of the third image at the variation strength, seeds consecutive.
    third = stored_png(bot, image_id)
    seed = int(fields["Seed"])
    grid_png = varied.files["files[0]"][2]
    for index in (0, 3):
        expected = image_edit(
            bot,
            third,
            prompt="a harbour at dusk",
            negative_prompt="fog",
            seed=seed + index,
            strength=0.6,
            size="64x64",
            steps=4,
        )
        assert max_pixel_difference(np.asarray(tile(grid_png, index, 4).convert("RGB")), expected) <= 1


def test_remix_opens_a_prefilled_modal_and_renders_the_edited_prompt(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, grid: RecordedCall
) -> None:
    modal = post(bot, signer, click(shown_message(grid), "imagine:remix")).json()
    assert modal["type"] == 9 and modal["data"]["custom_id"] == "imagine:remix"
    inputs = {row["components"][0]["custom_id"]: row["components"][0] for row in modal["data"]["components"]}
    assert inputs["prompt"]["value"] == "a harbour at dusk" and inputs["prompt"]["type"] == 4
    assert inputs["negative_prompt"]["value"] == "fog"
    submitted = modal_submit(shown_message(grid), {"prompt": "a harbour at dawn", "negative_prompt": "fog"})
    assert post(bot, signer, submitted).json() == {"type": 5}
    remixed = final_edit(fake, submitted["token"])
    fields = fields_of(remixed)
    assert remixed.json["embeds"][0]["description"] == "a harbour at dawn"
    assert (fields["Seed"], fields["Images"], fields["Steps"]) == (
        "500",
        "4",
        "4",
    )  # the same seed and settings
    expected = generated(
        bot, prompt="a harbour at dawn", negative_prompt="fog", n=1, seed=500, size="64x64", steps=4
    )
    first = np.asarray(tile(remixed.files["files[0]"][2], 0, 4).convert("RGB"))
    assert max_pixel_difference(first, expected[0]) <= 1
    # A blank prompt is refused like any bad option.
    blank = post(bot, signer, modal_submit(shown_message(grid), {"prompt": " "})).json()
    assert blank["type"] == 4 and blank["data"]["flags"] == 64 and "prompt" in blank["data"]["content"]


def test_delete_only_by_the_requester_or_a_moderator(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, grid: RecordedCall
) -> None:
    delete = custom_ids(grid)["🗑️ Delete"]
    assert delete == "imagine:delete:u1"
    stranger = click(shown_message(grid), delete, user="u2")
    answer = post(bot, signer, stranger).json()
    assert answer["type"] == 4 and answer["data"]["flags"] == 64
    assert "Only the person who asked" in answer["data"]["content"]
    for allowed in (
        click(shown_message(grid), delete, user="u1"),
        click(shown_message(grid), delete, user="mod"),
    ):
        if allowed["member"]["user"]["id"] == "mod":
            allowed["member"]["permissions"] = str(1 << 13)  # MANAGE_MESSAGES
        assert post(bot, signer, allowed).json() == {"type": 6}
        token = allowed["token"]
        fake.wait_for(lambda calls, token=token: any(token in c.path for c in calls), 30, "the deletion")
        (deleted,) = fake.calls_to(token)
        assert deleted.method == "DELETE"
        assert deleted.path == f"/api/v10/webhooks/{APP_ID}/{allowed['token']}/messages/@original"
    assert_nothing_sent(bot, signer, fake, stranger["token"])


@pytest.mark.parametrize("button", ["u1", "v1", "subtle"])
def test_a_deleted_or_expired_image_is_a_clear_ephemeral_message(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, grid: RecordedCall, button: str
) -> None:
    gone = "img_0000000000001" + "0" * 10  # well formed, never stored
    interaction = click(shown_message(grid), f"imagine:{button}:{gone}")
    response = post(bot, signer, interaction).json()
    assert response["type"] == 4 and response["data"]["flags"] == 64, response
    assert "no longer stored" in response["data"]["content"]
    assert fake.calls_to(interaction["token"]) == []


def test_aspect_ratio_gives_that_shape_on_the_latent_grid(
    bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    interaction = command("a wide valley", seed=3, steps=2, count=1, ar="16:9")
    assert post(bot, signer, interaction).json() == {"type": 5}
    final = final_edit(fake, interaction["token"])
    height, width, _ = decode_png(final.files["files[0]"][2]).shape
    # The model's native 64x64, widened: the short side held at min_size (64), multiples of 8.
    assert (width, height) == (112, 64) and fields_of(final)["Size"] == "112x64"
    assert abs(width / height - 16 / 9) < 0.05


def test_screenshot_of_the_grid_message(grid: RecordedCall) -> None:
    """docs/discord-grid.png: the grid message as the stand-in recorded it, laid out like Discord's
    client by headless Chromium (the grid image loaded from the stand-in's CDN URL)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    html = message_html(grid.json, grid.answer["attachments"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 640, "height": 400})
            page.set_content(html, wait_until="load")
            loaded = page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth === 128)")
            assert loaded, "the grid image did not load from the stand-in"
            assert page.locator("button").all_inner_texts()[:8] == [
                "U1",
                "U2",
                "U3",
                "U4",
                "V1",
                "V2",
                "V3",
                "V4",
            ]
            page.locator(".message").screenshot(path=SCREENSHOTS / "discord-grid.png")
        finally:
            browser.close()
    if os.environ.get("RAYDIFFUSION_UPDATE_DOCS_SCREENSHOTS"):
        shutil.copyfile(SCREENSHOTS / "discord-grid.png", REPO / "docs" / "discord-grid.png")


# --- registration ----------------------------------------------------------------------------


def test_register_puts_the_command_definitions(fake: FakeDiscord) -> None:
    env = {
        **os.environ,
        "DISCORD_APPLICATION_ID": APP_ID,
        "DISCORD_BOT_TOKEN": "bot-token-xyz",
        "DISCORD_API_BASE_URL": fake.url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "bot_gateway.register", "--guild", "4242"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "registered /imagine" in result.stdout and "guild 4242" in result.stdout
    (call,) = fake.calls_to("/commands")
    assert call.method == "PUT"
    assert call.path == f"/api/v10/applications/{APP_ID}/guilds/4242/commands"
    assert call.headers["authorization"] == "Bot bot-token-xyz"
    assert [command["name"] for command in call.json] == ["imagine", "settings"]
    imagine = call.json[0]
    options = {o["name"]: o for o in imagine["options"]}
    assert options["prompt"]["required"] is True and options["prompt"]["type"] == 3
    assert set(options) == {
        "prompt",
        "negative_prompt",
        "seed",
        "steps",
        "size",
        "guidance",
        "image",
        "strength",
        "count",
        "ar",
    }
    assert options["count"]["type"] == 4 and options["count"]["max_value"] == 4
    assert {c["value"] for c in options["ar"]["choices"]} >= {"1:1", "16:9", "9:16", "3:2", "2:3"}
    assert options["steps"]["type"] == 4 and options["guidance"]["type"] == 10
    assert options["image"]["type"] == 11 and options["strength"]["type"] == 10
    assert "required" not in options["image"]
    assert {c["value"] for c in options["size"]["choices"]} >= {"512x512"}


def test_register_without_credentials_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot_gateway.register"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "DISCORD_APPLICATION_ID" in result.stderr and "DISCORD_BOT_TOKEN" in result.stderr


# --- the token's 15 minutes, connections, adoption, a store that hangs ---------------------------


def test_each_job_closes_its_discord_connections(bot: str, signer: DiscordSigner, fake: FakeDiscord) -> None:
    interaction = command("tidy", steps=2)
    assert post(bot, signer, interaction).json() == {"type": 5}
    assert final_edit(fake, interaction["token"]).files
    fake.wait_closed(interaction["token"], timeout_s=10)


def test_a_job_that_cannot_finish_before_its_token_dies_is_stopped_and_says_so(
    failing_bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    warm = command("warm up", user="late", steps=2, count=1)  # measured speed: admission lets the job in
    assert post(failing_bot, signer, warm, prefix="/failing").json() == {"type": 5}
    assert final_edit(fake, warm["token"]).files
    # Work this ingress does not see (another ingress replica's, say) holds the one model replica.
    handle = serve.get_deployment_handle("DiffusionModel", app_name="failing")
    blocker = handle.options(stream=True).generate_stream.remote(
        ImageSpec("blocker", 128, 128, 300, 7.5, "ddim", seed=1)
    )
    next(event for event in blocker if getattr(event, "state", None) == "rendering")
    # Its id says the command was created long ago: 2.5 s are left before the render must stop
    # (less than this app's 3 s request timeout, so only the token's deadline can stop it; more
    # than the second or so a loaded CI machine takes to verify and admit the command, else
    # admission already refuses it as unable to finish).
    created = time.time() - (TOKEN_LIFETIME_S - DELIVERY_MARGIN_S - 2.5)
    interaction = command("too slow", user="late", steps=2, seed=12, count=1, created_at=created)
    assert post(failing_bot, signer, interaction, prefix="/failing").json() == {"type": 5}
    final = final_edit(fake, interaction["token"], timeout_s=60)
    blocker.cancel()
    token_expires = time.monotonic() + (created + TOKEN_LIFETIME_S - time.time())
    render_deadline = token_expires - DELIVERY_MARGIN_S
    assert not final.files
    assert "15 minutes" in final.json["content"], final.json
    # Stopped at its deadline and told so, not left waiting for the model until the token died.
    assert final.at < render_deadline + 6, final.at - render_deadline
    assert final.at < token_expires


def test_discord_job_survives_its_ingress_dying(bot: str, signer: DiscordSigner, fake: FakeDiscord) -> None:
    interaction = command("outlives its ingress", user="adopted", steps=80, seed=31, count=1)
    assert post(bot, signer, interaction).json() == {"type": 5}
    fake.wait_for(
        lambda calls: any(
            interaction["token"] in c.path and "Rendering" in str((c.json or {}).get("content"))
            for c in calls
        ),
        60,
        "the render to start",
    )
    (ingress,) = serve_replicas("bot", "Ingress")
    kill_serve_replica(ingress)
    # Serve starts a new ingress; its sweep adopts the silent job and must still edit the message.
    final = final_edit(fake, interaction["token"], timeout_s=180)
    assert final.files, final.json
    fields = {f["name"]: f["value"] for f in final.json["embeds"][0]["fields"]}
    assert fields["Seed"] == "31"


def test_adopted_discord_job_with_a_dead_token_is_not_rendered(
    bot: str, signer: DiscordSigner, fake: FakeDiscord, data_dir: Path
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    created = time.time() - TOKEN_LIFETIME_S - 60  # its token died a minute ago
    record = JobRecord(
        id="pred_expired0000000000001",
        status="processing",
        source="discord",
        input={"prompt": "too old", "n": 1},
        jobs=[
            {
                "prompt": "too old",
                "width": 64,
                "height": 64,
                "steps": 3,
                "guidance_scale": 7.5,
                "scheduler": "ddim",
                "seed": 5,
                "negative_prompt": "",
            }
        ],
        reply_to=DiscordTarget(
            application_id=APP_ID,
            interaction_id=snowflake(created),
            token=token,
            token_expires_at=created + TOKEN_LIFETIME_S,
            attachment_size_limit=10 * 1024 * 1024,
        ).model_dump(),
        deadline_at=created + TOKEN_LIFETIME_S - DELIVERY_MARGIN_S,
        created_at=created,
        started_at=created + 1,
        heartbeat_at=created + 2,  # its ingress died long ago
        attempts=1,
    )
    asyncio.run(JobStore(LocalImageStore(data_dir)).accept(record))
    with httpx.Client(base_url=bot, timeout=30) as http:
        final = wait_for(
            lambda: (body := http.get(f"/v1/predictions/{record.id}").json())["status"] == "failed" and body,
            60,
            "the expired job to be failed by the sweep",
        )
    assert final["attempts"] == 1  # not rendered again
    assert "deadline" in final["error"]
    assert_nothing_sent(bot, signer, fake, token)


@pytest.fixture(scope="module")
def hanging_store_bot(
    serve_url: str, tiny_model_dir: Path, fake: FakeDiscord, signer: DiscordSigner
) -> Iterator[str]:
    """A bot whose S3 store accepts connections and never answers.

    Its model deployment is scaled to zero: nothing this bot is asked reaches the model (the
    store's answer, or its estimate, comes first), so no model replica is started for it.
    """
    hanging = HangingServer()
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        image_store="s3",
        s3_bucket="never-answers",
        s3_endpoint_url=hanging.url,
        **discord_args(fake, signer),
    )
    model_options = {"autoscaling_config": {"min_replicas": 0, "max_replicas": 1}}
    serve.run(compose(settings, model_options), name="hanging", route_prefix="/hanging")
    yield serve_url
    hanging.close()  # first: calls still waiting on the store fail at once instead of holding the delete
    serve.delete("hanging")


def test_ack_is_fast_and_says_try_again_when_the_store_hangs(
    hanging_store_bot: str, bot: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    interaction = command("stored nowhere")
    started = time.monotonic()
    response = post(hanging_store_bot, signer, interaction, prefix="/hanging")
    ack_s = time.monotonic() - started
    assert ack_s < 3.0, ack_s
    body = response.json()
    assert body["type"] == 4 and body["data"]["flags"] == 64, body
    assert "Try again" in body["data"]["content"]
    # Told "try again", so the job must not run: a job that ran would have edited its message
    # ("Queued") at once, long before a job sent afterwards to the working bot is delivered.
    assert_nothing_sent(bot, signer, fake, interaction["token"])


def test_defaults_unreadable_in_time_are_a_try_again_not_a_render_without_them(
    hanging_store_bot: str, signer: DiscordSigner
) -> None:
    """A Discord user (numeric id) may have /settings defaults: when the store cannot say in time,
    the answer is still fast, and a "try again" rather than an image made without them."""
    started = time.monotonic()
    response = post(hanging_store_bot, signer, command("no defaults", user="333333333333333333"), "/hanging")
    assert time.monotonic() - started < 3.0
    body = response.json()
    assert body["type"] == 4 and body["data"]["flags"] == 64, body
    assert "Try again" in body["data"]["content"], body
    settings = {**command("x", user="333333333333333333"), "data": {"name": "settings", "options": []}}
    started = time.monotonic()
    body = post(hanging_store_bot, signer, settings, "/hanging").json()
    assert time.monotonic() - started < 3.0
    assert body["data"]["flags"] == 64 and "Try again" in body["data"]["content"], body


def test_cold_start_wait_is_not_zero(hanging_store_bot: str, signer: DiscordSigner) -> None:
    # Nothing was ever rendered by this app: the wait is the cold-start estimate (120 s by
    # default), more than the minute this interaction has left before its render must stop.
    created = time.time() - (TOKEN_LIFETIME_S - DELIVERY_MARGIN_S - 60)
    body = post(hanging_store_bot, signer, command("cold", created_at=created), prefix="/hanging").json()
    assert body["type"] == 4 and "queue is too long" in body["data"]["content"], body
