"""Choosing a model and LoRAs from every interface: AUTOMATIC1111, predictions, Discord (/settings).

One real local Serve app serves a catalogue of two tiny checkpoints (different random weights) and
a tiny LoRA, all built offline. Each interface's render is compared with the same request sent
through the OpenAI-style API with ``model`` / ``loras``: equal pictures mean the interface really
picked that model and LoRA (another model or an active LoRA moves pixels by tens of levels).
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import ray
import webuiapi
from fake_discord import DiscordSigner, FakeDiscord, RecordedCall, post_interaction, snowflake
from ray import serve
from support import (
    ROOT,
    assert_error_shape,
    decode_png,
    kill_serve_replica,
    max_pixel_difference,
    serve_replicas,
    wait_for,
)

from bot_gateway.model_choices import MAX_CHOICES, autocomplete_choices
from bot_gateway.protocol import CommandOption
from bot_gateway.register import app_settings, command_definitions
from bot_gateway.user_settings import UnknownUserError, settings_key
from serve_app.app import build_app
from serve_app.config.catalogue import ModelCatalogue, ModelEntry
from serve_app.testing.tiny_model import save_tiny_model

APP = "choices"
APP_ID = "app-choices"
STEPS = 4
SAME = 2  # batched vs alone on CPU float32 (REFERENCE.md)
DIFFERENT = 20
PROMPT = "a lighthouse at dusk"
USER_A = "111111111111111111"  # Discord user ids are snowflakes
USER_B = "222222222222222222"
REPO = ROOT


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("choices-store")


@pytest.fixture(scope="module")
def base(
    serve_url: str,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    data_dir: Path,
    fake: FakeDiscord,
    signer: DiscordSigner,
) -> str:
    folder = tmp_path_factory.mktemp("choices-models")
    save_tiny_model(folder / "b", seed=7)
    save_tiny_model(folder / "lora", "lora")
    args = {
        "models": [
            {
                "name": "tiny-a",
                "model": str(tiny_model_dir),
                "default": True,
                "loras": [{"name": "tiny-ink", "source": str(folder / "lora"), "weight": 1.0}],
            },
            {"name": "tiny-b", "model": str(folder / "b")},
        ],
        "default_size": "64x64",
        "default_steps": STEPS,
        "max_steps": 100,
        "max_size": 256,
        "max_images": 4,
        "data_dir": str(data_dir),
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.1},
        "discord_public_key": signer.public_key_hex,
        "discord_application_id": APP_ID,
        "discord_api_base_url": fake.url,
        "discord_progress_interval_s": 0.3,
        "discord_retry_initial_s": 0.05,
    }
    serve.run(build_app(args), name=APP, route_prefix="/")
    return serve_url


@pytest.fixture(autouse=True)
def clean_fake(fake: FakeDiscord) -> None:
    fake.reset()


def render(base: str, seed: int, model: str, loras: list[str] | None = None, **extra: Any) -> np.ndarray:
    """The reference: the same picture through the OpenAI-style API, naming model and LoRAs."""
    body = {"prompt": PROMPT, "seed": seed, "size": "64x64", "steps": STEPS, "model": model, **extra}
    if loras:
        body["loras"] = loras
    response = httpx.post(f"{base}/v1/images/generations", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))


def a1111(base: str) -> webuiapi.WebUIApi:
    host, port = base.removeprefix("http://").split(":")
    return webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=STEPS)


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


# --- AUTOMATIC1111 -----------------------------------------------------------------------------


def test_a1111_lists_the_catalogue_and_picks_checkpoint_and_lora_per_request(base: str) -> None:
    api = a1111(base)
    assert api.util_get_model_names() == ["tiny-a", "tiny-b"]
    models = {m["title"]: m for m in api.get_sd_models()}
    assert set(models["tiny-b"]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert models["tiny-b"]["filename"].endswith("/b")
    (lora,) = api.get_loras()
    assert lora["name"] == "tiny-ink" and lora["alias"] == "tiny-ink" and lora["metadata"] == {}
    assert lora["path"].endswith("/lora")

    result = api.txt2img(
        prompt=f"{PROMPT} <lora:tiny-ink:1>",
        seed=11,
        width=64,
        height=64,
        cfg_scale=7,
        override_settings={"sd_model_checkpoint": "tiny-b"},
    )
    extra = {"scheduler": "euler_a", "guidance_scale": 7}
    with_lora = render(base, 11, "tiny-b", ["tiny-ink:1"], **extra)
    assert max_pixel_difference(pixels(result.image), with_lora) <= SAME
    assert max_pixel_difference(with_lora, render(base, 11, "tiny-b", **extra)) >= DIFFERENT
    assert max_pixel_difference(with_lora, render(base, 11, "tiny-a", ["tiny-ink:1"], **extra)) >= DIFFERENT
    # As A1111 reports it: the prompt with its tag (so PNG Info renders it again), the model used.
    assert result.info["sd_model_name"] == "tiny-b"
    assert result.info["infotexts"][0].startswith(f"{PROMPT} <lora:tiny-ink:1>")
    assert "Model: tiny-b" in result.info["infotexts"][0]


def test_a1111_options_switch_the_checkpoint_of_a1111_requests_only(base: str, data_dir: Path) -> None:
    api = a1111(base)
    assert api.util_get_current_model() == "tiny-a"
    try:
        api.util_set_model("tiny-b")  # POST /sdapi/v1/options {"sd_model_checkpoint": "tiny-b"}
        assert api.util_get_current_model() == "tiny-b"
        # Stored, so every ingress replica and a restarted one use it (see the restart test).
        assert json.loads((data_dir / "a1111" / "options.json").read_text()) == {
            "sd_model_checkpoint": "tiny-b"
        }
        result = api.txt2img(prompt=PROMPT, seed=5, width=64, height=64, cfg_scale=7)
        extra = {"scheduler": "euler_a", "guidance_scale": 7}
        assert max_pixel_difference(pixels(result.image), render(base, 5, "tiny-b", **extra)) <= SAME
        assert result.info["sd_model_name"] == "tiny-b"
        # Other APIs keep the catalogue's default.
        response = httpx.post(
            f"{base}/v1/images/generations",
            json={"prompt": PROMPT, "seed": 5, "size": "64x64", "steps": STEPS, **extra},
            timeout=300,
        )
        default = decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))
        assert max_pixel_difference(default, render(base, 5, "tiny-a", **extra)) <= SAME
    finally:
        api.set_options({"sd_model_checkpoint": "tiny-a"})
    assert api.util_get_current_model() == "tiny-a"


@pytest.mark.parametrize(
    ("path", "body", "param", "mentions"),
    [
        ("txt2img", {"prompt": "x <lora:nope:1>"}, "prompt", ["nope", "tiny-ink"]),
        ("txt2img", {"prompt": "x <lora:tiny-ink:9>"}, "prompt", ["between -2 and 2"]),
        (
            "txt2img",
            {"prompt": "x", "override_settings": {"sd_model_checkpoint": "sdxl.safetensors [abc]"}},
            "override_settings.sd_model_checkpoint",
            ["tiny-a", "tiny-b"],
        ),
        ("options", {"sd_model_checkpoint": "another-model"}, "sd_model_checkpoint", ["tiny-a, tiny-b"]),
    ],
)
def test_a1111_bad_checkpoint_or_lora_is_a_400_naming_the_field(
    base: str, path: str, body: dict[str, Any], param: str, mentions: list[str]
) -> None:
    payload = body if path == "options" else {"width": 64, "height": 64, "steps": STEPS, **body}
    response = httpx.post(f"{base}/sdapi/v1/{path}", json=payload, timeout=60)
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), param=param)
    for text in mentions:
        assert text in response.json()["error"]["message"]


# --- predictions -------------------------------------------------------------------------------


def job_log_entries(prediction_id: str) -> list[dict[str, Any]]:
    """``job_finished`` lines about ``prediction_id`` in this session's Serve replica logs."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    return [
        json.loads(line[line.index('{"') :])
        for path in logs.glob("*.log")
        for line in path.read_text(errors="replace").splitlines()
        if '"event":"job_finished"' in line and prediction_id in line
    ]


