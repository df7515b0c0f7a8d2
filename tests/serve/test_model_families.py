"""Every family beside the tiny SD model, through every interface (issue 24).

One real local Serve app serves the tiny SD model and a tiny random-weight FLUX.1-dev (the real
FluxPipeline classes: transformer, CLIP + T5 with locally built tokenizers, packed latents,
FlowMatchEulerDiscreteScheduler) with a FLUX LoRA, a preview decoder and a standalone safety
checker, all built offline. Each interface renders with it; what it cannot take is a 400 naming
the field. Tiny FLUX.1-schnell, SD 3.5 and FLUX.2-klein share FLUX.1-dev's l40s class; a tiny SDXL
(two CLIP encoders, micro-conditioned UNet, force_upcast VAE) shares the SD model's default class,
as aws.yaml places them; each renders through every interface on its own class's deployment.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import webuiapi
from fake_discord import DiscordSigner, FakeDiscord, imagine_interaction, post_interaction
from ray import serve
from support import assert_error_shape, decode_png, wait_for

from serve_app.app import build_app
from serve_app.testing.tiny_model import save_tiny_model

APP = "families"
# Catalogue name -> family (and tiny_model kind) of the other families served beside FLUX.1-dev.
OTHER_FAMILIES = {
    "tiny-sdxl": "sdxl",
    "tiny-schnell": "flux-schnell",
    "tiny-sd35": "sd3",
    "tiny-klein": "flux2-klein",
}
# The UNet families stay in the default class with tiny-sd (aws.yaml's SDXL-Turbo runs there, on
# g5 nodes); the transformer families run in FLUX.1-dev's l40s class.
DEFAULT_CLASS_FAMILIES = {"sdxl"}
L40S_MODELS = 1 + sum(family not in DEFAULT_CLASS_FAMILIES for family in OTHER_FAMILIES.values())
DEFAULT_MODELS = 1 + sum(family in DEFAULT_CLASS_FAMILIES for family in OTHER_FAMILIES.values())

APP_ID = "app-families"
STEPS = 2
PROMPT = "a lighthouse at dusk"


def deployment_of(family: str) -> str:
    """The model deployment a family's entry runs on here: DiffusionModel serves the default class."""
    return "DiffusionModel" if family in DEFAULT_CLASS_FAMILIES else "DiffusionModel-l40s"


@pytest.fixture(scope="module")
def base(
    serve_url: str,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeDiscord,
    signer: DiscordSigner,
) -> str:
    folder = tmp_path_factory.mktemp("family-models")
    for kind in ("flux", "flux-lora", "safety-checker", "preview-vae", *OTHER_FAMILIES.values()):
        save_tiny_model(folder / kind, kind)
    args = {
        "models": [
            {"name": "tiny-sd", "model": str(tiny_model_dir), "default": True},
            {
                "name": "tiny-flux",
                "model": str(folder / "flux"),
                "family": "flux-dev",
                # Its own GPU class, as aws.yaml puts FLUX on L40S nodes: a deployment of its own
                # (DiffusionModel-l40s) beside the default class's, so every test here goes through
                # the per-class routing.
                "gpu_class": "l40s",
                "default_size": "64x64",
                "default_steps": STEPS,
                "preview_vae": str(folder / "preview-vae"),
                "loras": [{"name": "flux-ink", "source": str(folder / "flux-lora"), "weight": 1.0}],
            },
            # The other families, each through every interface (test below).
            *(
                {
                    "name": name,
                    "model": str(folder / family),
                    "family": family,
                    **({} if family in DEFAULT_CLASS_FAMILIES else {"gpu_class": "l40s"}),
                    "default_size": "64x64",
                    "default_steps": STEPS,
                }
                for name, family in OTHER_FAMILIES.items()
            ),
        ],
        # Every model of each class held at once (one limit for every class's replicas): no reload
        # between this module's tests.
        "max_models_per_replica": max(L40S_MODELS, DEFAULT_MODELS),
        "safety_checker_model": str(folder / "safety-checker"),
        "default_size": "64x64",
        "default_steps": STEPS,
        "max_size": 256,
        "data_dir": str(tmp_path_factory.mktemp("families-store")),
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.1},
        "discord_public_key": signer.public_key_hex,
        "discord_application_id": APP_ID,
        "discord_api_base_url": fake.url,
        "discord_progress_interval_s": 0.3,
    }
    serve.run(build_app(args), name=APP, route_prefix="/")
    return serve_url


