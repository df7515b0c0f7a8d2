"""What the bot shows in Discord, and how a button click recovers the parameters it was shown with.

Buttons are stateless: the finished message's embed carries every parameter needed to render the
images again, and each button's ``custom_id`` (at most 100 characters) names what it acts on: the
stored image of U1-U4 and V1-V4 (``imagine:u2:img_...``), the user allowed to delete the message.
So every button works on any replica and after any restart, with nothing kept anywhere but the
message and the image store. An image that started from a picture also shows its mode, strength
and the picture's URL (``Source``), so a Re-roll, Remix or Retry starts from the same picture.

Messages: a grid (``/imagine`` with ``count`` > 1, V1-V4, Vary) shows one composed image with U and
V buttons per image; a single image (``count: 1``, U1-U4) shows Upscale, Vary (subtle, strong),
Re-roll, Remix, Delete and a link to the stored full-size file. Messages from before the grid
(``imagine:variations``, ``imagine:upscale`` without an id) keep working from their attachment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from bot_gateway.protocol import Embed
from serve_app.core.images import MAX_SEED, ImageKind, ImageSpec
from serve_app.core.params import GenerationParams
from serve_app.storage import IMAGE_ID

REROLL_ID = "imagine:reroll"
RETRY_ID = "imagine:retry"
REMIX_ID = "imagine:remix"
# Messages from before the grid: these start from the message's attachment.
VARIATIONS_ID = "imagine:variations"
UPSCALE_ID = "imagine:upscale"
ACCENT = 0x5865F2
ERROR_RED = 0xED4245
# Discord: at most 5 buttons in a row and 5 rows in a message; one row of controls leaves
# two rows each for U and V buttons.
BUTTONS_PER_ROW = 5
MAX_GRID = 10
IMAGES_FIELD = "Images"

Action = Literal[
    "reroll", "retry", "remix", "variations", "upscale", "pick", "vary", "subtle", "strong", "delete"
]
# custom_id -> action: "imagine:u2:<image id>" picks the grid's second image, "imagine:v2:..."
# varies it; "imagine:upscale:<id>", "imagine:subtle:<id>", "imagine:strong:<id>" act on one
# stored image; "imagine:delete:<user id>" names who may delete the message.
# Matched with fullmatch: "$" would let a trailing newline through.
_WITH_IMAGE = re.compile(
    r"imagine:(?:(?P<kind>[uv])(?P<index>[1-9]|10)|(?P<action>upscale|subtle|strong)):(?P<id>img_[0-9a-f]+)"
)
_DELETE = re.compile(r"imagine:delete:(?P<user>[A-Za-z0-9_-]{1,64})")
_PLAIN: dict[str, Action] = {
    REROLL_ID: "reroll",
    RETRY_ID: "retry",
    REMIX_ID: "remix",
    VARIATIONS_ID: "variations",
    UPSCALE_ID: "upscale",
}


@dataclass(frozen=True)
class Button:
    """A parsed ``custom_id``: what to do, on which grid image (1-based) or stored image, for whom."""

    action: Action
    index: int = 0
    image_id: str | None = None
    user_id: str | None = None


def parse_custom_id(custom_id: str | None) -> Button | None:
    """The button behind ``custom_id``; None for anything we never put on a message."""
    if not custom_id:
        return None
    if custom_id in _PLAIN:
        return Button(_PLAIN[custom_id])
    match = _WITH_IMAGE.fullmatch(custom_id)
    if match is not None:
        if not IMAGE_ID.fullmatch(match["id"]):
            return None
        if match["kind"]:
            action: Action = "pick" if match["kind"] == "u" else "vary"
            return Button(action, int(match["index"]), match["id"])
        return Button(match["action"], 0, match["id"])  # type: ignore[arg-type]
    match = _DELETE.fullmatch(custom_id)
    if match is not None:
        return Button("delete", user_id=match["user"])
    return None


def progress_text(
    state: str, step: int = 0, total: int = 0, ahead: int | None = None, wait_s: float | None = None
) -> str:
    """The message while a job waits or renders; a waiting caller sees their place in line."""
    if state == "rendering" and total:
        return f"🎨 Rendering step {step}/{total}…"
    if ahead is None:
        return "⏳ Queued…"
    place = f"⏳ Queued: {ahead} ahead of you"
    if wait_s is None:
        return place + "…"
    return f"{place}, about {max(1, round(wait_s))} s…"


def preview_message(job: ImageSpec, text: str, filename: str) -> dict[str, Any]:
    """A progress edit showing the render's latest preview (a small JPEG) under the progress text.

    ``attachments`` names only the new file: Discord drops every attachment a PATCH leaves out, so
    the message never accumulates previews.
    """
    return {
        "content": text,
        "embeds": [
            {
                "title": "/imagine",
                "description": job.prompt,
                "color": ACCENT,
                "image": {"url": f"attachment://{filename}"},
            }
        ],
        "attachments": [{"id": 0, "filename": filename}],
    }


@dataclass(frozen=True)
class StartImage:
    """The picture a job starts from: where to fetch it, and what to do with it."""

    url: str  # shown as the message's Source
    kind: ImageKind
    strength: float
    # An image of our store (U/V buttons, Vary, Upscale, a Source that is our URL): read from the
    # store by id, never fetched over HTTP.
    image_id: str | None = None


def _parameter_fields(
    job: ImageSpec, source: str | None = None, count: int | None = None
) -> list[dict[str, Any]]:
    fields = [{"name": "Seed", "value": str(job.seed), "inline": True}]
    if count is not None:
        # A grid: its images have consecutive seeds from Seed; Re-roll, Remix and Retry draw as many.
        fields.append({"name": IMAGES_FIELD, "value": str(count), "inline": True})
    fields += [
        {"name": "Steps", "value": str(job.steps), "inline": True},
        {"name": "Size", "value": f"{job.width}x{job.height}", "inline": True},
        {"name": "Guidance", "value": f"{job.guidance_scale:g}", "inline": True},
        {"name": "Scheduler", "value": job.scheduler, "inline": True},
    ]
    # The model and LoRAs too, so Re-roll and Retry draw with the same ones.
    if job.model:
        fields.append({"name": "Model", "value": job.model, "inline": True})
    if job.loras:
        loras = ", ".join(f"{name}:{weight:g}" for name, weight in job.loras)
        fields.append({"name": "LoRAs", "value": loras, "inline": True})
    if job.kind != "txt2img" and source:
        fields.append({"name": "Mode", "value": job.kind, "inline": True})
        fields.append({"name": "Strength", "value": f"{job.strength:g}", "inline": True})
        fields.append({"name": "Source", "value": source, "inline": False})
    if job.negative_prompt:
        fields.append({"name": "Negative prompt", "value": job.negative_prompt, "inline": False})
    return fields


def _button(label: str, custom_id: str, style: int = 1) -> dict[str, Any]:
    return {"type": 2, "style": style, "label": label, "custom_id": custom_id}


def _rows(buttons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"type": 1, "components": buttons[i : i + BUTTONS_PER_ROW]}
        for i in range(0, len(buttons), BUTTONS_PER_ROW)
    ]


def _controls(requester: str | None) -> list[dict[str, Any]]:
    buttons = [_button("🎲 Re-roll", REROLL_ID), _button("✏️ Remix", REMIX_ID, style=2)]
    if requester:
        buttons.append(_button("🗑️ Delete", f"imagine:delete:{requester}", style=4))
    return buttons


def _embed(job: ImageSpec, fields: list[dict[str, Any]], filename: str, render_s: float) -> dict[str, Any]:
    fields.append({"name": "Render time", "value": f"{render_s:.1f} s", "inline": True})
    return {
        "title": "/imagine",
        "description": job.prompt,
        "color": ACCENT,
        "fields": fields,
        "image": {"url": f"attachment://{filename}"},
    }


def grid_message(
    jobs: list[ImageSpec],
    image_ids: list[str],
    filename: str,
    render_s: float,
    note: str = "",
    source: str | None = None,
    requester: str | None = None,
) -> dict[str, Any]:
    """A grid of ``len(jobs)`` images in one attachment, with U and V buttons per image.

    Each U and V button names its stored image: U answers with that file (never rendered again),
    V starts from it, wherever and whenever the click arrives.
    """
    embed = _embed(jobs[0], _parameter_fields(jobs[0], source, len(jobs)), filename, render_s)
    numbered = list(enumerate(image_ids, 1))
    picks = [_button(f"U{n}", f"imagine:u{n}:{image_id}", style=2) for n, image_id in numbered]
    varies = [_button(f"V{n}", f"imagine:v{n}:{image_id}", style=2) for n, image_id in numbered]
    return {
        "content": note,
        "embeds": [embed],
        "components": [*_rows(picks), *_rows(varies), *_rows(_controls(requester))],
        "attachments": [{"id": 0, "filename": filename}],
    }


def finished_message(
    job: ImageSpec,
    filename: str,
    render_s: float,
    note: str = "",
    link: str | None = None,
    source: str | None = None,
    image_id: str | None = None,
    requester: str | None = None,
    count: int | None = None,
) -> dict[str, Any]:
    """One image (``count: 1``, or U1-U4 of a grid), with Upscale, Vary and a link to its full-size file.

    ``count``: 1 for an /imagine that asked for one image, so that its Re-roll draws one again (a
    picked image names none: its Re-roll draws a new grid). Without ``image_id`` (it was not
    stored) Variations and Upscale start from the attachment, as messages from before the grid did.
    """
    embed = _embed(job, _parameter_fields(job, source, count), filename, render_s)
    if link:
        embed["url"] = link  # the stored original (full-quality PNG) behind the title
    if image_id:
        actions = [
            _button("🔍 Upscale", f"imagine:upscale:{image_id}", style=2),
            _button("🎨 Vary (subtle)", f"imagine:subtle:{image_id}", style=2),
            _button("🎨 Vary (strong)", f"imagine:strong:{image_id}", style=2),
        ]
    else:
        actions = [
            _button("🎨 Variations", VARIATIONS_ID, style=2),
            _button("🔍 Upscale", UPSCALE_ID, style=2),
        ]
    controls = _controls(requester)
    if link:
        controls.append({"type": 2, "style": 5, "label": "Full size", "url": link})
    return {
        "content": note,
        "embeds": [embed],
        "components": [*_rows(actions), *_rows(controls)],
        "attachments": [{"id": 0, "filename": filename}],
    }


def failed_message(
    job: ImageSpec, reason: str, source: str | None = None, count: int | None = None
) -> dict[str, Any]:
    return {
        "content": f"❌ {reason}",
        "embeds": [
            {
                "title": "/imagine failed",
                "description": job.prompt,
                "color": ERROR_RED,
                "fields": _parameter_fields(job, source, count),
            }
        ],
        "components": [{"type": 1, "components": [_button("🔁 Retry", RETRY_ID, style=2)]}],
        "attachments": [],
    }


def remix_modal(embeds: list[Embed], max_prompt: int, max_negative: int) -> dict[str, Any]:
    """Discord's modal (response type 9) with the message's prompt and negative prompt to edit.

    Its submission (MODAL_SUBMIT) carries the message it was opened from, so the rest of the
    settings come from that message's embed again: nothing is kept between the two interactions.
    """
    params = params_from_embed(embeds, keep_seed=True)
    prompt = {
        "type": 4,
        "custom_id": "prompt",
        "label": "Prompt",
        "style": 2,
        "min_length": 1,
        "max_length": max_prompt,
        "required": True,
        "value": params.prompt[:max_prompt],
    }
    negative: dict[str, Any] = {
        "type": 4,
        "custom_id": "negative_prompt",
        "label": "Negative prompt",
        "style": 2,
        "max_length": max_negative,
        "required": False,
    }
    if params.negative_prompt:
        negative["value"] = params.negative_prompt[:max_negative]
    return {
        "type": 9,
        "data": {
            "custom_id": REMIX_ID,
            "title": "Remix",
            "components": [{"type": 1, "components": [prompt]}, {"type": 1, "components": [negative]}],
        },
    }


class UnreadableMessageError(ValueError):
    """The clicked message does not carry the parameters a button needs."""


def params_from_embed(embeds: list[Embed], keep_seed: bool) -> GenerationParams:
    """Recover a message's parameters; ``keep_seed=False`` draws a new seed (Re-roll)."""
    if not embeds or not embeds[0].description:
        raise UnreadableMessageError("the message has no /imagine embed")
    embed = embeds[0]
    fields = {field.name: field.value for field in embed.fields}
    try:
        return GenerationParams(
            prompt=embed.description,
            negative_prompt=fields.get("Negative prompt", ""),
            seed=int(fields["Seed"]) if keep_seed else None,
            steps=int(fields["Steps"]),
            size=fields["Size"],
            guidance_scale=float(fields["Guidance"]),
            scheduler=fields["Scheduler"],
            # Older messages name no model: the default draws them again.
            model=fields.get("Model"),
            loras=[lora.strip() for lora in fields["LoRAs"].split(",")] if "LoRAs" in fields else None,
        )
    except (KeyError, ValueError) as error:
        raise UnreadableMessageError(f"the /imagine embed is incomplete: {error}") from None


