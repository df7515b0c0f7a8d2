"""A standalone safety checker for every family, loaded like any weights.

Only the SD 1.x/2.x checkpoints ship a safety checker; SDXL, SD 3.5, FLUX and the rest ship none,
so without this an SDXL or FLUX image would leave the service unchecked. ``safety_checker_model``
(a folder, hub id or s3:// prefix holding a ``StableDiffusionSafetyChecker`` and its
``CLIPImageProcessor``, the layout of ``CompVis/stable-diffusion-safety-checker``) is loaded once
per model beside the pipeline and checks the images of every model without a checker of its own,
with the same thresholds diffusers applies (flagged images come back black and flagged).
"""

from __future__ import annotations

import logging
from typing import Any

from serve_app.engine.model.loading import resolve_model_source

logger = logging.getLogger("ray.serve")


class StandaloneChecker:
    def __init__(self, checker: Any, feature_extractor: Any) -> None:
        self.checker = checker
        self.feature_extractor = feature_extractor

    @classmethod
    def load(cls, source: str, device: str, dtype: str, settings: Any = None) -> StandaloneChecker:
        import torch
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        path, is_local = resolve_model_source(source, settings)
        checker = StableDiffusionSafetyChecker.from_pretrained(
            path, dtype=getattr(torch, dtype), local_files_only=is_local
        ).to(device)
        checker.eval()
        extractor = CLIPImageProcessor.from_pretrained(path, local_files_only=is_local)
        logger.info("standalone safety checker from %s", source)
        return cls(checker, extractor)

    def check(self, images: list[Any]) -> tuple[list[Any], list[bool]]:
        """PIL images in; the same images (flagged ones black) and their flags out."""
        import numpy as np
        import torch
        from PIL import Image

        if not images:
            return images, []
        arrays = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images])
        inputs = self.feature_extractor(images=list(images), return_tensors="pt")
        clip_input = inputs.pixel_values.to(self.checker.device, self.checker.dtype)
        with torch.no_grad():
            checked, flags = self.checker(images=arrays, clip_input=clip_input)
        flags = [bool(flag) for flag in flags]
        out = [
            Image.fromarray((np.asarray(array) * 255).round().astype(np.uint8)) if flagged else image
            for image, array, flagged in zip(images, checked, flags, strict=True)
        ]
        return out, flags
