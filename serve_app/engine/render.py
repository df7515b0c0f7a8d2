"""The two stages of a render: denoise on the pipeline thread, finish (decode, safety, encode) beside it.

Why two stages: a batch's tail (the VAE decode, the safety checker, PNG encoding) used to run in the
one pipeline thread after the denoising loop, so the GPU idled while the CPU encoded, and the next
batch waited for both. Now the pipeline call stops at latents (``output_type="latent"``) and hands
them to a finisher with its own thread and, on CUDA, its own stream: batch N is decoded, checked and
encoded while batch N+1 denoises. Only the denoise holds the pipeline lock (diffusers schedulers keep
per-call state); the finisher touches the VAE decoder and the safety checker alone, which no
denoising call uses (img2img's VAE *encode* runs on other weights' activations only).

What runs where, and why:
- decode and safety checker on the device, on the finisher's stream, after a CUDA event recorded at
  the end of the denoise (no host sync between the stages);
- the safety checker's preprocessing (resize, crop, normalise to CLIP's 224 px) on the device as
  tensor ops, instead of diffusers' PIL round trip through ``CLIPImageProcessor`` on the CPU; its
  decision is diffusers' ``forward_onnx``: the same thresholds, vectorised, one host read at the end;
- uint8 pixels made on the device, so one small copy crosses to the host (not float32 images);
- PNG encoding in a small thread pool (Pillow releases the GIL while it compresses) at
  ``compress_level=1``: a fraction of the default level's time for files a little larger.

Pipelines that cannot stop at latents (a dedicated upscaler, families with packed latents) return
images from the denoise stage as before; the finisher then only encodes them.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("ray.serve")

# Pillow's zlib level: 1 compresses a 512x512 render several times faster than the default 6, for
# files about 10-20% larger (bench/gpu_report/report.py measures both on the machine it runs on).
PNG_COMPRESS_LEVEL = 1


@dataclass
class Denoised:
    """What the denoise stage hands to the finisher for one pipeline call."""

    real: int  # images that belong to callers (the rest is padding to a compiled batch size)
    denoise_s: float
    steps_done: int
    preview_s: float = 0.0
    latents: Any = None  # on the device; None when the pipeline returned images itself
    images: list[Any] | None = None  # PIL images, from pipelines that cannot stop at latents
    flags: list[bool] | None = None  # their safety flags, when the pipeline checked them
    ready: Any = None  # CUDA event recorded on the denoise stream after the call, or None on CPU
    eager: bool = False  # a compiled replica's call outside its shapes: decode without the compiled graph


@dataclass
class Finished:
    images: list[tuple[bytes, bool]]  # (encoded image, flagged by the safety checker)
    stages_s: dict[str, float] = field(default_factory=dict)  # decode, safety, encode


def to_uint8(pixels: Any) -> Any:
    """VAE output in [-1, 1], (B, C, H, W) on any device -> uint8 (B, H, W, C) numpy on the host.

    The conversion runs where the pixels are, so a quarter of the bytes cross to the host.
    """
    import torch

    scaled = ((pixels.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def encode_one(array: Any, image_format: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    if image_format == "PNG":
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        image.save(buffer, format=image_format)
    return buffer.getvalue()


def encode_images(
    arrays: Sequence[Any], image_format: str = "PNG", pool: Executor | None = None
) -> list[bytes]:
    """Encode each image (uint8 array or PIL image), in ``pool`` when given (one thread per image)."""
    if pool is None or len(arrays) < 2:
        return [encode_one(array, image_format) for array in arrays]
    return list(pool.map(lambda array: encode_one(array, image_format), arrays))


def device_safety_check(checker: Any, feature_extractor: Any, pixels: Any) -> tuple[Any, list[bool]]:
    """diffusers' safety checker with its preprocessing on the device.

    ``pixels``: VAE output in [-1, 1]. Returns the pixels with flagged images blacked out (as diffusers
    does) and the flags. The preprocessing follows ``CLIPImageProcessor``: resize the shortest edge
    to the crop size (bicubic), centre crop, normalise with CLIP's mean and std.
    """
    import torch
    import torch.nn.functional as F

    crop = feature_extractor.crop_size
    height, width = int(crop["height"]), int(crop["width"])
    images = (pixels.float() / 2 + 0.5).clamp(0, 1)
    scale = max(height / images.shape[-2], width / images.shape[-1])
    resized_h, resized_w = round(images.shape[-2] * scale), round(images.shape[-1] * scale)
    clip = F.interpolate(
        images, size=(resized_h, resized_w), mode="bicubic", antialias=True, align_corners=False
    )
    top, left = (resized_h - height) // 2, (resized_w - width) // 2
    clip = clip[..., top : top + height, left : left + width]
    mean = torch.tensor(feature_extractor.image_mean, device=clip.device).view(1, -1, 1, 1)
    std = torch.tensor(feature_extractor.image_std, device=clip.device).view(1, -1, 1, 1)
    clip = ((clip - mean) / std).to(checker.dtype)
    with torch.no_grad():
        _, flagged = checker.forward_onnx(clip_input=clip, images=images)
    flags = [bool(flag) for flag in flagged.tolist()]  # the stage's one host read
    if any(flags):
        mask = torch.tensor(flags, device=pixels.device).view(-1, 1, 1, 1)
        pixels = torch.where(mask, torch.full_like(pixels, -1.0), pixels)  # black, as diffusers blacks out
    return pixels, flags


def decode_latents(vae: Any, latents: Any, tiled: bool, eager: bool = False) -> Any:
    """``vae.decode`` of the pipeline's final latents; tiled when this call's size asks for it.

    Tiling is chosen here from the call's own size (the denoise stage of the next batch may flip
    ``enable_tiling`` on the same VAE object meanwhile). The replica's warm-up decodes through this
    same call, so a compiled decoder meets here exactly the arguments its graphs were traced with
    (dynamo guards on them: another ``return_dict`` is a recompile). ``eager`` bypasses the compiled
    decoder (a size outside the compiled shapes) through the class's own method: dynamo's
    ``set_stance`` is process-wide, so the denoise stage's "force_eager" cannot cover this thread.
    """
    import torch

    config = vae.config
    latents = latents.to(vae.dtype)
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        # Per-channel normalised latents (Playground v2.5's SDXL VAE), undone as diffusers' SDXL
        # pipelines do before their own decode.
        def channels(values: Any) -> Any:
            return torch.tensor(values, device=latents.device, dtype=latents.dtype).view(1, -1, 1, 1)

        latents = latents * channels(std) / config.scaling_factor + channels(mean)
    else:
        latents = latents / config.scaling_factor
    shift = getattr(config, "shift_factor", None)
    if shift:
        latents = latents + shift
    with torch.no_grad():
        if tiled:
            return vae.tiled_decode(latents, return_dict=False)[0]
        if eager:
            return type(vae).decode(vae, latents, return_dict=False)[0]
        return vae.decode(latents, return_dict=False)[0]  # the compiled decoder, where compile_vae made one


class Finisher:
    """Stage two: one thread (and CUDA stream) for decode + safety, a small pool for encoding.

    One thread, because the VAE and the safety checker are shared weights; calls queue in order, so
    images leave in the order their batches denoised.
    """

    def __init__(self, device: str, encode_threads: int = 2) -> None:
        self.device = device
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish")
        self._encoders = ThreadPoolExecutor(max_workers=max(1, encode_threads), thread_name_prefix="encode")
        self._stream: Any = None
        if device == "cuda":
            import torch

            self._stream = torch.cuda.Stream()

    @property
    def thread(self) -> Executor:
        return self._thread

    def encode_soon(self, work: Any, *args: Any) -> None:
        """Run ``work(*args)`` in the encode pool (previews: the step callback must not wait for it)."""

        def logged() -> None:
            try:
                work(*args)
            except Exception:  # a lost preview must not pass silently, nor stop the render
                logger.exception("preview encoding failed")

        self._encoders.submit(logged)

    def finish(
        self,
        denoised: Denoised,
        vae: Any,
        safety_checker: Any | None,
        feature_extractor: Any | None,
        tiled: bool,
        threads: int | None = None,
    ) -> Finished:
        """Decode, check and encode one call's images (blocking: run it in ``self.thread``)."""
        import torch

        if threads:
            torch.set_num_threads(threads)  # OpenMP thread counts are per calling thread
        stages: dict[str, float] = {"decode": 0.0, "safety": 0.0, "encode": 0.0}
        if denoised.latents is None:  # the pipeline made images itself: encode only
            started = time.perf_counter()
            images = (denoised.images or [])[: denoised.real]
            flags = (denoised.flags or [False] * len(images))[: denoised.real]
            encoded = encode_images(images, "PNG", self._encoders)
            stages["encode"] = time.perf_counter() - started
            return Finished(list(zip(encoded, (bool(f) for f in flags), strict=True)), stages)
        stream = self._stream
        context = torch.cuda.stream(stream) if stream is not None else _null()
        with context:
            if stream is not None and denoised.ready is not None:
                stream.wait_event(denoised.ready)
                denoised.latents.record_stream(stream)
            started = time.perf_counter()
            # Every row, padding included: a compiled VAE decoder was warmed up at the padded sizes.
            pixels = decode_latents(vae, denoised.latents, tiled, denoised.eager)[: denoised.real]
            if stream is not None:
                # Only this stage's stream: the split between decode and safety stays true, and the
                # denoising stream never waits for it.
                stream.synchronize()
            decoded = time.perf_counter()
            flags = [False] * denoised.real
            if safety_checker is not None and feature_extractor is not None:
                pixels, flags = device_safety_check(safety_checker, feature_extractor, pixels)
            arrays = to_uint8(pixels)
            converted = time.perf_counter()
        encoded = encode_images(list(arrays), "PNG", self._encoders)
        stages["decode"] = decoded - started
        stages["safety"] = converted - decoded  # with the uint8 conversion and its copy to the host
        stages["encode"] = time.perf_counter() - converted
        return Finished(list(zip(encoded, flags, strict=True)), stages)

    def shutdown(self) -> None:
        self._thread.shutdown(wait=False)
        self._encoders.shutdown(wait=False)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
