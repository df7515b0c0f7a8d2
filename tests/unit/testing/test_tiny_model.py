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
