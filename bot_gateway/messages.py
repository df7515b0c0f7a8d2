"""What the bot shows in Discord, and how a button click recovers the parameters it was shown with.

Buttons are stateless: the finished message's embed carries every parameter needed to render the
image again, so a Re-roll works on any replica and after any restart, with nothing stored. An image
that started from a picture also shows its mode, strength and the picture's URL (``Source``), so a
Re-roll or Retry starts from the same picture; Variations and Upscale start from the message's own
image (its attachment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot_gateway.protocol import Embed
from serve_app.core.images import ImageKind, ImageSpec
from serve_app.core.params import GenerationParams

REROLL_ID = "imagine:reroll"
RETRY_ID = "imagine:retry"
VARIATIONS_ID = "imagine:variations"
UPSCALE_ID = "imagine:upscale"
ACCENT = 0x5865F2
ERROR_RED = 0xED4245


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

    url: str
    kind: ImageKind
    strength: float


def _parameter_fields(job: ImageSpec, source: str | None = None) -> list[dict[str, Any]]:
    fields = [
        {"name": "Seed", "value": str(job.seed), "inline": True},
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


def finished_message(
    job: ImageSpec,
    filename: str,
    render_s: float,
    note: str = "",
    link: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    fields = _parameter_fields(job, source)
    fields.append({"name": "Render time", "value": f"{render_s:.1f} s", "inline": True})
    embed: dict[str, Any] = {
        "title": "/imagine",
        "description": job.prompt,
        "color": ACCENT,
        "fields": fields,
        "image": {"url": f"attachment://{filename}"},
    }
    if link:
        embed["url"] = link  # the stored original (full-quality PNG) behind the title
    return {
        "content": note,
        "embeds": [embed],
        "components": [
            {
                "type": 1,
                "components": [
                    _button("🎲 Re-roll", REROLL_ID),
                    _button("🎨 Variations", VARIATIONS_ID, style=2),
                    _button("🔍 Upscale", UPSCALE_ID, style=2),
                ],
            }
        ],
        "attachments": [{"id": 0, "filename": filename}],
    }


def failed_message(job: ImageSpec, reason: str, source: str | None = None) -> dict[str, Any]:
    return {
        "content": f"❌ {reason}",
        "embeds": [
            {
                "title": "/imagine failed",
                "description": job.prompt,
                "color": ERROR_RED,
                "fields": _parameter_fields(job, source),
            }
        ],
        "components": [{"type": 1, "components": [_button("🔁 Retry", RETRY_ID, style=2)]}],
        "attachments": [],
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
