"""Load a diffusers text-to-image pipeline the way the hardware a replica got calls for.

A replica learns what it has only when it starts (Ray may place it on a GPU node or, on a laptop or
in CI, on a CPU with a *logical* GPU that torch cannot see), so every choice here is made from what
torch reports at load time: CUDA -> fp16 weights, xformers attention when installed, optional
``torch.compile`` and the other speed recipes (serve_app/engine/speed_recipes.py); CPU -> fp32 and PyTorch's
SDPA attention. The choices are pure functions so the CUDA branches are tested on machines without a
GPU.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serve_app.config.catalogue import ModelEntry
from serve_app.config.families import FamilySpec, preset_for
from serve_app.config.schedulers import SCHEDULERS, canonical_scheduler_name
from serve_app.config.settings import AppSettings
from serve_app.engine.model.s3_sync import sync_s3_model
from serve_app.engine.model.weight_files import usable_variant
from serve_app.engine.speed_recipes import choose_attention, choose_compile, choose_fuse_qkv, choose_toggle

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class RuntimePlan:
    """How a pipeline will run: what /v1/models reports and what load_pipeline applies."""

    device: str
    dtype: str
    attention: str
    compile: bool
    # Speed recipes (serve_app/engine/speed_recipes.py); off unless chosen, so a plan built by hand for a
    # CPU test keeps meaning "plain pipeline".
    channels_last: bool = False
    fuse_qkv: bool = False
    vae_slicing: bool = False
    compile_vae: bool = False
    preset: str = "none"
    family: str = "sd15"
    offload: str = "none"  # what choose_offload kept: CUDA only
    quantization: str | None = None

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


def choose_dtype(requested: str, device: str, cuda_dtype: str = "float16") -> str:
    """Half precision halves memory and roughly doubles speed on GPUs; CPUs have no fast fp16
    kernels. ``cuda_dtype`` is the family's: bf16 for the transformer families (trained in bf16,
    they overflow in fp16), fp16 for the UNets."""
    if requested != "auto":
        if device == "cpu" and requested == "float16":
            raise ValueError("float16 is not supported on CPU; use float32 or bfloat16")
        return requested
    return cuda_dtype if device == "cuda" else "float32"


def choose_offload(requested: str, device: str) -> str:
    """CPU offload moves components to the GPU while they run: meaningless (and an error in
    accelerate) without one, so a CPU replica loads the whole pipeline as usual."""
    if requested != "none" and device != "cuda":
        logger.warning("offload %r ignored on %s", requested, device)
        return "none"
    return requested


def model_entry(settings: AppSettings) -> ModelEntry:
    """The catalogue entry these settings (``AppSettings.for_model``'s view) are about."""
    catalogue = settings.catalogue
    return catalogue.entries.get(settings.served_model_name) or catalogue.default


def family_of(settings: AppSettings) -> FamilySpec:
    return model_entry(settings).spec


def xformers_installed() -> bool:
    try:
        import xformers  # noqa: F401
    except ImportError:
        return False
    return True


def plan_runtime(settings: AppSettings) -> RuntimePlan:
    import torch

    speed = settings.speed
    entry = model_entry(settings)
    device = choose_device(settings.device, torch.cuda.is_available())
    compiled = choose_compile(settings.compile, device, allow_cpu=speed.compile_on_cpu)
    attention = choose_attention(settings.attention, device, xformers_installed(), compiled)
    return RuntimePlan(
        device=device,
        dtype=choose_dtype(settings.dtype, device, entry.spec.cuda_dtype),
        attention=attention,
        compile=compiled,
        channels_last=choose_toggle(speed.channels_last, device),
        fuse_qkv=choose_fuse_qkv(speed.fuse_qkv, device, attention),
        vae_slicing=choose_toggle(speed.vae_slicing, device),
        compile_vae=compiled and speed.compile_vae,
        preset=preset_for(settings.model, speed.preset),
        family=entry.family,
        offload=choose_offload(entry.offload, device),
        quantization=entry.quantization.backend if entry.quantization else None,
    )


def resolve_model_source(model: str, settings: AppSettings | None = None) -> tuple[str, bool]:
    """Return (path or hub id, is_local). Local folders load with ``local_files_only``.

    ``s3://`` models are synced to the node's cache folder first and then load like local ones.
    """
    if model.startswith("s3://"):
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
            f"`python -m serve_app.testing.tiny_model {model}` or point `model` at a real one"
        )
    return model, False


def quantization_config(entry: ModelEntry) -> Any | None:
    """diffusers' ``PipelineQuantizationConfig`` for the entry's option (None without one)."""
    if entry.quantization is None:
        return None
    from diffusers import PipelineQuantizationConfig

    option = entry.quantization
    kwargs: dict[str, Any] = {}
    if option.backend == "torchao":
        kwargs["quant_type"] = option.quant_type
    return PipelineQuantizationConfig(
        quant_backend=option.backend, quant_kwargs=kwargs, components_to_quantize=option.components
    )