def start_image_from_embed(embeds: list[Embed]) -> StartImage | None:
    """The picture the message's image started from (None for text-to-image), to start again from it."""
    if not embeds:
        return None
    fields = {field.name: field.value for field in embeds[0].fields}
    if "Source" not in fields:
        return None
    kind = fields.get("Mode")
    if kind not in ("img2img", "upscale"):
        raise UnreadableMessageError(f"unknown mode {kind!r}")
    try:
        return StartImage(fields["Source"], kind, float(fields["Strength"]))
    except (KeyError, ValueError) as error:
        raise UnreadableMessageError(f"the /imagine embed is incomplete: {error}") from None


def count_from_embed(embeds: list[Embed]) -> int | None:
    """How many images the message's grid holds; None for a single image (or an older message)."""
    if not embeds:
        return None
    fields = {field.name: field.value for field in embeds[0].fields}
    if IMAGES_FIELD not in fields:
        return None
    try:
        count = int(fields[IMAGES_FIELD])
    except ValueError:
        raise UnreadableMessageError(f"the embed's {IMAGES_FIELD} is not a number") from None
    if not 1 <= count <= MAX_GRID:
        raise UnreadableMessageError(f"the embed's {IMAGES_FIELD} is out of range")
    return count


def seed_of(first_seed: int, index: int) -> int:
    """The seed of a grid's ``index``-th image (1-based): a grid's seeds are consecutive."""
    return (first_seed + index - 1) % (MAX_SEED + 1)


def spec_from_embed(embeds: list[Embed], seed: int) -> ImageSpec:
    """The image a grid's embed describes at ``seed``: what U1-U4 show as that image's own embed."""
    params = params_from_embed(embeds, keep_seed=True)
    start = start_image_from_embed(embeds)
    try:
        width, height = (int(side) for side in str(params.size).lower().split("x"))
    except ValueError:
        raise UnreadableMessageError(f"the embed's size {params.size!r} is not WIDTHxHEIGHT") from None
    return ImageSpec(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        width=width,
        height=height,
        steps=int(params.steps or 0),
        guidance_scale=float(params.guidance_scale or 0.0),
        scheduler=str(params.scheduler),
        seed=seed,
        kind=start.kind if start else "txt2img",
        strength=start.strength if start else 1.0,
        model=params.model or "",
        loras=tuple((lora.name, float(lora.weight or 0.0)) for lora in params.loras or ()),
    )
