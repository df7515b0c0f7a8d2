"""The tiny offline SDXL, FLUX.1 and SD 3.5 pipelines through the replica's real model code, no Ray.

Built with random weights by serve_app/testing/tiny_families.py, saved, and loaded back through
``LoadedModel`` (the real from_pretrained path): SDXL's two text encoders and micro-conditioned
UNet rendering exactly what a plain diffusers call renders, through the replica's two stages
(latents, then the finish stage's decode: its fp32 copy of a force_upcast VAE in fp16 too) and
from_pipe's image-to-image and inpainting; FLUX.1's true CFG and LoRA, packed-latent previews, the
standalone safety checker's flagged path, SD 3.5's image-to-image via from_pipe and its LoRA (on,
then off again), and the LoRA architecture check between SD 3.5 and SD 1.5.
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
from serve_app.engine.render import Denoised, Finisher
from serve_app.testing.tiny_families import save_tiny_safety_checker
from serve_app.testing.tiny_model import save_tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)  # two cores, two xdist workers; and bit-exact reruns on one thread
    root = tmp_path_factory.mktemp("families")
    kinds = ("sdxl", "flux", "flux-lora", "sd3", "sd3-lora", "flux2-klein", "preview-vae", "text2img", "lora")
    for kind in kinds:
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
            {
                "name": "xl",
                "model": str(folder / "sdxl"),
                "family": "sdxl",
                "default_size": "64x64",
                "preview_vae": str(folder / "preview-vae"),  # TAESDXL's shape: 4 channels
            },
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


# What the tiny SDXL renders with: an SD sampler (the checkpoint's own, Euler) and real CFG.
XL = dict(scheduler="euler", guidance_scale=5.0)


def _plain_sdxl(folder: Path) -> object:
    """The same folder through diffusers alone: what the replica's renders must equal."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder / "sdxl", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _finish(model: LoadedModel, job: ImageSpec) -> np.ndarray:
    """The served path: the denoise stage stops at latents, the finish stage decodes them with the
    model's finish VAE (serve_app/engine/render.py) and encodes a PNG."""
    assert model.tasks.stops_at_latents(job.kind)
    generators = [torch.Generator("cpu").manual_seed(job.seed)]
    scheduler = model.schedulers.use(job.scheduler)
    latents = model.tasks([job], generators, lambda *step: step[-1], scheduler, output_type="latent").images
    finished = Finisher("cpu").finish(
        Denoised(real=1, denoise_s=0.0, steps_done=job.steps, latents=latents),
        model.finish_vae(),
        model.safety_checker,
        model.feature_extractor,
        tiled=False,
    )
    return np.asarray(Image.open(io.BytesIO(finished.images[0][0])).convert("RGB"))


def test_sdxl_renders_what_plain_diffusers_renders_through_both_stages(folder: Path) -> None:
    """A catalogue entry of family sdxl: two CLIP encoders (penultimate states concatenated into
    the UNet's cross-attention, text_encoder_2's pooled output with the six time ids into its
    "text_time" embedding), an 8x VAE marked force_upcast. Served (latents, then the finish
    stage's decode) and returned by the pipeline itself, the picture equals diffusers' own call
    for the same seed; another seed draws another; 4-channel step latents preview."""
    model = LoadedModel("xl", _settings(folder).for_model("xl"), 1)
    pipe = model.pipe
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and model.plan.family == "sdxl"
    assert model.recipes["denoiser"] == "unet" and pipe.vae_scale_factor == 8
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.unet.config.addition_embed_type == "text_time"
    widths = pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size
    assert pipe.unet.config.cross_attention_dim == widths and pipe.text_encoder_2.config.hidden_size != 32
    assert pipe.vae.config.force_upcast and pipe.vae.config.scaling_factor == 0.13025
    previews: list[dict[int, bytes]] = []
    job = _job("xl", negative_prompt="fog", **XL)
    image = np.asarray(
        _render(
            model, job, lambda kw: previews.append(model.previews.decode(kw["latents"], [0], 64, 64))
        ).images[0]
    )
    assert image.shape == (64, 64, 3)
    assert previews and all(p[0][:2] == b"\xff\xd8" for p in previews)
    plain = _plain_sdxl(folder)
    expected = plain(  # type: ignore[operator]
        prompt=["a cat"],
        negative_prompt=["fog"],
        num_inference_steps=2,
        guidance_scale=5.0,
        width=64,
        height=64,
        generator=[torch.Generator("cpu").manual_seed(1)],
    ).images[0]
    assert np.array_equal(image, np.asarray(expected))
    assert np.array_equal(_finish(model, job), image)
    other = np.asarray(_render(model, _job("xl", seed=2, negative_prompt="fog", **XL)).images[0])
    assert np.abs(other.astype(int) - image).max() > 0