def test_prediction_input_model_and_loras_render_with_them_and_are_recorded(base: str) -> None:
    with httpx.Client(base_url=base, timeout=60) as http:
        created = http.post(
            "/v1/predictions",
            json={
                "input": {
                    "prompt": PROMPT,
                    "seed": 13,
                    "steps": STEPS,
                    "size": "64x64",
                    "model": "tiny-b",
                    "loras": [{"name": "tiny-ink", "weight": 1}],
                }
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["model"] == "tiny-b"
        prediction_id = created.json()["id"]
        done = wait_for(
            lambda: (
                (body := http.get(f"/v1/predictions/{prediction_id}").json())["status"]
                in {"succeeded", "failed", "canceled"}
                and body
            ),
            120,
            "the prediction to finish",
        )
        assert done["status"] == "succeeded", done
        assert done["model"] == "tiny-b" and done["input"]["model"] == "tiny-b"
        image = decode_png(http.get(done["output"][0]).content)
    assert max_pixel_difference(image, render(base, 13, "tiny-b", ["tiny-ink:1"])) <= SAME
    (entry,) = wait_for(lambda: job_log_entries(prediction_id), 30, "the job's log line")
    assert entry["model"] == "tiny-b" and entry["loras"] == ["tiny-ink:1"], entry


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"model": "tiny-c"}, "input.model"),
        ({"loras": [{"name": "nope"}]}, "input.loras[0].name"),
        ({"loras": [{"name": "tiny-ink", "weight": 7}]}, "input.loras[0].weight"),
    ],
)
def test_prediction_bad_model_or_lora_is_a_400_naming_the_input_field(
    base: str, extra: dict[str, Any], param: str
) -> None:
    response = httpx.post(f"{base}/v1/predictions", json={"input": {"prompt": "x", **extra}}, timeout=60)
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), param=param)
    if param == "input.model":
        assert "tiny-a, tiny-b" in response.json()["error"]["message"]


