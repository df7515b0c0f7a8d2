"""Model families: what a checkpoint's architecture decides.

A family says how a checkpoint loads (its pipeline, its dtype on a GPU), what a request to it may
carry (a negative prompt or not, what guidance means, which samplers), which jobs it can run
(``from_pipe`` gives FLUX.1 and SD 3.5 image-to-image and inpainting, FLUX.2-klein neither), how it
previews, which LoRAs fit it, and the request defaults its authors document (FLUX.1-schnell: 4
steps, no guidance). The edge validates requests against it (serve_app/core/params.py) and the
model replica builds its pipeline call from it (serve_app/engine/model/families.py), so a request a
model cannot honour is a 400 naming the field, never a TypeError on a GPU node.

A leaf of the configuration: the catalogue, the speed settings and the app settings all read it,
and it reads none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Family = Literal[
    "sd15",
    "sd2",
    "sdxl",
    "sd-turbo",
    "sdxl-turbo",
    "sd3",
    "flux-schnell",
    "flux-dev",
    "flux2-klein",
    "auto",
]

Task = Literal["txt2img", "img2img", "inpaint", "upscale"]
ALL_TASKS: tuple[Task, ...] = ("txt2img", "img2img", "inpaint", "upscale")

# Schedulers (keys of serve_app.config.schedulers.SCHEDULERS) by the noise schedule a model was
# trained with: a UNet trained on DDPM betas takes the SD samplers; a rectified-flow transformer
# only flow-matching ones (an SD sampler's beta schedule means nothing to it).
SD_SCHEDULERS: tuple[str, ...] = (
    "ddim",
    "pndm",
    "euler",
    "euler_a",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "dpmpp_sde",
    "dpmpp_sde_karras",
    "heun",
    "lms",
    "unipc",
)
FLOW_SCHEDULERS: tuple[str, ...] = ("flow_euler",)

# How a family takes a negative prompt:
# - "cfg": classic classifier-free guidance; the negative prompt replaces the empty one.
# - "true_cfg": FLUX.1's guidance is distilled into the model (one pass per step); a negative
#   prompt needs a second pass per step, which diffusers runs only with ``true_cfg_scale > 1``.
# - "none": FLUX.2 pipelines have no negative prompt argument at all.
NegativePrompt = Literal["cfg", "true_cfg", "none"]

# What ``guidance_scale`` means to the model:
# - "cfg": classifier-free guidance weight (1 or less turns it off, doubling the speed).
# - "distilled": an input embedded into the transformer (FLUX.1-dev); no second pass.
# - "ignored": the model was distilled without guidance (Turbo, FLUX.1-schnell); only 0 is honest.
Guidance = Literal["cfg", "distilled", "ignored"]

# How live previews read the latents a step leaves:
# - "latents": (batch, channels, h, w) as a TAESD-style tiny autoencoder decodes them.
# - "packed": FLUX.1's 2x2-patch sequences (batch, h*w/4, channels*4), unpacked first.
# - "none": no tiny decoder fits (FLUX.2's batch-normalised 32-channel latents).
Preview = Literal["latents", "packed", "none"]


@dataclass(frozen=True)
class FamilySpec:
    name: str  # display name
    denoiser: Literal["unet", "transformer"]
    # The dtype `dtype: auto` picks on CUDA: the transformer families were trained in bf16 and
    # overflow in fp16; the UNets run in fp16 (their VAEs upcast where needed).
    cuda_dtype: Literal["float16", "bfloat16"]
    lora_architecture: str
    tasks: tuple[Task, ...] = ALL_TASKS
    schedulers: tuple[str, ...] = SD_SCHEDULERS
    negative_prompt: NegativePrompt = "cfg"
    guidance: Guidance = "cfg"
    preview: Preview = "latents"
    latent_channels: int = 4
    # Request defaults its authors document; a catalogue entry's own win, the app's fill the rest.
    defaults: dict[str, float | int | str] = field(default_factory=dict)
    # The diffusers class the checkpoint's model_index.json names (None: whatever it names).
    pipeline: str | None = None
    # Roughly what the weights need in memory at cuda_dtype, GB (published parameter counts x 2
    # bytes): what a catalogue's gpu_class must hold, before activations.
    weights_gb: float | None = None


FAMILIES: dict[str, FamilySpec] = {
    "sd15": FamilySpec("SD 1.5", "unet", "float16", "sd15", weights_gb=2.0),
    "sd2": FamilySpec("SD 2.x", "unet", "float16", "sd2", weights_gb=2.6),
    # SDXL was trained at 1024x1024; at the app's usual 512 it composes badly.
    "sdxl": FamilySpec(
        "SDXL", "unet", "float16", "sdxl", defaults={"default_size": "1024x1024"}, weights_gb=6.9
    ),
    # Diffusers' documented fast settings for the distilled Turbo models: 1-4 steps, no guidance
    # (they were trained without classifier-free guidance; 7.5 burns the image). SD-Turbo is a
    # distilled SD 2.1, SDXL-Turbo a distilled SDXL: their LoRAs are interchangeable with the base's.
    "sd-turbo": FamilySpec(
        "SD-Turbo",
        "unet",
        "float16",
        "sd2",
        guidance="ignored",
        defaults={"default_steps": 1, "default_guidance_scale": 0.0, "default_size": "512x512"},
        weights_gb=2.6,
    ),
    "sdxl-turbo": FamilySpec(
        "SDXL-Turbo",
        "unet",
        "float16",
        "sdxl",
        guidance="ignored",
        defaults={"default_steps": 1, "default_guidance_scale": 0.0, "default_size": "512x512"},
        weights_gb=6.9,
    ),
    # Stable Diffusion 3.5 (medium/large/large-turbo): MMDiT, CLIP-L + CLIP-G + T5-XXL, 16-channel
    # latents previewed by TAESD3; img2img and inpainting through from_pipe. Large: 28 steps at 3.5.
    "sd3": FamilySpec(
        "SD 3.5",
        "transformer",
        "bfloat16",
        "sd3",
        schedulers=FLOW_SCHEDULERS,
        latent_channels=16,
        defaults={
            "default_steps": 28,
            "default_guidance_scale": 3.5,
            "default_size": "1024x1024",
            "default_scheduler": "flow_euler",
        },
        pipeline="StableDiffusion3Pipeline",
        weights_gb=32.0,  # large: 8.1B transformer + 4.7B T5 + CLIPs, bf16
    ),
    # FLUX.1: a 12B rectified-flow transformer, CLIP-L + T5-XXL, packed 16-channel latents
    # (TAEF1 previews them once unpacked). schnell is timestep-distilled (4 steps, no guidance);
    # dev is guidance-distilled (guidance is an input, 3.5, about 28 steps). Neither applies a
    # negative prompt unless true_cfg_scale > 1 (a second transformer pass per step).
    "flux-schnell": FamilySpec(
        "FLUX.1-schnell",
        "transformer",
        "bfloat16",
        "flux1",
        schedulers=FLOW_SCHEDULERS,
        negative_prompt="true_cfg",
        guidance="ignored",
        preview="packed",
        latent_channels=16,
        defaults={
            "default_steps": 4,
            "default_guidance_scale": 0.0,
            "default_size": "1024x1024",
            "default_scheduler": "flow_euler",
        },
        pipeline="FluxPipeline",
        weights_gb=33.0,
    ),
    "flux-dev": FamilySpec(
        "FLUX.1-dev",
        "transformer",
        "bfloat16",
        "flux1",
        schedulers=FLOW_SCHEDULERS,
        negative_prompt="true_cfg",
        guidance="distilled",
        preview="packed",
        latent_channels=16,
        defaults={
            "default_steps": 28,
            "default_guidance_scale": 3.5,
            "default_size": "1024x1024",
            "default_scheduler": "flow_euler",
        },
        pipeline="FluxPipeline",
        weights_gb=33.0,
    ),
    # FLUX.2 [klein] 4B: a step-distilled transformer with a Qwen3 text encoder; no negative prompt
    # argument, guidance ignored by the distilled checkpoints; its "image" input is a reference for
    # editing, not a strength-controlled img2img start, so it serves text-to-image only.
    "flux2-klein": FamilySpec(
        "FLUX.2-klein",
        "transformer",
        "bfloat16",
        "flux2-klein",
        tasks=("txt2img",),
        schedulers=FLOW_SCHEDULERS,
        negative_prompt="none",
        guidance="ignored",
        preview="none",
        latent_channels=32,
        defaults={
            "default_steps": 4,
            "default_guidance_scale": 1.0,
            "default_size": "1024x1024",
            "default_scheduler": "flow_euler",
        },
        pipeline="Flux2KleinPipeline",
        weights_gb=16.0,  # 4B transformer + Qwen3-4B encoder, bf16
    ),
    # Anything else AutoPipelineForText2Image loads (Qwen-Image, Z-Image, Sana, PixArt-Sigma, Chroma,
    # CogView4, Lumina 2), with DiffusionPipeline as the fallback for those it cannot. Nothing about
    # the call is known before loading, so it runs text-to-image with the pipeline's own scheduler
    # (the catalogue entry's `tasks:` can add more where from_pipe supports them); a negative
    # prompt is passed only when given; no previews.
    "auto": FamilySpec(
        "any diffusers pipeline",
        "transformer",
        "bfloat16",
        "auto",
        tasks=("txt2img",),
        schedulers=("default",),
        preview="none",
        defaults={"default_scheduler": "default"},
    ),
}

FAMILY_NAMES: dict[str, str] = {key: spec.name for key, spec in FAMILIES.items()}

# The denoiser a family's LoRAs are trained against (kept for callers that only need this).
LORA_ARCHITECTURE: dict[str, str] = {key: spec.lora_architecture for key, spec in FAMILIES.items()}

TURBO_PRESETS: dict[str, dict[str, float | int | str]] = {
    "sd-turbo": FAMILIES["sd-turbo"].defaults,
    "sdxl-turbo": FAMILIES["sdxl-turbo"].defaults,
}
TURBO_FAMILIES: dict[str, Family] = {"sd-turbo": "sd-turbo", "sdxl-turbo": "sdxl-turbo"}


def family_spec(family: str) -> FamilySpec:
    return FAMILIES[family]


def preset_for(model: str, requested: str) -> str:
    """The preset a model gets: the named one, or on auto the one its id names."""
    if requested != "auto":
        return requested
    name = model.lower().rstrip("/").rsplit("/", 1)[-1]
    if "sdxl-turbo" in name:
        return "sdxl-turbo"
    if "sd-turbo" in name:
        return "sd-turbo"
    return "none"


def guess_family(model: str) -> Family | None:
    """A one-model config names no family: guess it from a hub id's well-known names."""
    name = model.lower().rstrip("/").rsplit("/", 1)[-1]
    if "flux.1-schnell" in name or "flux-schnell" in name:
        return "flux-schnell"
    if "flux.1" in name or "flux-dev" in name:
        return "flux-dev"
    if "flux.2-klein" in name or "flux2-klein" in name:
        return "flux2-klein"
    if "stable-diffusion-3" in name or "sd3" in name:
        return "sd3"
    return None
