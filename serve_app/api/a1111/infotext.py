"""The ``info`` string of an A1111 answer, written the way A1111's ``processing.py`` writes it.

Clients parse it: ``json.loads(info)`` for ``seed`` / ``all_seeds`` (A1111's ``Processed.js()``), and
each entry of ``infotexts`` is the PNG-info text (``create_infotext``) that A1111's own "PNG Info"
and many tools read back: the prompt, ``Negative prompt: ...``, then ``Key: value`` pairs, values
quoted as JSON when they hold a comma, colon or newline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def quote(value: object) -> object:
    """A1111's ``infotext_utils.quote``."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return value
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class Generation:
    """What one A1111 request rendered: the numbers its ``info`` reports."""

    prompts: Sequence[str]
    negative_prompts: Sequence[str]
    seeds: Sequence[int]
    subseeds: Sequence[int]
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: str
    schedule: str
    batch_size: int
    model: str
    denoising_strength: float | None = None
    extra: dict[str, Any] | None = None  # e.g. {"Mask blur": 4}

    def infotext(self, index: int) -> str:
        params: dict[str, Any] = {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "Schedule type": self.schedule,
            "CFG scale": self.cfg_scale,
            "Seed": self.seeds[index],
            "Size": f"{self.width}x{self.height}",
            "Model": self.model,
            "Denoising strength": self.denoising_strength,
            **(self.extra or {}),
        }
        text = ", ".join(f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
        negative = self.negative_prompts[index]
        negative_text = f"\nNegative prompt: {negative}" if negative else ""
        return f"{self.prompts[index]}{negative_text}\n{text}".strip()

    def info(self) -> str:
        """A1111's ``Processed.js()``: a JSON string, not an object."""
        first = 0 if self.seeds else None
        return json.dumps(
            {
                "prompt": self.prompts[0] if self.prompts else "",
                "all_prompts": list(self.prompts),
                "negative_prompt": self.negative_prompts[0] if self.negative_prompts else "",
                "all_negative_prompts": list(self.negative_prompts),
                "seed": self.seeds[0] if first is not None else -1,
                "all_seeds": list(self.seeds),
                "subseed": self.subseeds[0] if first is not None else -1,
                "all_subseeds": list(self.subseeds),
                "subseed_strength": 0,
                "width": self.width,
                "height": self.height,
                "sampler_name": self.sampler,
                "cfg_scale": self.cfg_scale,
                "steps": self.steps,
                "batch_size": self.batch_size,
                "restore_faces": False,
                "face_restoration_model": None,
                "sd_model_name": self.model,
                "sd_model_hash": None,
                "sd_vae_name": None,
                "sd_vae_hash": None,
                "seed_resize_from_w": -1,
                "seed_resize_from_h": -1,
                "denoising_strength": self.denoising_strength,
                "extra_generation_params": {"Schedule type": self.schedule, **(self.extra or {})},
                "index_of_first_image": 0,
                "infotexts": [self.infotext(i) for i in range(len(self.seeds))],
                "styles": [],
                "job_timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
                "clip_skip": 1,
                "is_using_inpainting_conditioning": False,
                "version": "raydiffusion",
            }
        )