# --- Discord: /imagine model:, /settings ---------------------------------------------------------

OPTION_TYPES = {
    "model": 3, "size": 3, "steps": 4, "negative_prompt": 3, "reset": 5, "seed": 4, "lora": 3, "count": 4
}


def interaction(command: str, user: str, **options: object) -> dict[str, Any]:
    return {
        "id": snowflake(),
        "application_id": APP_ID,
        "type": 2,
        "token": f"tok-{uuid.uuid4().hex}",
        "guild_id": "g1",
        "member": {"user": {"id": user, "username": user}},
        "data": {
            "id": f"cmd-{command}",
            "name": command,
            "type": 1,
            "options": [{"name": k, "type": OPTION_TYPES.get(k, 3), "value": v} for k, v in options.items()],
        },
        "attachment_size_limit": 10 * 1024 * 1024,
    }


def post(base: str, signer: DiscordSigner, body: dict[str, Any]) -> dict[str, Any]:
    response = post_interaction(base, signer, body)
    assert response.status_code == 200, response.text
    return response.json()


def settings(base: str, signer: DiscordSigner, user: str, **options: object) -> str:
    """/settings: always answered at once, ephemeral (flag 64); returns the text."""
    answer = post(base, signer, interaction("settings", user, **options))
    assert answer["type"] == 4 and answer["data"]["flags"] == 64, answer
    return str(answer["data"]["content"])


def imagine(
    base: str, signer: DiscordSigner, fake: FakeDiscord, user: str, **options: object
) -> RecordedCall:
    """/imagine, then the edit that delivered its image."""
    command = interaction("imagine", user, prompt=PROMPT, count=1, **options)
    assert post(base, signer, command) == {"type": 5}
    fake.wait_for(
        lambda calls: any(command["token"] in c.path and c.files for c in calls), 120, "the image edit"
    )
    return next(c for c in fake.calls_to(command["token"]) if c.files)


