"""Load a diffusers text-to-image pipeline the way the hardware a replica got calls for.

A replica learns what it has only when it starts (Ray may place it on a GPU node or, on a laptop or
in CI, on a CPU with a *logical* GPU that torch cannot see), so every choice here is made from what
torch reports at load time: CUDA -> fp16 weights, xformers attention when installed, optional
``torch.compile``; CPU -> fp32 and PyTorch's SDPA attention. The choices are pure functions so the
CUDA branches are tested on machines without a GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serve_app.schedulers import build_scheduler
from serve_app.settings import AppSettings
from serve_app.weight_files import usable_variant

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class RuntimePlan:
    """How a pipeline will run: what /v1/models reports and what load_pipeline applies."""

    device: str
    dtype: str
    attention: str
    compile: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def torch_build() -> str:
    """'2.13.0+cu130'-style version and the CUDA it was built for (None on a CPU build)."""
    import torch

    return f"{torch.__version__}, built for CUDA {torch.version.cuda}"


def choose_device(requested: str, cuda_available: bool) -> str:
    if requested == "cuda" and not cuda_available:
        # Fail the replica loudly: rendering on CPU instead is ~100x slower and looks healthy.
        raise RuntimeError(
            "device 'cuda' was requested but torch sees no CUDA device "
            f"(torch {torch_build()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): "
            "check the node's NVIDIA driver supports this torch build and that the container has the GPU "
            "(cluster.yaml gives GPU workers' containers --gpus all)"
        )
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    return requested


def choose_dtype(requested: str, device: str) -> str:
    """fp16 halves memory and roughly doubles speed on GPUs; CPUs have no fast fp16 kernels."""
    if requested != "auto":
        if device == "cpu" and requested == "float16":
            raise ValueError("float16 is not supported on CPU; use float32 or bfloat16")
        return requested
    return "float16" if device == "cuda" else "float32"


def choose_attention(requested: str, device: str, xformers_available: bool) -> str:
    """xformers needs CUDA; everywhere else torch's SDPA is the fast path (and the default)."""
    if requested == "xformers" and not (device == "cuda" and xformers_available):
        raise ValueError("attention 'xformers' needs a CUDA device and the xformers package")
    if requested == "auto":
        return "xformers" if device == "cuda" and xformers_available else "sdpa"
    return requested


def choose_compile(requested: bool, device: str) -> bool:
    """torch.compile pays off on CUDA; on CPU its compile time outweighs the gain, so skip it."""
    if requested and device != "cuda":
        logger.warning("compile=true ignored on %s: torch.compile is only used with CUDA", device)
        return False
    return requested


def xformers_installed() -> bool:
    try:
        import xformers  # noqa: F401
    except ImportError:
        return False
    return True


def plan_runtime(settings: AppSettings) -> RuntimePlan:
    import torch

    device = choose_device(settings.device, torch.cuda.is_available())
    return RuntimePlan(
        device=device,
        dtype=choose_dtype(settings.dtype, device),
        attention=choose_attention(settings.attention, device, xformers_installed()),
        compile=choose_compile(settings.compile, device),
    )


def resolve_model_source(model: str, settings: AppSettings | None = None) -> tuple[str, bool]:
    """Return (path or hub id, is_local). Local folders load with ``local_files_only``.

    ``s3://`` models are synced to the node's cache folder first and then load like local ones.
    """
    if model.startswith("s3://"):
        from serve_app.s3_model_sync import sync_s3_model

        settings = settings or AppSettings()
        report = sync_s3_model(
            model, settings.model_cache_dir, settings.s3_endpoint_url, variant=settings.variant
        )
        return str(report.path), True
    expanded = Path(os.path.expanduser(model))
    if expanded.is_dir():
        return str(expanded.resolve()), True
    if model.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"model folder {model!r} does not exist; build the tiny model with "
            f"`python -m serve_app.tiny_model {model}` or point `model` at a real one"
        )
    return model, False


def load_pipeline(settings: AppSettings, plan: RuntimePlan) -> Any:
    """``AutoPipelineForText2Image.from_pretrained`` so SD 1.5, 2.1, SDXL and Turbo all load."""
    import torch
    from diffusers import AutoPipelineForText2Image

    source, is_local = resolve_model_source(settings.model, settings)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, plan.dtype)}
    if is_local:
        kwargs["local_files_only"] = True
    if settings.revision:
        kwargs["revision"] = settings.revision
    # A local folder without the configured variant would fail every load (a crash-looping
    # replica): load its default weights instead, loudly.
    variant = usable_variant(source, settings.variant) if is_local else settings.variant
    if variant:
        kwargs["variant"] = variant
    elif settings.variant:
        logger.warning("%s has no %r weights; loading its default weights", source, settings.variant)
    if not settings.safety_checker:
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    logger.info("loading %s with %s", source, plan)
    pipe = AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    pipe = pipe.to(plan.device)
    pipe.set_progress_bar_config(disable=True)
    if plan.attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    if plan.compile:
        # One compiled graph per (batch, size) shape: keep request sizes to a few buckets on GPU.
        pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
    return pipe


class SchedulerCache:
    """One scheduler instance per name, built from the model's own config, swapped in per call.

    Swapping is safe only because a replica runs one pipeline call at a time (diffusers schedulers
    keep per-call state and are not thread-safe).
    """

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._base_config = pipe.scheduler.config
        self._schedulers: dict[str, Any] = {}

    def use(self, name: str) -> Any:
        """Put scheduler ``name`` on the pipeline and return it (pipelines from from_pipe take it too)."""
        if name not in self._schedulers:
            self._schedulers[name] = build_scheduler(name, self._base_config)
        self._pipe.scheduler = self._schedulers[name]
        return self._pipe.scheduler