def generate(base: str, **body: object) -> httpx.Response:
    request = {"prompt": PROMPT, "seed": 3, "size": "64x64", "steps": STEPS, "model": "tiny-flux", **body}
    return httpx.post(f"{base}/v1/images/generations", json=request, timeout=300)


def image_of(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))


def test_models_advertise_what_each_family_can_do(base: str) -> None:
    models = {m["id"]: m for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]}
    flux, sd = models["tiny-flux"], models["tiny-sd"]
    assert flux["family"] == "flux-dev"
    assert flux["defaults"]["scheduler"] == "flow_euler"
    assert flux["capabilities"]["schedulers"] == ["flow_euler"]
    assert flux["capabilities"]["negative_prompt"] == "true_cfg"
    assert flux["capabilities"]["guidance"] == "distilled"
    assert flux["capabilities"]["standalone_safety_checker"] is True
    assert [lora["name"] for lora in flux["loras"]] == ["flux-ink"]  # never the SD LoRAs
    assert "ddim" in sd["capabilities"]["schedulers"] and sd["capabilities"]["negative_prompt"] == "cfg"


def test_each_gpu_class_is_its_own_deployment_and_renders_only_its_models(base: str) -> None:
    """The FLUX entry's class runs in DiffusionModel-l40s, the SD model in DiffusionModel: each
    deployment's batch log holds only its own class's renders (issue 24 item 8)."""
    deployments = serve.status().applications[APP].deployments
    assert {"DiffusionModel", "DiffusionModel-l40s", "Ingress"} <= set(deployments)
    models = {m["id"]: m for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]}
    assert models["tiny-flux"]["capabilities"]["gpu_class"] == "l40s"
    default_class = models["tiny-sd"]["capabilities"]["gpu_class"]
    assert default_class != "l40s"
    sd_handle = serve.get_deployment_handle("DiffusionModel", app_name=APP)
    flux_handle = serve.get_deployment_handle("DiffusionModel-l40s", app_name=APP)

    def models_run(handle: object, since: int) -> set[str]:
        batches = handle.batch_log.remote().result()[since:]  # type: ignore[attr-defined]
        return {name for batch in batches for group in batch["models"] for name in group}

    sd_before = len(sd_handle.batch_log.remote().result())
    flux_before = len(flux_handle.batch_log.remote().result())
    image_of(generate(base, seed=41))
    image_of(generate(base, model="tiny-sd", seed=41))
    assert models_run(flux_handle, flux_before) == {"tiny-flux"}
    assert models_run(sd_handle, sd_before) == {"tiny-sd"}


def test_openai_renders_flux_with_true_cfg_and_a_lora_and_refuses_what_it_cannot_take(base: str) -> None:
    plain = image_of(generate(base))
    assert plain.shape == (64, 64, 3)
    assert np.array_equal(plain, image_of(generate(base)))  # seeded: the same picture again
    # A negative prompt moves the picture only through true CFG's second pass.
    negative = image_of(generate(base, negative_prompt="fog", true_cfg_scale=2.0))
    assert np.abs(negative - plain).max() > 0
    lora = image_of(generate(base, loras=[{"name": "flux-ink", "weight": 1.0}]))
    assert np.abs(lora - plain).max() > 0
    refused = {
        "negative_prompt": generate(base, negative_prompt="fog"),  # no true_cfg_scale
        "scheduler": generate(base, scheduler="ddim"),  # an SD sampler
        "true_cfg_scale": generate(base, model="tiny-sd", true_cfg_scale=2.0),
        "loras[0].name": generate(base, loras=[{"name": "nope"}]),
    }
    for field, response in refused.items():
        assert response.status_code == 400, (field, response.text)
        assert_error_shape(response.json(), field)
    # The replica says what it ran: the transformer denoiser, bf16 only on CUDA, the preview decoder.
    replica = {m["id"]: m for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]}["tiny-flux"][
        "replica"
    ]
    assert replica["recipes"]["denoiser"] == "transformer"
    assert replica["family"] == "flux-dev" and replica["previews"]["decoder"]


