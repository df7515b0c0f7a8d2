"""The GPU benchmark runs on a CPU (tiny shapes), and its SD 1.5 / SDXL builds are the real architectures.

A GPU machine has no network and no time to debug the benchmark, so CI runs its CPU mode end to end
(one batch size, one timed call, the served part and compile skipped to keep it short). The real-size
architectures are built on torch's "meta" device, which allocates nothing, and checked against the
published parameter counts of the trained checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.gpu import main, recipe_plan
from serve_app.testing.random_weights import build_components

# Parameter counts of stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 as published.
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sdxl": {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    },
}


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_random_weight_builds_have_the_real_architectures(name: str) -> None:
    with torch.device("meta"):
        components = build_components(name)
    counts = {
        key: sum(p.numel() for p in module.parameters())
        for key, module in components.items()
        if isinstance(module, torch.nn.Module)
    }
    assert counts == PUBLISHED[name]


def test_recipes_per_device() -> None:
    assert recipe_plan("xformers", "cpu", "float32", xformers=True) is None
    assert recipe_plan("xformers", "cuda", "float16", xformers=False) is None
    assert recipe_plan("xformers", "cuda", "float16", xformers=True).attention == "xformers"
    compiled = recipe_plan("compiled", "cuda", "float16", xformers=True)
    assert (compiled.attention, compiled.compile, compiled.channels_last, compiled.fuse_qkv) == (
        "sdpa",
        True,
        True,
        True,
    )


def test_cpu_mode_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--batches",
            "1",
            "--iterations",
            "1",
            "--recipes",
            "sdpa,xformers,fast",
            "--served-seconds",
            "0",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    (written,) = tmp_path.glob("*-gpu-*.json")
    report = json.loads(written.read_text())
    assert report["note"].startswith("no CUDA")
    runs = {run["recipe"]: run for run in report["runs"]}
    assert runs["xformers"]["skipped"]
    assert runs["sdpa"]["applied"]["compiled"] == []
    # The compiled recipe is the service's own compile path, tested in test_compiled_serving.py.
    assert runs["fast"]["applied"]["fused_qkv"] and runs["fast"]["applied"]["channels_last"]
    for recipe in ("sdpa", "fast"):
        (row,) = runs[recipe]["batches"]
        assert row["batch"] == 1 and row["images_per_s"] > 0 and row["first_call_s"] > 0
    assert Path(report["plot"]).stat().st_size > 0
    # The live previews row: the same batch timed without and with a TAESD-sized decoder's previews.
    (previews,) = report["previews"]
    assert previews["arch"] == "tiny" and previews["previews_per_image"] >= 1
    assert previews["off_s"] > 0 and previews["on_s"] > 0
    printed = capsys.readouterr().out
    assert "tiny   fast" in printed and "skipped" in printed
    assert "previews tiny: batch 1, 1 per image" in printed
