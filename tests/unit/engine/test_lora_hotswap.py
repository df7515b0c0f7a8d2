"""LoRA hot-swap on a compiled UNet: switching LoRAs and weights compiles nothing new.

A compiled replica that switched PEFT adapters would trace new modules (a recompile, or with the
serving stance an eager call nobody sees). With ``speed.lora_hotswap_rank`` the LoRAs share one slot
whose weights are swapped in place. Checked with dynamo's own counters, compiling with the "eager"
backend (the same tracing and guards as inductor, without code generation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from serve_app.config.catalogue import LoraSpec
from serve_app.core.shapes import dynamo_counters
from serve_app.engine.model.loras import LoraAdapters
from serve_app.testing.tiny_model import build_tiny_pipeline, save_tiny_lora


def _render(pipe) -> np.ndarray:  # type: ignore[no-untyped-def]
    generator = torch.Generator("cpu").manual_seed(3)
    image = pipe("a lighthouse", width=64, height=64, num_inference_steps=1, generator=generator).images[0]
    return np.asarray(image).astype(int)


def test_hot_swapping_loras_on_a_compiled_unet_compiles_nothing_new(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    specs = {
        name: LoraSpec(name=name, source=str(save_tiny_lora(tmp_path / name, seed=seed)))
        for name, seed in (("ink", 1), ("oil", 2))
    }
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    adapters = LoraAdapters(pipe, specs, str(tmp_path), None, hotswap_rank=8)
    adapters.prepare_hotswap()
    torch._dynamo.reset()
    pipe.unet = torch.compile(pipe.unet, backend="eager", dynamic=False)
    adapters.activate(())
    plain = _render(pipe)
    before = dynamo_counters()
    images = {}
    for loras in ((("ink", 1.0),), (("oil", 0.5),), (("ink", 0.8),), ()):
        adapters.activate(loras)
        images[loras] = _render(pipe)
    after = dynamo_counters()
    assert after["unique_graphs"] == before["unique_graphs"], (before, after)
    assert after["recompiles"] == before["recompiles"], (before, after)
    # The swaps took effect: each LoRA and weight draws its own image; none equals the plain model.
    assert np.abs(images[(("ink", 1.0),)] - plain).max() > 0
    assert np.abs(images[(("oil", 0.5),)] - images[(("ink", 1.0),)]).max() > 0
    assert np.abs(images[(("ink", 0.8),)] - images[(("ink", 1.0),)]).max() > 0
    assert np.array_equal(images[()], plain)
    with pytest.raises(ValueError, match="one LoRA per image"):
        adapters.activate((("ink", 1.0), ("oil", 1.0)))