def shown(edit: RecordedCall) -> tuple[dict[str, str], np.ndarray]:
    fields = {f["name"]: f["value"] for f in edit.json["embeds"][0]["fields"]}
    return fields, decode_png(edit.files["files[0]"][2])


def test_settings_defaults_apply_to_that_users_next_imagine_only(
    base: str, signer: DiscordSigner, fake: FakeDiscord, data_dir: Path
) -> None:
    settings(base, signer, USER_A, reset=True)
    text = settings(base, signer, USER_A, model="tiny-b", steps=3, negative_prompt="blurry")
    assert "Saved" in text and "tiny-b" in text and "blurry" in text, text
    shown_now = settings(base, signer, USER_A)  # no options: show them
    assert "tiny-b" in shown_now and "**3**" in shown_now and "Saved" not in shown_now
    assert (data_dir / "discord-users" / USER_A / "settings.json").is_file()

    fields, image = shown(imagine(base, signer, fake, USER_A, seed=21))
    assert (fields["Model"], fields["Steps"], fields["Negative prompt"]) == ("tiny-b", "3", "blurry")
    expected = render(base, 21, "tiny-b", steps=3, negative_prompt="blurry")
    assert max_pixel_difference(image, expected) <= SAME

    # Another user: the service's defaults.
    fields, image = shown(imagine(base, signer, fake, USER_B, seed=21))
    assert (fields["Model"], fields["Steps"]) == ("tiny-a", str(STEPS)) and "Negative prompt" not in fields
    assert max_pixel_difference(image, render(base, 21, "tiny-a")) <= SAME

    # Options given to /imagine win over the user's defaults.
    fields, _ = shown(imagine(base, signer, fake, USER_A, seed=22, model="tiny-a", steps=2))
    assert (fields["Model"], fields["Steps"], fields["Negative prompt"]) == ("tiny-a", "2", "blurry")


