"""The tiny model builds deterministically and loads through the real from_pretrained path."""

from __future__ import annotations

from pathlib import Path

from serve_app.config.settings import AppSettings
from serve_app.engine.model.loading import RuntimePlan, load_pipeline
from serve_app.testing.tiny_model import save_tiny_model


def test_tiny_model_build_is_deterministic_and_loads_through_from_pretrained(tmp_path: Path) -> None:
    import torch

    first = save_tiny_model(tmp_path / "a")
    second = save_tiny_model(tmp_path / "b")
    assert (first / "model_index.json").exists()
    assert save_tiny_model(first) == first  # an existing folder is reused, not rebuilt
    plan = RuntimePlan(device="cpu", dtype="float32", attention="sdpa", compile=False)
    images = []
    for folder in (first, second):
        pipe = load_pipeline(AppSettings(model=str(folder), default_size="64x64"), plan)
        assert type(pipe).__name__ == "StableDiffusionPipeline"
        out = pipe(
            prompt="a cat",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator("cpu").manual_seed(3),
            output_type="np",
        )
        images.append(out.images[0])
    assert images[0].shape == (64, 64, 3)
    assert abs(images[0] - images[1]).max() == 0



def test_the_example_lora_visibly_changes_the_tiny_models_picture(tmp_path: Path) -> None:
    """What a newcomer tries first (tiny-ink at its configured 0.8, local.yaml's 64x64 and DDIM):
    the picture must change enough to see, and weight 0 must change nothing."""
    import numpy as np
    import torch
    from diffusers import DDIMScheduler

    model = save_tiny_model(tmp_path / "sd")
    lora = save_tiny_model(tmp_path / "ink", "lora")
    plan = RuntimePlan(device="cpu", dtype="float32", attention="sdpa", compile=False)
    pipe = load_pipeline(AppSettings(model=str(model), default_size="64x64"), plan)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)

    def draw() -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(42)
        kwargs = {"num_inference_steps": 10, "height": 64, "width": 64, "output_type": "np"}
        out = pipe(prompt="a cat", generator=generator, **kwargs)
        return out.images[0]

    base = draw()
    pipe.load_lora_weights(str(lora), adapter_name="ink")
    pipe.set_adapters(["ink"], [0.0])
    assert np.abs(draw() - base).max() < 1e-5  # weight 0 is the base model
    pipe.set_adapters(["ink"], [0.8])
    assert np.abs(draw() - base).mean() * 255 > 25  # about 37/255: smooth blobs instead of fine noise
