"""The tiny offline FLUX.1 and SD 3.5 pipelines through the replica's real model code, no Ray.

Built with random weights by serve_app/testing/tiny_families.py, saved, and loaded back through
``LoadedModel`` (the real from_pretrained path): FLUX.1's true CFG and LoRA, packed-latent
previews, the standalone safety checker's flagged path, SD 3.5's image-to-image via from_pipe.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageSpec
from serve_app.engine.model.loaded import LoadedModel
from serve_app.testing.tiny_families import save_tiny_safety_checker
from serve_app.testing.tiny_model import save_tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("families")
    for kind in ("flux", "flux-lora", "sd3", "flux2-klein", "preview-vae"):
        save_tiny_model(root / kind, kind)
    save_tiny_safety_checker(root / "strict-checker", flag_everything=True)
    return root


def _settings(folder: Path, **extra: object) -> AppSettings:
    return AppSettings(
        models=[
            {
                "name": "flux",
                "model": str(folder / "flux"),
                "family": "flux-dev",
                "default_size": "64x64",
                "preview_vae": str(folder / "preview-vae"),
                "loras": [{"name": "ink", "source": str(folder / "flux-lora")}],
            },
            {"name": "sd35", "model": str(folder / "sd3"), "family": "sd3", "default_size": "64x64"},
            {"name": "klein", "model": str(folder / "flux2-klein"), "family": "flux2-klein"},
        ],
        default_size="64x64",
        **extra,
    )


def _job(model: str, **fields: object) -> ImageSpec:
    base: dict[str, object] = dict(
        prompt="a cat", width=64, height=64, steps=2, guidance_scale=3.5, scheduler="flow_euler", seed=1
    )
    return ImageSpec(model=model, **{**base, **fields})  # type: ignore[arg-type]


def _render(model: LoadedModel, job: ImageSpec, on_step: object = None) -> object:
    def step(pipe: object, index: int, timestep: object, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(kwargs)  # type: ignore[operator]
        return kwargs

    generators = [torch.Generator("cpu").manual_seed(job.seed)]
    return model.tasks([job], generators, step, model.schedulers.use(job.scheduler))


def test_flux_true_cfg_lora_and_packed_previews(folder: Path) -> None:
    model = LoadedModel("flux", _settings(folder).for_model("flux"), 1)
    assert type(model.pipe).__name__ == "FluxPipeline"
    assert model.recipes["denoiser"] == "transformer" and model.plan.family == "flux-dev"
    previews: list[dict[int, bytes]] = []
    plain = np.asarray(
        _render(
            model, _job("flux"), lambda kw: previews.append(model.previews.decode(kw["latents"], [0], 64, 64))
        ).images[0]
    )
    # Packed (batch, tokens, 16) latents unpack to the 4-channel grid the decoder takes: a JPEG.
    assert previews and all(p[0][:2] == b"\xff\xd8" for p in previews)
    # The negative prompt changes the picture only through true CFG's second pass.
    ignored = np.asarray(_render(model, _job("flux", negative_prompt="fog")).images[0])
    assert np.array_equal(plain, ignored)
    true_cfg = np.asarray(_render(model, _job("flux", negative_prompt="fog", true_cfg_scale=3.0)).images[0])
    assert np.abs(true_cfg.astype(int) - plain).max() > 0
    model.adapters.activate((("ink", 1.0),))
    lora = np.asarray(_render(model, _job("flux", loras=(("ink", 1.0),))).images[0])
    assert np.abs(lora.astype(int) - plain).max() > 0


def test_sd35_img2img_and_the_standalone_checker_flags_what_it_checks(folder: Path) -> None:
    settings = _settings(folder, safety_checker_model=str(folder / "strict-checker"))
    model = LoadedModel("sd35", settings.for_model("sd35"), 1)
    assert type(model.pipe).__name__ == "StableDiffusion3Pipeline"
    output = _render(model, _job("sd35"))
    # This checker flags everything: the image comes back black and flagged, as SD 1.5's would.
    assert output.nsfw_content_detected == [True]
    assert np.asarray(output.images[0]).max() == 0
    start = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(start, format="PNG")
    image = _render(model, _job("sd35", kind="img2img", strength=0.5, steps=4, init_image=start.getvalue()))
    assert image.images[0].size == (64, 64)
    assert model.describe()["previews"] is None  # no decoder configured for it


def test_flux2_klein_renders_without_a_negative_prompt_argument(folder: Path) -> None:
    """Flux2KleinPipeline has no negative_prompt parameter: the call leaves it out (a TypeError
    otherwise); a preview decoder is never attached to it."""
    settings = _settings(folder, speed={"preview_vae": str(folder / "preview-vae")})
    model = LoadedModel("klein", settings.for_model("klein"), 1)
    assert type(model.pipe).__name__ == "Flux2KleinPipeline" and model.previews is None
    output = _render(model, _job("klein", guidance_scale=1.0))
    assert output.images[0].size == (64, 64)
