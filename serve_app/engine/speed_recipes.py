"""Which of diffusers' speed recipes a replica uses, decided by a device check, and applying them.

The choices are pure functions of (setting, device, what is installed) so every CUDA branch is
tested on machines without a GPU; ``apply_recipes`` then does what was chosen to a loaded pipeline
and returns what it actually did, which ``/v1/models`` reports (a model that cannot fuse its QKV
projections says so there instead of failing the replica).

Why these defaults (diffusers' optimisation guide; our own GPU figures are unmeasured until
``make bench-gpu`` runs on a GPU):
- xformers' attention is a graph break under ``torch.compile(fullgraph=True)``, so ``auto`` never
  pairs it with compile, and an explicit pairing is refused at start-up;
- channels-last and fused QKV projections help convolutions and attention on CUDA and cost nothing
  to turn off elsewhere; fusing rewrites the attention processors to SDPA ones, so it is only
  chosen with SDPA;
- VAE slicing decodes a batch image by image: the same speed on a GPU, a fraction of the peak memory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from serve_app.config.speed import SpeedSettings, Toggle
from serve_app.engine.model.families import denoiser_name

logger = logging.getLogger("ray.serve")

# What `attention: auto` picks on CUDA without compile when xformers is installed. Users install
# xformers on purpose (`.[gpu]` does), so it is honoured until `make bench-gpu` shows SDPA ahead on
# our workload; the benchmark measures both in every run.
AUTO_ATTENTION_WITH_XFORMERS = "xformers"


def choose_attention(requested: str, device: str, xformers_available: bool, compiled: bool = False) -> str:
    if requested == "xformers":
        if not (device == "cuda" and xformers_available):
            raise ValueError("attention 'xformers' needs a CUDA device and the xformers package")
        if compiled:
            raise ValueError(
                "attention 'xformers' with compile: true breaks torch.compile's full graph; "
                "use attention 'sdpa' (or 'auto') with compile"
            )
        return "xformers"
    if requested == "auto":
        if device == "cuda" and xformers_available and not compiled:
            return AUTO_ATTENTION_WITH_XFORMERS
        return "sdpa"
    return requested


def choose_compile(requested: bool, device: str, allow_cpu: bool = False) -> bool:
    """torch.compile pays off on CUDA; on CPU its compile time outweighs the gain unless asked for."""
    if requested and device != "cuda" and not allow_cpu:
        logger.warning("compile=true ignored on %s: set speed.compile_on_cpu to compile there", device)
        return False
    return requested


def choose_toggle(requested: Toggle, device: str) -> bool:
    """auto: on CUDA only (the recipes that help GPUs and only add copies on a CPU)."""
    if requested == "auto":
        return device == "cuda"
    return requested == "on"


def choose_fuse_qkv(requested: Toggle, device: str, attention: str) -> bool:
    if requested == "on" and attention != "sdpa":
        raise ValueError("fuse_qkv 'on' installs SDPA attention processors: use attention 'sdpa' with it")
    return choose_toggle(requested, device) and attention == "sdpa"


def compile_kwargs(speed: SpeedSettings) -> dict[str, Any]:
    """torch.compile's arguments: one static graph per shape (no dynamic-shape code on the hot path).

    ``mode`` is an inductor option; other backends refuse it.
    """
    kwargs: dict[str, Any] = {"fullgraph": True, "dynamic": False, "backend": speed.compile_backend}
    if speed.compile_backend == "inductor":
        kwargs["mode"] = speed.compile_mode
    return kwargs


def compile_cache_dir(speed: SpeedSettings, model_cache_dir: str) -> Path:
    if speed.compile_cache_dir:
        return Path(os.path.expanduser(speed.compile_cache_dir))
    return Path(os.path.expanduser(model_cache_dir)) / "torch-compile"


def use_compile_cache(directory: Path) -> None:
    """Point inductor's FX-graph and AOT-autograd caches at the node's model cache disk.

    A second cold start on the same node then loads compiled kernels instead of generating them.
    Environment variables, because inductor reads them when it first compiles.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    os.environ.setdefault("TRITON_CACHE_DIR", str(directory / "triton"))


def allow_recompiles(shapes: int) -> None:
    """Raise dynamo's recompile limit (8) above the number of warmed-up shapes.

    With fullgraph=True, reaching the limit is a hard error, not a fallback: every bucket
    combination is its own graph, so the limit must cover them all.
    """
    import torch._dynamo

    limit = max(8, shapes + 4)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    accumulated = getattr(torch._dynamo.config, "accumulated_recompile_limit", None)
    if accumulated is not None:
        torch._dynamo.config.accumulated_recompile_limit = max(accumulated, 4 * limit)


def apply_recipes(pipe: Any, plan: Any, speed: SpeedSettings, shapes: int) -> dict[str, Any]:
    """Apply ``plan``'s recipes to a loaded pipeline on its device; return what was applied."""
    import torch

    applied: dict[str, Any] = {"attention": plan.attention}
    if plan.attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    applied["fused_qkv"] = False
    if plan.fuse_qkv:
        try:
            pipe.fuse_qkv_projections()
            applied["fused_qkv"] = True
        except (ValueError, AttributeError, NotImplementedError) as error:
            # Models with added KV projections (some SDXL refiners, IP adapters) cannot fuse.
            logger.warning("fused QKV projections not supported by this model: %s", error)
            applied["fused_qkv_unsupported"] = str(error)[:200]
    # The denoiser is `unet` on SD/SDXL and `transformer` on SD 3.5, FLUX and the other DiTs.
    name = denoiser_name(pipe)
    denoiser = getattr(pipe, name) if name else None
    applied["denoiser"] = name
    # Channels-last helps convolutions: the UNet's. A transformer works on token sequences, and
    # its VAE alone would gain little.
    channels_last = plan.channels_last and name == "unet"
    if channels_last:
        denoiser.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    applied["channels_last"] = channels_last
    if plan.vae_slicing:
        pipe.vae.enable_slicing()
    applied["vae_slicing"] = plan.vae_slicing
    applied["compiled"] = []
    if plan.compile:
        allow_recompiles(shapes)
        kwargs = compile_kwargs(speed)
        # A UNet compiles regionally when asked (speed.compile_scope): its repeated transformer
        # blocks only, a fraction of the warm-up for most of the speed.
        regional = name == "transformer" or (name == "unet" and speed.compile_scope == "regional")
        repeats = getattr(denoiser, "_repeated_blocks", None) and hasattr(denoiser, "compile_repeated_blocks")
        if regional and repeats:
            # Regional compilation: one graph per repeated transformer block class, reused by
            # every block (FLUX.1 has 57): a fraction of the full graph's compile time, about
            # the same speed (diffusers' guide).
            denoiser.compile_repeated_blocks(**kwargs)
            applied["compiled"].append(f"{name} (repeated blocks)")
        elif name is not None:
            setattr(pipe, name, torch.compile(denoiser, **kwargs))
            applied["compiled"].append(name)
        if plan.compile_vae:
            pipe.vae.decode = torch.compile(pipe.vae.decode, **kwargs)
            applied["compiled"].append("vae.decode")
        applied["compile"] = {k: v for k, v in kwargs.items() if k != "fullgraph"}
    return applied