def test_a1111_maps_euler_to_flow_euler_and_refuses_sd_samplers_for_flux(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler", steps=STEPS)
    result = api.txt2img(
        prompt=PROMPT, seed=3, width=64, height=64, override_settings={"sd_model_checkpoint": "tiny-flux"}
    )
    assert result.image.size == (64, 64)
    assert "Model: tiny-flux" in result.info["infotexts"][0]
    response = httpx.post(
        f"{base}/sdapi/v1/txt2img",
        json={
            "prompt": PROMPT,
            "width": 64,
            "height": 64,
            "steps": STEPS,
            "sampler_name": "DPM++ 2M",
            "override_settings": {"sd_model_checkpoint": "tiny-flux"},
        },
        timeout=120,
    )
    assert response.status_code == 400
    assert_error_shape(response.json(), "sampler_name")
    assert "Euler" in response.json()["error"]["message"]


def test_predictions_render_flux(base: str) -> None:
    created = httpx.post(
        f"{base}/v1/predictions",
        json={"input": {"prompt": PROMPT, "model": "tiny-flux", "seed": 1}},
        timeout=30,
    )
    assert created.status_code == 201, created.text

    def finished() -> dict | None:
        body = httpx.get(f"{base}/v1/predictions/{created.json()['id']}", timeout=30).json()
        return body if body["status"] in ("succeeded", "failed", "canceled") else None

    done = wait_for(finished, 240, "the FLUX prediction")
    assert done["status"] == "succeeded", done
    assert done["model"] == "tiny-flux" and len(done["output"]) == 1


def test_discord_imagine_renders_with_flux(base: str, fake: FakeDiscord, signer: DiscordSigner) -> None:
    interaction = imagine_interaction(APP_ID, PROMPT, model="tiny-flux", steps=STEPS, seed=5)
    answer = post_interaction(base, signer, interaction)
    assert answer.status_code == 200 and answer.json()["type"] == 5
    token = interaction["token"]
    deadline = time.monotonic() + 240

    def delivered() -> bool:
        return any(token in c.path and c.files for c in fake.calls_to(token))

    wait_for(delivered, max(1.0, deadline - time.monotonic()), "the FLUX image on Discord")
    final = [c for c in fake.calls_to(token) if c.files][-1]
    fields = {f["name"]: f["value"] for f in final.json["embeds"][0]["fields"]}
    assert fields.get("Model") == "tiny-flux"


@pytest.mark.parametrize("model", sorted(OTHER_FAMILIES))
def test_every_family_renders_through_every_interface(
    base: str, fake: FakeDiscord, signer: DiscordSigner, model: str
) -> None:
    """SDXL, FLUX.1-schnell, SD 3.5 and FLUX.2-klein through OpenAI, A1111 (with the empty
    negative prompt its clients always send), predictions and Discord, each batched on its own
    class's deployment (issue 24: every interface renders with each family)."""
    family = OTHER_FAMILIES[model]
    listed = {m["id"]: m for m in httpx.get(f"{base}/v1/models", timeout=30).json()["data"]}[model]
    assert listed["family"] == family
    default_class = family in DEFAULT_CLASS_FAMILIES
    assert (listed["capabilities"]["gpu_class"] == "l40s") is not default_class
    handle = serve.get_deployment_handle(deployment_of(family), app_name=APP)
    before = len(handle.batch_log.remote().result())

    openai_image = image_of(generate(base, model=model))
    assert openai_image.shape == (64, 64, 3)

    host, port = base.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler", steps=STEPS)
    result = api.txt2img(
        prompt=PROMPT, seed=3, width=64, height=64, override_settings={"sd_model_checkpoint": model}
    )
    assert result.image.size == (64, 64)
    assert f"Model: {model}" in result.info["infotexts"][0]

    created = httpx.post(
        f"{base}/v1/predictions", json={"input": {"prompt": PROMPT, "model": model, "seed": 1}}, timeout=30
    )
    assert created.status_code == 201, created.text
    done = wait_for(
        lambda: (
            (body := httpx.get(f"{base}/v1/predictions/{created.json()['id']}", timeout=30).json())["status"]
            in ("succeeded", "failed", "canceled")
            and body
        ),
        240,
        f"the {model} prediction",
    )
    assert done["status"] == "succeeded", done

    interaction = imagine_interaction(APP_ID, PROMPT, model=model, steps=STEPS, seed=5, count=1)
    answer = post_interaction(base, signer, interaction)
    assert answer.status_code == 200 and answer.json()["type"] == 5
    token = interaction["token"]
    wait_for(lambda: any(c.files for c in fake.calls_to(token)), 240, f"the {model} image on Discord")
    final = [c for c in fake.calls_to(token) if c.files][-1]
    fields = {f["name"]: f["value"] for f in final.json["embeds"][0]["fields"]}
    assert fields.get("Model") == model

    # Every one of those renders ran on its class's deployment, as a batch of this model alone.
    batches = handle.batch_log.remote().result()[before:]
    assert {name for batch in batches for group in batch["models"] for name in group} == {model}
    assert sum(batch["size"] for batch in batches) >= 4


def _discord(base: str, signer: DiscordSigner, body: dict) -> dict:
    answer = post_interaction(base, signer, body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _settings(base: str, signer: DiscordSigner, user: str, **options: object) -> dict:
    body = imagine_interaction(APP_ID, user=user)
    types = {"reset": 5}
    body["data"].update(
        id="cmd-settings",
        name="settings",
        options=[{"name": k, "type": types.get(k, 3), "value": v} for k, v in options.items()],
    )
    return _discord(base, signer, body)


def test_a_saved_negative_prompt_applies_only_to_models_that_take_one(
    base: str, fake: FakeDiscord, signer: DiscordSigner
) -> None:
    """A /settings negative prompt made for SD must not refuse every FLUX command: FLUX.2 takes
    none, FLUX.1 only with true CFG (which Discord does not set). SD still gets it."""
    user = "424242424242"
    saved = _settings(base, signer, user, negative_prompt="blurry")
    assert saved["type"] == 4, saved
    try:
        for model, expected in (("tiny-flux", None), ("tiny-klein", None), ("tiny-sd", "blurry")):
            command = imagine_interaction(
                APP_ID, PROMPT, user=user, model=model, steps=STEPS, seed=5, count=1
            )
            answer = _discord(base, signer, command)
            assert answer == {"type": 5}, (model, answer)  # deferred, not an ephemeral refusal
            token = command["token"]
            fake.wait_for(
                lambda calls, token=token: any(token in c.path and c.files for c in calls),
                240,
                f"{model}'s image",
            )
            final = [c for c in fake.calls_to(token) if c.files][-1]
            fields = {f["name"]: f["value"] for f in final.json["embeds"][0]["fields"]}
            assert fields.get("Model") == model
            assert fields.get("Negative prompt") == expected, (model, fields)
        # Named in the command, it is still the user's request, and refused as typed.
        command = imagine_interaction(APP_ID, PROMPT, user=user, model="tiny-klein", negative_prompt="fog")
        refused = _discord(base, signer, command)
        assert refused["type"] == 4 and "negative prompt" in refused["data"]["content"], refused
    finally:
        _settings(base, signer, user, reset=True)
