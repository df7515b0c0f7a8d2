"""Build a tiny random-weights Stable Diffusion pipeline, fully offline.

Nothing on this project's laptops, CI or tests can download weights from a hub, yet the service must
load models through the real ``from_pretrained`` code path. This module writes a complete diffusers
folder (UNet, VAE, CLIP text encoder, CLIP tokenizer, scheduler) that ``from_pretrained`` loads exactly
like a real Stable Diffusion checkpoint, just small enough (~8 MB) to run on two CPU cores.

Weights come from a fixed seed, so every build of the folder gives the same images for the same seed.

Usage::

    python -m serve_app.testing.tiny_model .cache/tiny-sd
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from serve_app.testing.tiny_families import (
    FAMILY_BUILDERS,
    save_tiny_flux_lora,
    save_tiny_preview_decoder,
    save_tiny_safety_checker,
    save_tiny_sd3_lora,
)
from serve_app.testing.tiny_tokenizers import TINY_MODEL_SEED, byte_level_vocab

_byte_level_vocab = byte_level_vocab


def build_tiny_pipeline(seed: int = TINY_MODEL_SEED) -> object:
    """Return an in-memory ``StableDiffusionPipeline`` with small, seeded random weights."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet = _tiny_unet(in_channels=4, seed=seed)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
    )
    vocab = _byte_level_vocab()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            vocab_size=len(vocab),
            max_position_embeddings=77,
        )
    )
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _tiny_unet(in_channels: int, out_channels: int = 4, seed: int = TINY_MODEL_SEED, **extra: Any) -> Any:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=out_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        **extra,
    )


def build_tiny_inpainting(seed: int = TINY_MODEL_SEED) -> object:
    """A dedicated inpainting checkpoint's shape: a 9-channel UNet (latents, mask, masked image)."""
    from diffusers import StableDiffusionInpaintPipeline

    base: Any = build_tiny_pipeline(seed)
    return StableDiffusionInpaintPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=_tiny_unet(in_channels=9, seed=seed),
        scheduler=base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_upscaler(seed: int = TINY_MODEL_SEED) -> object:
    """sd-x2-latent-upscaler's shape: latents + the low-res latents in, a variance channel out,
    conditioned on the pooled text embedding and a noise-level embedding (128 + 32)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionLatentUpscalePipeline

    base: Any = build_tiny_pipeline(seed)
    return StableDiffusionLatentUpscalePipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=_tiny_unet(in_channels=8, out_channels=5, seed=seed, time_cond_proj_dim=128 + 32),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"),
    )


BUILDERS = {
    "text2img": build_tiny_pipeline,
    "inpainting": build_tiny_inpainting,
    "upscaler": build_tiny_upscaler,
    # SDXL and the transformer families (serve_app/testing/tiny_families.py).
    **FAMILY_BUILDERS,
}

# Not pipelines: a LoRA per architecture, the standalone safety checker, a preview decoder.
EXTRA_KINDS = ("lora", "flux-lora", "sd3-lora", "safety-checker", "preview-vae")


LORA_FILE = "pytorch_lora_weights.safetensors"


# How hard the LoRA's conv_out part pushes the predicted noise along one latent direction. At 30 the
# example LoRA at its configured weight (0.8) turns the tiny model's fine noise into smooth blobs in a
# frame (about 37/255 mean change per pixel at 64x64, 10 DDIM steps); random weights alone moved it
# 2.4/255, which nobody could see. tests/unit/testing/test_tiny_model.py holds it above 25/255.
LORA_SHIFT = 30.0


def save_tiny_lora(directory: str | Path, seed: int = 1) -> Path:
    """A LoRA for the tiny UNet, in diffusers' file format (what ``load_lora_weights`` reads).

    PEFT starts a LoRA's B matrix at zero (no effect until trained). Here the attention layers get
    random A and B (so the effect depends on the prompt, as a trained one's does), and ``conv_out``
    a fixed direction: A averages its input features and B adds that, scaled by ``LORA_SHIFT``, to
    the predicted noise's channels with alternating signs. That steady push is what makes the
    picture visibly change, so a newcomer trying ``tiny-ink`` sees that LoRAs work.
    """
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    target = Path(directory)
    if (target / LORA_FILE).exists():
        return target
    unet = _tiny_unet(in_channels=4)
    torch.manual_seed(seed)
    rank = 4
    unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=rank,
            target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv_out"],
            init_lora_weights=False,
        )
    )
    with torch.no_grad():
        down, up = unet.conv_out.lora_A["default"].weight, unet.conv_out.lora_B["default"].weight
        down.fill_(1.0 / down[0].numel())  # each rank row: the mean of the input features
        up.zero_()
        direction = torch.tensor([1.0, -1.0, 1.0, -1.0])[: up.shape[0]]
        up[:, :, 0, 0] = (LORA_SHIFT * direction / rank)[:, None]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-lora-", dir=target.parent))
    StableDiffusionPipeline.save_lora_weights(staging, unet_lora_layers=get_peft_model_state_dict(unet))
    staging.rename(target)
    return target


def save_tiny_model(directory: str | Path, kind: str = "text2img", seed: int = TINY_MODEL_SEED) -> Path:
    """Write a tiny pipeline to ``directory`` atomically, so a half-built folder is never loaded.

    ``seed`` picks the random weights: two seeds give two models that draw different images.
    """
    target = Path(directory)
    if kind == "lora":
        return save_tiny_lora(target, seed)
    if kind == "flux-lora":
        return save_tiny_flux_lora(target, seed)
    if kind == "sd3-lora":
        return save_tiny_sd3_lora(target, seed)
    if kind == "safety-checker":
        return save_tiny_safety_checker(target, seed)
    if kind == "preview-vae":
        return save_tiny_preview_decoder(target, seed=seed)
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-sd-", dir=target.parent))
    BUILDERS[kind](seed).save_pretrained(staging)  # type: ignore[attr-defined]
    staging.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="folder to write the diffusers pipeline into")
    parser.add_argument(
        "--kind",
        choices=[*sorted(BUILDERS), *EXTRA_KINDS],
        default="text2img",
        help="text2img (default: SD 1.5), a dedicated inpainting / 2x latent upscaler checkpoint, a tiny "
        "SDXL (sdxl), FLUX.1-dev (flux), FLUX.1-schnell, SD 3.5 (sd3) or FLUX.2-klein pipeline, a LoRA "
        "for the tiny SD (lora), FLUX (flux-lora) or SD 3.5 (sd3-lora) model, a standalone safety "
        "checker, or a preview decoder",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random-weights seed (default: 0 for models, 1 for a LoRA)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else (1 if args.kind.endswith("lora") else TINY_MODEL_SEED)
    path = save_tiny_model(args.directory, args.kind, seed)
    print(f"tiny {args.kind} ready in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
