"""The grid on its own: aspect ratios, custom_ids, the grid picture, messages, the Remix modal, per-user
images, delete permissions. The same flows end to end are in tests/serve/test_discord.py."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot_gateway.admission import JobsPerUser
from bot_gateway.aspect_ratios import ASPECT_RATIOS, AspectRatioError, size_for_ratio
from bot_gateway.commands import CommandOptionError, default_count, grid_from_options, max_grid
from bot_gateway.grids import compose_grid, compose_preview_grid, grid_shape, tile
from bot_gateway.messages import (
    REMIX_ID,
    Button,
    UnreadableMessageError,
    count_from_embed,
    finished_message,
    grid_message,
    params_from_embed,
    parse_custom_id,
    remix_modal,
    seed_of,
    spec_from_embed,
)
from bot_gateway.protocol import MANAGE_MESSAGES, CommandOption, Embed, InteractionData, Member
from serve_app.config.settings import AppSettings
from serve_app.core.images import MAX_SEED, ImageSpec
from serve_app.storage import LocalImageStore, new_image_id, stored_image_id

IDS = [new_image_id() for _ in range(4)]
JOBS = [
    ImageSpec("a castle", 512, 768, 25, 6.5, "euler_a", seed=99 + i, negative_prompt="fog") for i in range(4)
]


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
@pytest.mark.parametrize(("native", "low", "high"), [((512, 512), 64, 1024), ((1024, 1024), 256, 2048)])
def test_aspect_ratios_keep_the_shape_and_the_native_area_on_the_latent_grid(
    ratio: str, native: tuple[int, int], low: int, high: int
) -> None:
    width, height = map(int, size_for_ratio(ratio, native, low, high).split("x"))
    rw, rh = map(int, ratio.split(":"))
    assert width % 8 == 0 and height % 8 == 0
    assert abs(width / height - rw / rh) / (rw / rh) < 0.03  # the shape, as near as the grid allows
    assert abs(width * height / (native[0] * native[1]) - 1) < 0.08  # about the model's area
    assert low <= min(width, height) and max(width, height) <= high


def test_aspect_ratios_respect_the_size_bounds() -> None:
    assert size_for_ratio("16:9", (64, 64), 64, 1024) == "112x64"  # the short side held at min_size
    assert size_for_ratio("16:9", (1024, 1024), 64, 1024) == "1024x576"  # the long side at max_size
    assert size_for_ratio("1:1", (768, 768), 64, 1024) == "768x768"
    with pytest.raises(AspectRatioError, match="'ar' must be one of"):
        size_for_ratio("5:4", (512, 512), 64, 1024)


def test_count_and_ar_options() -> None:
    options = [CommandOption(name="count", type=4, value=2), CommandOption(name="ar", type=3, value="3:2")]
    assert grid_from_options(options) == (2, "3:2")
    assert grid_from_options([]) == (None, None)
    with pytest.raises(CommandOptionError, match="'ar' or option 'size'"):
        grid_from_options([*options, CommandOption(name="size", type=3, value="512x512")])
    with pytest.raises(CommandOptionError, match="'count' must be an integer"):
        grid_from_options([CommandOption(name="count", type=4, value="4")])
    assert default_count(AppSettings()) == 4 and max_grid(AppSettings()) == 4
    assert max_grid(AppSettings(max_images=64)) == 10  # two rows of U and two of V at most
    assert default_count(AppSettings(max_images=2)) == 2


def test_custom_ids_parse_back_and_refuse_anything_else() -> None:
    image_id = IDS[1]
    assert parse_custom_id(f"imagine:u2:{image_id}") == Button("pick", 2, image_id)
    assert parse_custom_id(f"imagine:v4:{image_id}") == Button("vary", 4, image_id)
    assert parse_custom_id(f"imagine:subtle:{image_id}") == Button("subtle", 0, image_id)
    assert parse_custom_id("imagine:delete:80351110224678912") == Button(
        "delete", user_id="80351110224678912"
    )
    assert parse_custom_id("imagine:reroll") == Button("reroll")
    for bad in (
        f"imagine:u0:{image_id}",
        f"imagine:u2:{image_id}\n",
        "imagine:u2:img_../../etc/passwd",
        "imagine:u2:img_123",
        "imagine:delete:",
        "imagine:delete:a b",
        "something:else",
        None,
    ):
        assert parse_custom_id(bad) is None, bad


def test_grid_message_has_numbered_buttons_within_discord_limits() -> None:
    message = grid_message(JOBS, IDS, "grid-99.png", 2.5, requester="42")
    rows = message["components"]
    assert len(rows) <= 5 and all(len(row["components"]) <= 5 for row in rows)
    labels = [b["label"] for row in rows for b in row["components"]]
    assert labels[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]
    ids = [b["custom_id"] for row in rows for b in row["components"]]
    assert len(set(ids)) == len(ids) and all(1 <= len(i) <= 100 for i in ids)
    assert ids[1] == f"imagine:u2:{IDS[1]}" and ids[6] == f"imagine:v3:{IDS[2]}"
    assert ids[8:] == ["imagine:reroll", REMIX_ID, "imagine:delete:42"]
    embeds = [Embed.model_validate(e) for e in message["embeds"]]
    assert count_from_embed(embeds) == 4
    assert params_from_embed(embeds, keep_seed=True).seed == 99
    # U3 shows the third image's own seed and the grid's parameters.
    picked = spec_from_embed(embeds, seed_of(99, 3))
    assert picked == ImageSpec("a castle", 512, 768, 25, 6.5, "euler_a", seed=101, negative_prompt="fog")
    assert seed_of(MAX_SEED, 2) == 0  # consecutive seeds wrap like build_image_specs'


def test_ten_images_fill_two_rows_of_each_and_a_control_row() -> None:
    jobs = [JOBS[0]] * 10
    rows = grid_message(jobs, [new_image_id() for _ in range(10)], "g.png", 1.0, requester="1")["components"]
    assert [len(row["components"]) for row in rows] == [5, 5, 5, 5, 3]


def test_single_image_message_offers_upscale_vary_and_the_full_size_file() -> None:
    message = finished_message(
        JOBS[0], "a.png", 1.0, link="https://x/images/a.png", image_id=IDS[0], requester="7"
    )
    buttons = [b for row in message["components"] for b in row["components"]]
    assert [b.get("custom_id") for b in buttons] == [
        f"imagine:upscale:{IDS[0]}",
        f"imagine:subtle:{IDS[0]}",
        f"imagine:strong:{IDS[0]}",
        "imagine:reroll",
        REMIX_ID,
        "imagine:delete:7",
        None,
    ]
    assert buttons[-1] == {"type": 2, "style": 5, "label": "Full size", "url": "https://x/images/a.png"}
    # A picked image names no count: its Re-roll draws a new grid.
    assert count_from_embed([Embed.model_validate(e) for e in message["embeds"]]) is None


def test_remix_modal_is_prefilled_and_its_submission_read_back() -> None:
    embeds = [Embed.model_validate(e) for e in grid_message(JOBS, IDS, "g.png", 1.0)["embeds"]]
    modal = remix_modal(embeds, 1000, 500)
    assert modal["type"] == 9 and modal["data"]["custom_id"] == REMIX_ID
    inputs = [row["components"][0] for row in modal["data"]["components"]]
    assert [(i["custom_id"], i["value"], i["type"]) for i in inputs] == [
        ("prompt", "a castle", 4),
        ("negative_prompt", "fog", 4),
    ]
    submitted = InteractionData.model_validate(
        {
            "custom_id": REMIX_ID,
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": "prompt", "value": "a ruin"}]},
                {"type": 1, "components": [{"type": 4, "custom_id": "negative_prompt", "value": ""}]},
            ],
        }
    )
    assert submitted.modal_values() == {"prompt": "a ruin", "negative_prompt": ""}
    with pytest.raises(UnreadableMessageError):
        remix_modal([Embed(title="x")], 1000, 500)


def test_grid_picture_holds_each_image_in_order() -> None:
    pngs = []
    for value in (10, 80, 160, 240):
        buffer = io.BytesIO()
        Image.new("RGB", (24, 16), (value, 0, 0)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    grid = compose_grid(pngs)
    assert Image.open(io.BytesIO(grid)).size == (48, 32)
    for index, value in enumerate((10, 80, 160, 240)):
        assert np.asarray(tile(grid, index, 4))[..., 0].tolist() == [[value] * 24] * 16
    assert [grid_shape(n) for n in (1, 2, 3, 4, 6, 9, 10)] == [
        (1, 1),
        (2, 1),
        (2, 2),
        (2, 2),
        (3, 2),
        (3, 3),
        (4, 3),
    ]
    # Previews: the images with one so far, the others left empty.
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 255, 255)).save(jpeg, format="JPEG")
    preview = Image.open(io.BytesIO(compose_preview_grid({2: jpeg.getvalue()}, 4)))
    assert preview.size == (16, 16)
    assert preview.getpixel((4, 12))[0] > 200 and preview.getpixel((12, 12))[0] < 100


def test_jobs_per_user_counts_images() -> None:
    limits = JobsPerUser(8)
    assert limits.try_acquire("a", 4) and limits.try_acquire("a", 4)
    assert not limits.try_acquire("a", 1)  # two grids of four: the limit, in images
    limits.release("a", 4)
    assert limits.running("a") == 4 and not limits.try_acquire("a", 5) and limits.try_acquire("a", 4)


def test_delete_permission_is_manage_messages_or_administrator() -> None:
    member = {"user": {"id": "1"}}
    assert Member.model_validate({**member, "permissions": str(MANAGE_MESSAGES)}).has_permission(
        MANAGE_MESSAGES
    )
    assert Member.model_validate({**member, "permissions": "8"}).has_permission(MANAGE_MESSAGES)  # admin
    assert not Member.model_validate({**member, "permissions": "2048"}).has_permission(MANAGE_MESSAGES)
    assert not Member.model_validate({**member, "permissions": "lots"}).has_permission(MANAGE_MESSAGES)
    assert not Member.model_validate(member).has_permission(MANAGE_MESSAGES)


def test_only_our_own_image_urls_are_read_from_the_store(tmp_path: object) -> None:
    store = LocalImageStore(str(tmp_path))
    image_id = IDS[0]
    assert (
        stored_image_id(f"https://bot.example/images/{image_id}.png", store, "https://bot.example")
        == image_id
    )
    assert stored_image_id(f"/images/{image_id}.png", store, "https://bot.example") == image_id
    assert (
        stored_image_id(f"https://evil.example/images/{image_id}.png", store, "https://bot.example") is None
    )
    assert stored_image_id("https://cdn.discordapp.com/a/b/c.png", store, "https://bot.example") is None