def test_imagine_model_and_lora_options_and_reroll_keeps_them(
    base: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    edit = imagine(base, signer, fake, USER_B, seed=23, model="tiny-b", lora="tiny-ink")
    fields, image = shown(edit)
    assert (fields["Model"], fields["LoRAs"]) == ("tiny-b", "tiny-ink:1")
    assert max_pixel_difference(image, render(base, 23, "tiny-b", ["tiny-ink:1"])) <= SAME
    bad = post(base, signer, interaction("imagine", USER_B, prompt="x", model="tiny-c"))
    assert bad["data"]["flags"] == 64 and "tiny-a, tiny-b" in bad["data"]["content"], bad
    # Re-roll reads model and LoRA back from the message.
    reroll = {
        "id": snowflake(),
        "application_id": APP_ID,
        "type": 3,
        "token": f"tok-{uuid.uuid4().hex}",
        "guild_id": "g1",
        "member": {"user": {"id": USER_B}},
        "data": {"custom_id": "imagine:reroll", "component_type": 2},
        "message": {"id": "m1", "embeds": edit.json["embeds"], "attachments": []},
    }
    assert post(base, signer, reroll) == {"type": 5}
    fake.wait_for(lambda calls: any(reroll["token"] in c.path and c.files for c in calls), 120, "re-roll")
    rerolled = next(c for c in fake.calls_to(reroll["token"]) if c.files)
    assert (shown(rerolled)[0]["Model"], shown(rerolled)[0]["LoRAs"]) == ("tiny-b", "tiny-ink:1")


def test_bad_settings_are_an_ephemeral_error_listing_the_models(base: str, signer: DiscordSigner) -> None:
    settings(base, signer, USER_B, reset=True)
    text = settings(base, signer, USER_B, model="tiny-c")
    assert text.startswith("Not saved") and "tiny-a, tiny-b" in text, text
    assert "Not saved" in settings(base, signer, USER_B, steps=101)
    assert "Not saved" in settings(base, signer, USER_B, size="63x64")
    assert "(service default)" in settings(base, signer, USER_B).split("model:")[1].split("\n")[0]
    # Not a Discord user id: nothing read or stored under a name it chose.
    assert "only be kept for Discord users" in settings(base, signer, "../../a1111")


def test_settings_and_the_a1111_checkpoint_survive_an_ingress_restart(
    base: str, signer: DiscordSigner, fake: FakeDiscord
) -> None:
    settings(base, signer, USER_A, reset=True)
    settings(base, signer, USER_A, model="tiny-b", size="64x64")
    api = a1111(base)
    api.util_set_model("tiny-b")
    try:
        (ingress,) = serve_replicas(APP, "Ingress")
        kill_serve_replica(ingress)
        # Serve starts a new ingress replica; it knows nothing but what the store holds.
        wait_for(
            lambda: _answers(f"{base}/healthz") and _new_ingress(ingress["name"]),
            120,
            "a new ingress replica",
        )
        fields, _ = shown(imagine(base, signer, fake, USER_A, seed=24))
        assert fields["Model"] == "tiny-b"
        assert api.util_get_current_model() == "tiny-b"
    finally:
        api.set_options({"sd_model_checkpoint": "tiny-a"})
        settings(base, signer, USER_A, reset=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _new_ingress(old_name: str) -> bool:
    names = [actor["name"] for actor in serve_replicas(APP, "Ingress")]
    return bool(names) and old_name not in names


# --- registration and autocomplete (pure) -------------------------------------------------------


def test_registration_reads_the_catalogue_from_the_config_file() -> None:
    catalogue = app_settings(REPO / "deployments" / "local.yaml").catalogue
    imagine_definition, settings_definition = command_definitions(catalogue, ("64x64",), 50)
    options = {option["name"]: option for option in imagine_definition["options"]}
    assert [c["value"] for c in options["model"]["choices"]] == ["tiny-sd", "tiny-sd-b", "tiny-flux"]
    assert [c["value"] for c in options["lora"]["choices"]] == ["tiny-ink", "tiny-flux-ink"]
    assert options["lora_weight"]["max_value"] == catalogue.max_lora_weight
    assert settings_definition["name"] == "settings"
    assert {o["name"] for o in settings_definition["options"]} == {
        "model",
        "size",
        "steps",
        "negative_prompt",
        "reset",
    }
    # Discord's limits: descriptions of at most 100 characters.
    for definition in (imagine_definition, settings_definition):
        assert len(definition["description"]) <= 100
        assert all(len(option["description"]) <= 100 for option in definition["options"])


def test_past_25_models_the_option_autocompletes() -> None:
    catalogue = ModelCatalogue(
        [ModelEntry(name=f"model-{i:02d}", model=f"/m/{i}", default=i == 0) for i in range(30)], 4, 2.0
    )
    imagine_definition, _ = command_definitions(catalogue)
    model = next(o for o in imagine_definition["options"] if o["name"] == "model")
    assert model.get("autocomplete") is True and "choices" not in model
    typed = [
        CommandOption(name="prompt", type=3, value="x"),
        CommandOption(name="model", type=3, value="2", focused=True),
    ]
    names = [c["value"] for c in autocomplete_choices(typed, catalogue)]
    assert names[0] == "model-02" and all("2" in name for name in names) and len(names) == 12
    everything = [CommandOption(name="model", type=3, value="", focused=True)]
    assert len(autocomplete_choices(everything, catalogue)) == MAX_CHOICES


def test_user_settings_keys_are_only_numeric_user_ids() -> None:
    assert settings_key(USER_A) == f"discord-users/{USER_A}/settings.json"
    for hostile in ("../x", "1/../../a", "", "12a", "1" * 21):
        with pytest.raises(UnknownUserError):
            settings_key(hostile)
