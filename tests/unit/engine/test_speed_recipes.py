"""GPU speed recipes on a CPU: which recipe each device and setting gets, and what applying them does.

The CUDA branches are pure functions of (setting, device, installed packages), tested here for
both devices. The recipes themselves are applied to the real tiny pipeline on CPU and checked by
their effect on the modules (memory format, attention processors, slicing), and by the images
still following the same seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from serve_app.config.families import preset_for
from serve_app.config.settings import AppSettings, BatchingSettings
from serve_app.config.speed import SpeedSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.images import ImageSpec
from serve_app.core.shapes import check_size_served, pad_jobs, plan_calls, shape_policy, warmup_shapes
from serve_app.engine.model.loading import RuntimePlan, plan_runtime
from serve_app.engine.speed_recipes import (
    apply_recipes,
    choose_attention,
    choose_compile,
    choose_fuse_qkv,
    choose_toggle,
    compile_cache_dir,
    compile_kwargs,
)
from serve_app.testing.tiny_model import build_tiny_pipeline

# --- selection --------------------------------------------------------------------------------


def test_auto_attention_never_pairs_xformers_with_compile() -> None:
    assert choose_attention("auto", "cuda", xformers_available=True, compiled=False) == "xformers"
    assert choose_attention("auto", "cuda", xformers_available=True, compiled=True) == "sdpa"
    assert choose_attention("auto", "cuda", xformers_available=False, compiled=False) == "sdpa"
    assert choose_attention("auto", "cpu", xformers_available=True, compiled=False) == "sdpa"
    with pytest.raises(ValueError, match="full graph"):
        choose_attention("xformers", "cuda", xformers_available=True, compiled=True)
    with pytest.raises(ValueError, match="CUDA"):
        choose_attention("xformers", "cpu", xformers_available=True)


def test_compile_is_cuda_only_unless_allowed_on_cpu() -> None:
    assert choose_compile(True, "cuda") is True
    assert choose_compile(True, "cpu") is False
    assert choose_compile(True, "cpu", allow_cpu=True) is True
    assert choose_compile(False, "cuda") is False


def test_auto_toggles_follow_the_device() -> None:
    assert choose_toggle("auto", "cuda") is True
    assert choose_toggle("auto", "cpu") is False
    assert choose_toggle("on", "cpu") is True
    assert choose_toggle("off", "cuda") is False
    # Fusing installs SDPA processors: never chosen over xformers, refused when forced onto it.
    assert choose_fuse_qkv("auto", "cuda", "sdpa") is True
    assert choose_fuse_qkv("auto", "cuda", "xformers") is False
    assert choose_fuse_qkv("auto", "cpu", "sdpa") is False
    with pytest.raises(ValueError, match="sdpa"):
        choose_fuse_qkv("on", "cuda", "xformers")


def test_plan_on_this_cpu_machine() -> None:
    plan = plan_runtime(AppSettings(compile=True))
    assert (plan.device, plan.attention, plan.compile, plan.channels_last, plan.fuse_qkv) == (
        "cpu",
        "sdpa",
        False,
        False,
        False,
    )
    forced = plan_runtime(
        AppSettings(
            compile=True,
            speed={"compile_on_cpu": True, "compile_vae": False, "channels_last": "on", "fuse_qkv": "on"},
        )
    )
    assert (forced.compile, forced.compile_vae, forced.channels_last, forced.fuse_qkv) == (
        True,
        False,
        True,
        True,
    )


def test_compile_arguments_and_cache_location() -> None:
    inductor = compile_kwargs(SpeedSettings(compile_mode="max-autotune"))
    assert inductor == {"fullgraph": True, "dynamic": False, "backend": "inductor", "mode": "max-autotune"}
    # Other backends refuse a mode argument.
    assert "mode" not in compile_kwargs(SpeedSettings(compile_backend="aot_eager"))
    assert compile_cache_dir(SpeedSettings(), "/models").as_posix() == "/models/torch-compile"
    assert compile_cache_dir(SpeedSettings(compile_cache_dir="/nvme/c"), "/models").as_posix() == "/nvme/c"


def test_turbo_presets_set_defaults_only_where_none_given() -> None:
    assert preset_for("stabilityai/sdxl-turbo", "auto") == "sdxl-turbo"
    assert preset_for("stabilityai/sd-turbo", "auto") == "sd-turbo"
    assert preset_for("stable-diffusion-v1-5/stable-diffusion-v1-5", "auto") == "none"
    assert preset_for("s3://bucket/my-model", "sd-turbo") == "sd-turbo"
    turbo = AppSettings(model="stabilityai/sdxl-turbo")
    assert (turbo.default_steps, turbo.default_guidance_scale) == (1, 0.0)
    chosen = AppSettings(model="stabilityai/sd-turbo", default_steps=4)
    assert (chosen.default_steps, chosen.default_guidance_scale) == (4, 0.0)
    off = AppSettings(model="stabilityai/sd-turbo", speed={"preset": "none"})
    assert (off.default_steps, off.default_guidance_scale) == (30, 7.5)
    assert plan_runtime(AppSettings(model="stabilityai/sd-turbo")).preset == "sd-turbo"


def test_bad_speed_settings_fail_validation() -> None:
    with pytest.raises(ValidationError, match="multiples of 8"):
        AppSettings(speed={"size_buckets": ["500x500"]})
    with pytest.raises(ValidationError, match="batch_buckets"):
        AppSettings(speed={"batch_buckets": []})
    with pytest.raises(ValidationError):
        AppSettings(speed={"channels_last": "yes"})


# --- applying recipes to the tiny pipeline ------------------------------------------------------


def _render(pipe: object, seeds: list[int]) -> np.ndarray:
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
    images = pipe(  # type: ignore[operator]
        ["a red cat"] * len(seeds), num_inference_steps=3, width=64, height=64, generator=generators
    ).images
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def test_recipes_change_the_modules_not_the_images() -> None:
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    before = _render(pipe, [1, 2])
    plan = RuntimePlan("cpu", "float32", "sdpa", False, channels_last=True, fuse_qkv=True, vae_slicing=True)
    applied = apply_recipes(pipe, plan, SpeedSettings(), shapes=0)
    assert applied == {
        "attention": "sdpa",
        "denoiser": "unet",
        "fused_qkv": True,
        "channels_last": True,
        "vae_slicing": True,
        "compiled": [],
    }
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor2_0"}
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.use_slicing
    after = _render(pipe, [1, 2])
    # Same seeds, same images (float reassociation only); different seeds differ by far more.
    assert np.abs(before - after).max() <= 2
    assert np.abs(after[0] - after[1]).max() > 20


def test_regional_compile_compiles_the_unets_repeated_blocks_only() -> None:
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    plan = RuntimePlan("cpu", "float32", "sdpa", True)
    speed = SpeedSettings(compile_scope="regional", compile_backend="eager")
    applied = apply_recipes(pipe, plan, speed, shapes=1)
    assert applied["compiled"] == ["unet (repeated blocks)"]
    # The UNet itself stays the model (LoRAs and hot-swap see it); its transformer blocks are compiled.
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    blocks = [m for m in pipe.unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert blocks and all(getattr(m, "_compiled_call_impl", None) is not None for m in blocks)


def test_plain_plan_leaves_the_pipeline_alone() -> None:
    pipe = build_tiny_pipeline()
    applied = apply_recipes(pipe, RuntimePlan("cpu", "float32", "sdpa", False), SpeedSettings(), shapes=0)
    assert applied["fused_qkv"] is False and applied["compiled"] == []
    assert "FusedAttnProcessor2_0" not in {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert not pipe.vae.use_slicing


# --- shapes: warm-up plan, padding, pixel budget ------------------------------------------------


def _settings(**speed: object) -> AppSettings:
    return AppSettings(default_size="512x512", compile=True, speed=speed)


def test_warmup_plan_covers_every_configured_bucket() -> None:
    settings = _settings(size_buckets=["512x512", "768x768", "1024x1024"], batch_buckets=[1, 2, 4, 8])
    shapes = warmup_shapes(shape_policy(settings, compiled=True))
    assert sorted(shapes) == sorted((s, s, b) for s in (512, 768, 1024) for b in (1, 2, 4, 8))
    # No buckets configured: the default size. Not compiled: nothing to warm.
    default_shapes = [(512, 512, b) for b in (1, 2, 3, 4, 6, 8)]  # 3 and 6: less padding
    assert warmup_shapes(shape_policy(_settings(), compiled=True)) == default_shapes
    assert warmup_shapes(shape_policy(settings, compiled=False)) == []


def test_pixel_budget_limits_warmup_and_calls_by_size() -> None:
    settings = _settings(size_buckets=["512x512", "1024x1024"], batch_buckets=[1, 2, 4, 8])
    budget = 8 * 512 * 512  # 8 at 512x512, 2 at 1024x1024
    policy = shape_policy(settings, compiled=True, max_batch_pixels=budget)
    assert sorted(warmup_shapes(policy)) == sorted(
        [(512, 512, b) for b in (1, 2, 4, 8)] + [(1024, 1024, 1), (1024, 1024, 2)]
    )
    assert [c.batch for c in plan_calls(8, 512, 512, policy)] == [8]
    assert [(c.indices, c.batch) for c in plan_calls(5, 1024, 1024, policy)] == [
        ([0, 1], 2),
        ([2, 3], 2),
        ([4], 1),
    ]
    # Uncompiled replicas obey the budget too, without padding.
    eager = shape_policy(settings, compiled=False, max_batch_pixels=3 * 1024 * 1024)
    assert [(len(c.indices), c.batch, c.compiled) for c in plan_calls(7, 1024, 1024, eager)] == [
        (3, 3, False),
        (3, 3, False),
        (1, 1, False),
    ]
    assert [c.batch for c in plan_calls(7, 512, 512, shape_policy(settings, compiled=False))] == [7]


def test_batches_pad_up_to_the_next_bucket_and_split_past_the_largest() -> None:
    policy = shape_policy(_settings(batch_buckets=[1, 2, 4]), compiled=True)
    assert [(len(c.indices), c.batch, c.padding) for c in plan_calls(3, 512, 512, policy)] == [(3, 4, 1)]
    assert [(len(c.indices), c.batch) for c in plan_calls(6, 512, 512, policy)] == [(4, 4), (2, 2)]
    assert [(len(c.indices), c.batch) for c in plan_calls(5, 512, 512, policy)] == [(4, 4), (1, 1)]
    job = ImageSpec("p", 512, 512, 10, 7.5, "ddim", seed=1)
    other = ImageSpec("q", 512, 512, 10, 7.5, "ddim", seed=2)
    assert pad_jobs([job, other], 4) == [job, other, other, other]


def test_sizes_outside_the_buckets_run_eagerly_or_are_refused() -> None:
    eager = shape_policy(_settings(size_buckets=["512x512"], batch_buckets=[1, 4]), compiled=True)
    (call,) = plan_calls(3, 768, 768, eager)
    assert (call.compiled, call.batch) == (False, 3)  # no padding: nothing compiled to fit
    refuse_settings = _settings(size_buckets=["512x512"], outside_buckets="refuse")
    with pytest.raises(ValueError, match="768x768"):
        plan_calls(1, 768, 768, shape_policy(refuse_settings, compiled=True))
    with pytest.raises(InvalidRequestError) as refused:
        check_size_served(768, 768, refuse_settings)
    assert refused.value.param == "size"
    check_size_served(512, 512, refuse_settings)
    check_size_served(768, 768, _settings(size_buckets=["512x512"]))  # eager: served
    check_size_served(768, 768, AppSettings(speed={"outside_buckets": "refuse"}))  # not compiled


def test_batching_pixel_budget_is_validated() -> None:
    assert BatchingSettings(max_batch_pixels=4 * 1024 * 1024).max_batch_pixels == 4 * 1024 * 1024
    with pytest.raises(ValidationError):
        BatchingSettings(max_batch_pixels=-1)


def test_fp16_safe_vae_replaces_the_models_own(tiny_model_dir: Path, tmp_path: Path) -> None:
    from diffusers import AutoencoderKL

    from serve_app.engine.model.loading import load_pipeline

    original = AutoencoderKL.from_pretrained(tiny_model_dir / "vae")
    torch.manual_seed(123)  # different weights than the model's VAE, so replacement is visible
    fixed = AutoencoderKL.from_config(original.config)
    fixed.register_to_config(force_upcast=True)
    fixed.save_pretrained(tmp_path / "fixed-vae")
    settings = AppSettings(
        model=str(tiny_model_dir), default_size="64x64", speed={"fp16_vae": str(tmp_path / "fixed-vae")}
    )
    pipe = load_pipeline(settings, RuntimePlan("cpu", "float32", "sdpa", False))
    loaded = pipe.vae.decoder.conv_in.weight
    assert torch.equal(loaded, fixed.decoder.conv_in.weight)
    assert not torch.equal(loaded, original.decoder.conv_in.weight)
    assert pipe.vae.config.force_upcast is False  # never upcast to fp32 at decode


def test_after_warm_up_a_missed_shape_runs_eagerly_instead_of_compiling() -> None:
    """The serving default (recompile_while_serving: false): dynamo's eager_on_recompile stance."""
    from serve_app.core.shapes import dynamo_counters

    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    plan = RuntimePlan("cpu", "float32", "sdpa", True)
    applied = apply_recipes(pipe, plan, SpeedSettings(compile_backend="eager", compile_on_cpu=True), shapes=1)
    assert applied["compiled"] == ["unet"]
    _render(pipe, [1])  # warm-up: batch 1 compiled
    warmed = dynamo_counters()["unique_graphs"]
    torch.compiler.set_stance("eager_on_recompile")
    try:
        images = _render(pipe, [1, 2, 3])  # a batch size never compiled
    finally:
        torch.compiler.set_stance("default")
    assert dynamo_counters()["unique_graphs"] == warmed
    assert images.shape == (3, 64, 64, 3) and np.abs(images[0] - images[1]).max() > 20
    _render(pipe, [1, 2, 3])  # with the default stance the same shape does compile: the check can fail
    assert dynamo_counters()["unique_graphs"] > warmed


def test_compile_cache_goes_to_the_model_cache_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from serve_app.engine.speed_recipes import use_compile_cache

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    folder = compile_cache_dir(SpeedSettings(), str(tmp_path / "models"))
    use_compile_cache(folder)
    import os

    assert folder.is_dir() and folder.parent == tmp_path / "models"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
    assert os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] == "1"
    assert os.environ["TRITON_CACHE_DIR"] == str(folder / "triton")
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == str(folder)  # what inductor itself will use