# A class in model_index.json holding one of these is a task variant (an inpainting or img2img
# checkpoint, say) that AutoPipelineForText2Image maps to its text-to-image class.
TASK_VARIANT_MARKERS = (
    "Img2Img", "Inpaint", "ControlNet", "Upscale", "Depth2Img", "Pix2Pix", "Fill", "Kontext",
    "Redux", "Prior", "PAG",
)


def local_pipeline_class(source: str) -> str | None:
    """The pipeline class a local folder's model_index.json names (None: not readable)."""
    try:
        return json.loads((Path(source) / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError):
        return None


def from_pretrained(family: str, source: str, kwargs: dict[str, Any], is_local: bool = False) -> Any:
    """AutoPipelineForText2Image picks the class model_index.json names (SD 1.5 to FLUX.2-klein);
    the generic family falls back to DiffusionPipeline for pipelines it has no mapping for
    (HiDream, HunyuanImage, ...).

    A local folder that names a text-to-image class loads through DiffusionPipeline, which imports
    that one pipeline module: importing AutoPipelineForText2Image imports every pipeline family
    diffusers has, about two CPU-seconds of every replica's cold start.
    """
    from diffusers import DiffusionPipeline

    named = local_pipeline_class(source) if is_local else None
    if named and named.endswith("Pipeline") and not any(m in named for m in TASK_VARIANT_MARKERS):
        return DiffusionPipeline.from_pretrained(source, **kwargs)
    from diffusers import AutoPipelineForText2Image

    try:
        return AutoPipelineForText2Image.from_pretrained(source, **kwargs)
    except ValueError:
        if family != "auto":
            raise
        logger.info("%s: no text-to-image AutoPipeline; loading it with DiffusionPipeline", source)
        return DiffusionPipeline.from_pretrained(source, **kwargs)


def load_pipeline(settings: AppSettings, plan: RuntimePlan) -> Any:
    """``from_pretrained`` of the entry's family (SD 1.5 to FLUX.2), on the replica's device."""
    import torch

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
    entry = model_entry(settings)
    # Only the SD pipelines have a safety_checker component (the others get the standalone one).
    if not settings.safety_checker and entry.family in ("sd15", "sd2", "sd-turbo"):
        kwargs["safety_checker"] = None
        kwargs["requires_safety_checker"] = False
    if settings.speed.fp16_vae:
        kwargs["vae"] = load_fp16_vae(settings.speed.fp16_vae, kwargs["dtype"])
    quantization = quantization_config(entry)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    logger.info("loading %s with %s", source, plan)
    started = time.perf_counter()
    pipe = from_pretrained(entry.family, source, kwargs, is_local)
    if plan.offload == "model":
        pipe.enable_model_cpu_offload()
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload()
    else:
        pipe = pipe.to(plan.device)
    pipe.set_progress_bar_config(disable=True)
    # Cold start, pipeline load phase (the weight sync before it logs its own line).
    logger.info("loaded pipeline %s on %s in %.1f s", source, plan.device, time.perf_counter() - started)
    # Attention, fused QKV, channels-last, slicing and compile: apply_recipes, once the warm-up
    # plan is known (the recompile limit must cover its shapes).
    return pipe


def load_fp16_vae(source: str, dtype: Any) -> Any:
    """A VAE that decodes in fp16 (SDXL's own overflows and is upcast to fp32: slower, more memory)."""
    from diffusers import AutoencoderKL

    path, is_local = resolve_model_source(source)
    vae = AutoencoderKL.from_pretrained(path, dtype=dtype, local_files_only=is_local)
    # The fixed VAE's config says so itself; make sure the pipeline never upcasts it again.
    vae.register_to_config(force_upcast=False)
    return vae


class SchedulerCache:
    """One scheduler instance per name, built from the model's own config, swapped in per call.

    Swapping is safe only because a replica runs one pipeline call at a time (diffusers schedulers
    keep per-call state and are not thread-safe).
    """

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self._base_config = pipe.scheduler.config
        self._base_scheduler = pipe.scheduler
        self._schedulers: dict[str, Any] = {}

    def use(self, name: str) -> Any:
        """Put scheduler ``name`` on the pipeline and return it (pipelines from from_pipe take it too)."""
        if name == "default":  # the checkpoint's own, as loaded
            name = "default"
            self._schedulers.setdefault(name, self._base_scheduler)
        if name not in self._schedulers:
            self._schedulers[name] = build_scheduler(name, self._base_config)
        self._pipe.scheduler = self._schedulers[name]
        return self._pipe.scheduler


def build_scheduler(name: str, base_config: Any) -> Any:
    """Instantiate scheduler ``name`` from the model's own scheduler config (betas, offsets...)."""
    import diffusers

    spec = SCHEDULERS[canonical_scheduler_name(name)]
    scheduler_class = getattr(diffusers, spec.class_name)
    return scheduler_class.from_config(base_config, **spec.config_overrides)
