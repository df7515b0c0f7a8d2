"""Stable Diffusion 1.5 and SDXL pipelines with their real architectures and random weights.

A GPU benchmark needs the real cost of a UNet step and a VAE decode, which depends on the
architecture and the shapes, not on the weights' values; downloading 2-7 GB of weights is impossible
on the machines that run it (no network). So the component configs live in the repo
(``serve_app/testing/architectures/*.json``), the weights come from a seeded random init on the target
device, and the tokenizer is the offline byte-level one of the tiny model. ``tiny`` is the tiny
model itself, so the same code path runs in CI on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serve_app.testing.tiny_model import _byte_level_vocab, build_tiny_pipeline

ARCHITECTURES = Path(__file__).resolve().parent / "architectures"
NAMES = ("tiny", "sd15", "sdxl")


def architecture(name: str) -> dict[str, Any]:
    if name not in NAMES or name == "tiny":
        raise ValueError(f"unknown architecture {name!r}; one of {', '.join(NAMES[1:])}")
    return json.loads((ARCHITECTURES / f"{name}.json").read_text())


def default_size(name: str) -> int:
    return 64 if name == "tiny" else int(architecture(name)["default_size"])


def _text_encoder(config: dict[str, Any], vocab: dict[str, int]) -> Any:
    import transformers

    settings = {key: value for key, value in config.items() if key != "class"}
    special = {
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    model_class = getattr(transformers, config["class"])
    return model_class(transformers.CLIPTextConfig(**settings, **special))


def build_components(name: str) -> dict[str, Any]:
    """The modules of architecture ``name`` with default (random) init on the current default device.

    Build under ``with torch.device(...)`` to create the weights directly where they will run
    (an SDXL UNet initialised on a CPU takes minutes), or on "meta" to count parameters for free.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTokenizer

    config = architecture(name)
    vocab = _byte_level_vocab()
    components: dict[str, Any] = {
        "unet": UNet2DConditionModel(**config["unet"]),
        "vae": AutoencoderKL(**config["vae"]),
        "text_encoder": _text_encoder(config["text_encoder"], vocab),
        "tokenizer": CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        "scheduler": DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
    }
    if "text_encoder_2" in config:
        components["text_encoder_2"] = _text_encoder(config["text_encoder_2"], vocab)
        components["tokenizer_2"] = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    return components


def build_random_pipeline(name: str, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> Any:
    """A ready pipeline of architecture ``name`` (or the tiny model) on ``device`` in ``dtype``."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    if name == "tiny":
        pipe = build_tiny_pipeline()
    else:
        pipeline_class = getattr(diffusers, architecture(name)["pipeline"])
        with torch.device(device):
            components = build_components(name)
        extra = {} if "text_encoder_2" in components else {"safety_checker": None, "feature_extractor": None}
        if extra:
            extra["requires_safety_checker"] = False
        pipe = pipeline_class(**components, **extra)
    pipe = pipe.to(device=device, dtype=getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    return pipe
