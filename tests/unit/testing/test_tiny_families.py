"""The tiny offline FLUX.1 and SD 3.5 pipelines through the replica's real model code, no Ray.

Built with random weights by serve_app/testing/tiny_families.py, saved, and loaded back through
``LoadedModel`` (the real from_pretrained path): FLUX.1's true CFG and LoRA, packed-latent
previews, the standalone safety checker's flagged path, SD 3.5's image-to-image via from_pipe and
its LoRA (on, then off again), and the LoRA architecture check between SD 3.5 and SD 1.5.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.images import ImageSpec
from serve_app.core.model_choice import LoraRequest, resolve_model
from serve_app.engine.model.loaded import LoadedModel
from serve_app.testing.tiny_families import save_tiny_safety_checker
from serve_app.testing.tiny_model import save_tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)  # two cores, two xdist workers; and bit-exact reruns on one thread
    root = tmp_path_factory.mktemp("families")
    for kind in ("flux", "flux-lora", "sd3", "sd3-lora", "flux2-klein", "preview-vae", "text2img", "lora"):
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
            {
                "name": "sd35",
                "model": str(folder / "sd3"),
                "family": "sd3",
                "default_size": "64x64",
                "loras": [{"name": "sd3-ink", "source": str(folder / "sd3-lora")}],
            },
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


def test_sd35_lora_changes_the_image_and_off_again_gives_the_plain_one(folder: Path) -> None:
    """An SD 3.5 LoRA in diffusers' SD3 format (save_tiny_sd3_lora) loads through PEFT into the
    transformer of a catalogue entry of family sd3, and is switched per call like any other."""
    model = LoadedModel("sd35", _settings(folder).for_model("sd35"), 1)
    assert list(model.adapters._specs) == ["sd3-ink"]
    plain = np.asarray(_render(model, _job("sd35")).images[0])
    model.adapters.activate((("sd3-ink", 1.0),))
    assert model.adapters.loaded == ["sd3-ink"]
    assert model.pipe.get_list_adapters() == {"transformer": ["sd3-ink"]}
    lora = np.asarray(_render(model, _job("sd35", loras=(("sd3-ink", 1.0),))).images[0])
    assert np.abs(lora.astype(int) - plain).max() > 0
    model.adapters.activate(())
    again = np.asarray(_render(model, _job("sd35")).images[0])
    assert np.array_equal(again, plain)


def _sd15_and_sd35(folder: Path, sd35_loras: list[dict[str, object]]) -> AppSettings:
    return AppSettings(
        models=[
            {
                "name": "sd",
                "model": str(folder / "text2img"),
                "family": "sd15",
                "loras": [{"name": "ink15", "source": str(folder / "lora")}],
            },
            {"name": "sd35", "model": str(folder / "sd3"), "family": "sd3", "loras": sd35_loras},
        ],
        default_size="64x64",
    )


def test_sd35_and_sd15_loras_are_refused_across_architectures(folder: Path) -> None:
    """The catalogue checks a LoRA by the family of the entry it is listed under: an SD 3.5 LoRA on
    an SD 1.5 model, or an SD 1.5 LoRA on an SD 3.5 model, is a 400 before anything is queued, and
    neither is among the LoRAs a replica of the other model loads."""
    catalogue = _sd15_and_sd35(folder, [{"name": "sd3-ink", "source": str(folder / "sd3-lora")}]).catalogue
    assert catalogue.loras_for("sd") == ["ink15"] and catalogue.loras_for("sd35") == ["sd3-ink"]
    sd3_on_15_says = re.escape("LoRA 'sd3-ink' is for SD 3.5 models; 'sd' is SD 1.5")
    with pytest.raises(InvalidRequestError, match=sd3_on_15_says) as sd3_on_15:
        resolve_model(catalogue, "sd", [LoraRequest(name="sd3-ink")])
    sd15_on_3_says = re.escape("LoRA 'ink15' is for SD 1.5 models; 'sd35' is SD 3.5")
    with pytest.raises(InvalidRequestError, match=sd15_on_3_says) as sd15_on_3:
        resolve_model(catalogue, "sd35", [LoraRequest(name="ink15")])
    for refused in (sd3_on_15.value, sd15_on_3.value):
        assert refused.code == "lora_incompatible" and refused.param == "loras[0].name"


def test_an_sd15_lora_file_listed_under_an_sd35_model_fails_its_load_clearly(folder: Path) -> None:
    """What the catalogue cannot see: an SD 1.5 file listed under an SD 3.5 entry. diffusers' SD3
    loader finds no transformer key in it and only warns; the adapters refuse it by name instead of
    set_adapters' "not in the list of present adapters", and the model keeps rendering without it."""
    settings = _sd15_and_sd35(folder, [{"name": "misfiled", "source": str(folder / "lora")}])
    model = LoadedModel("sd35", settings.for_model("sd35"), 1)
    with pytest.raises(ValueError, match=r"LoRA 'misfiled' \(.*\) holds no weights StableDiffusion3Pipeline"):
        model.adapters.activate((("misfiled", 1.0),))
    assert model.adapters.loaded == []
    assert _render(model, _job("sd35")).images[0].size == (64, 64)