def test_sdxl_img2img_and_inpaint_run_through_from_pipe(folder: Path) -> None:
    """The sdxl family lists every task: image-to-image and inpainting run on pipelines from_pipe
    builds over the same weights, stop at latents like text-to-image, and image-to-image equals
    diffusers' own StableDiffusionXLImg2ImgPipeline for the same seed."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    model = LoadedModel("xl", _settings(folder).for_model("xl"), 1)
    assert {"img2img", "inpaint"} <= set(_settings(folder).catalogue.entries["xl"].supported_tasks)
    start, mask = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(start, format="PNG")
    Image.new("L", (64, 64), 255).save(mask, format="PNG")
    img2img = _job("xl", kind="img2img", strength=0.5, steps=4, init_image=start.getvalue(), **XL)
    image = np.asarray(_render(model, img2img).images[0])
    assert type(model.tasks.for_kind("img2img")).__name__ == "StableDiffusionXLImg2ImgPipeline"
    plain = StableDiffusionXLImg2ImgPipeline.from_pipe(_plain_sdxl(folder))
    plain.set_progress_bar_config(disable=True)
    expected = plain(
        prompt=["a cat"],
        image=[Image.open(start).convert("RGB")],
        strength=0.5,
        num_inference_steps=4,
        guidance_scale=5.0,
        generator=[torch.Generator("cpu").manual_seed(1)],
    ).images[0]
    assert np.array_equal(image, np.asarray(expected))
    assert np.array_equal(_finish(model, img2img), image)
    inpaint = _job(
        "xl",
        kind="inpaint",
        strength=0.9,
        steps=4,
        init_image=start.getvalue(),
        mask_image=mask.getvalue(),
        **XL,
    )
    assert _finish(model, inpaint).shape == (64, 64, 3)
    assert type(model.tasks.for_kind("inpaint")).__name__ == "StableDiffusionXLInpaintPipeline"


def test_sdxl_fp16_vae_marked_force_upcast_decodes_through_an_fp32_copy(folder: Path) -> None:
    """On CUDA an SDXL model loads in fp16, and its VAE (force_upcast: it overflows in fp16) must
    decode in fp32 without diffusers' in-place upcast of the shared VAE: the finish stage gets an
    fp32 copy, made once, and the fp16 original stays as the denoise stage uses it. CPU replicas
    load fp32 (choose_dtype), so the VAE is put in fp16 by hand here."""
    model = LoadedModel("xl", _settings(folder).for_model("xl"), 1)
    job = _job("xl", **XL)
    fp32 = _finish(model, job)
    assert model.finish_vae() is model.pipe.vae  # fp32 already: no copy
    model.pipe.vae.to(torch.float16)
    copy = model.finish_vae()
    assert copy is not model.pipe.vae and copy.dtype == torch.float32
    assert model.pipe.vae.dtype == torch.float16 and model.finish_vae() is copy
    # The copy holds the fp16 weights in fp32: within a level of the fp32 model's picture.
    assert np.abs(_finish(model, job).astype(int) - fp32).max() <= 1


def test_the_finish_stage_decodes_a_vae_with_latents_mean_and_std_as_diffusers_does(folder: Path) -> None:
    """Some SDXL-pipeline checkpoints (Playground v2.5, served through the auto family as a
    StableDiffusionXLPipeline) normalise latents per channel: their VAE config carries
    latents_mean and latents_std, which diffusers' own decode applies. The finish stage decodes
    those pipelines' latents itself and must apply them too (it divided by scaling_factor only:
    washed-out, wrongly coloured pictures)."""
    model = LoadedModel("xl", _settings(folder).for_model("xl"), 1)
    model.pipe.vae.register_to_config(  # Playground v2.5's VAE config
        latents_mean=[-1.6574, 1.886, -1.383, 2.5155],
        latents_std=[8.4927, 5.9022, 6.5498, 5.2299],
        scaling_factor=0.5,
    )
    job = _job("xl", **XL)
    itself = np.asarray(_render(model, job).images[0])
    assert np.array_equal(_finish(model, job), itself)
