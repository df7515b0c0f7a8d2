"""AUTOMATIC1111's API under /sdapi/v1: what A1111 clients send works, and answers as A1111 answers.

Real Ray Serve, real HTTP over loopback, the tiny offline model (see tests/serve/test_image_inputs.py for
why img2img is measured as how much outputs *follow* the input rather than a distance to it).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray
import webuiapi
from fake_discord import FakeDiscord
from PIL import Image
from ray import serve
from support import assert_error_shape, decode_png, max_pixel_difference, wait_for

from serve_app.api.a1111.samplers import SAMPLERS, SCHEDULE_TYPES, resolve_sampler
from serve_app.app import build_app
from serve_app.config.schedulers import SCHEDULERS

APP = "a1111"
LONG_STEPS = 250

# A1111's whole txt2img API model (modules/api/models.py over StableDiffusionProcessingTxt2Img,
# v1.10), every field at A1111's default, as clients such as webuiapi send it. Only the size and
# step count differ from A1111's defaults (512x512, 50 steps): the tiny model renders on 2 CPU cores.
A1111_DEFAULT_TXT2IMG = {
    "prompt": "",
    "negative_prompt": "",
    "styles": None,
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0,
    "seed_resize_from_h": -1,
    "seed_resize_from_w": -1,
    "sampler_name": None,
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 4,
    "cfg_scale": 7.0,
    "width": 64,
    "height": 64,
    "restore_faces": None,
    "tiling": None,
    "do_not_save_samples": False,
    "do_not_save_grid": False,
    "eta": None,
    "denoising_strength": 0.75,
    "s_min_uncond": None,
    "s_churn": None,
    "s_tmax": None,
    "s_tmin": None,
    "s_noise": None,
    "override_settings": None,
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "disable_extra_networks": False,
    "firstpass_image": None,
    "comments": None,
    "enable_hr": False,
    "firstphase_width": 0,
    "firstphase_height": 0,
    "hr_scale": 2.0,
    "hr_upscaler": None,
    "hr_second_pass_steps": 0,
    "hr_resize_x": 0,
    "hr_resize_y": 0,
    "hr_checkpoint_name": None,
    "hr_sampler_name": None,
    "hr_scheduler": None,
    "hr_prompt": "",
    "hr_negative_prompt": "",
    "force_task_id": None,
    "sampler_index": "Euler",
    "script_name": None,
    "script_args": [],
    "send_images": True,
    "save_images": False,
    "alwayson_scripts": {},
    "infotext": None,
}


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path) -> str:
    args = {
        "model": str(tiny_model_dir),
        "default_size": "64x64",
        "default_steps": 10,
        "max_steps": 300,
        "max_size": 256,
        "max_images": 4,
        "max_input_bytes": 200_000,
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2},
    }
    serve.run(build_app(args), name=APP, route_prefix="/")
    return serve_url


@pytest.fixture
def client(base: str) -> httpx.Client:
    with httpx.Client(base_url=base, timeout=300) as http:
        yield http


def noise(seed: int, size: int = 64) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8"))


def b64(image: Image.Image, data_url: bool = False) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"data:image/png;base64,{encoded}" if data_url else encoded


def half_mask(size: int = 64) -> Image.Image:
    """White (repaint) on the left half, black (keep) on the right."""
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size // 2, size))
    return mask


def images_of(response: httpx.Response) -> list[np.ndarray]:
    assert response.status_code == 200, response.text
    return [decode_png(base64.b64decode(image)) for image in response.json()["images"]]


def txt2img(client: httpx.Client, **fields: object) -> httpx.Response:
    return client.post(
        "/sdapi/v1/txt2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 4, **fields}
    )


def img2img(client: httpx.Client, **fields: object) -> httpx.Response:
    body = {"prompt": "a cat", "width": 64, "height": 64, "steps": 10, **fields}
    return client.post("/sdapi/v1/img2img", json=body)


# --- txt2img ----------------------------------------------------------------------------------------


def test_batch_size_times_n_iter_images_with_consecutive_seeds_and_a1111_info(client: httpx.Client) -> None:
    response = txt2img(client, seed=100, batch_size=2, n_iter=2, width=128, sampler_name="Euler a")
    images = images_of(response)
    assert [image.shape for image in images] == [(64, 128, 3)] * 4
    assert max_pixel_difference(images[0], images[1]) > 10  # different seeds, different images
    body = response.json()
    assert isinstance(body["info"], str)  # A1111's info is a JSON *string*
    info = json.loads(body["info"])
    assert info["seed"] == 100 and info["all_seeds"] == [100, 101, 102, 103]
    assert len(info["all_subseeds"]) == 4 and info["all_prompts"] == ["a cat"] * 4
    assert (info["width"], info["height"], info["steps"], info["batch_size"]) == (128, 64, 4, 2)
    assert info["sampler_name"] == "Euler a"
    assert len(info["infotexts"]) == 4
    for seed, text in zip(info["all_seeds"], info["infotexts"], strict=True):
        assert text.startswith("a cat\n")
        assert f"Seed: {seed}," in text and "Sampler: Euler a" in text and "Size: 128x64" in text
    # parameters echo the request with A1111's defaults filled in.
    parameters = body["parameters"]
    assert parameters["batch_size"] == 2 and parameters["n_iter"] == 2 and parameters["seed"] == 100
    assert parameters["sampler_index"] == "Euler" and parameters["restore_faces"] is None
    # The same seed again gives the same first image.
    again = images_of(txt2img(client, seed=100, width=128, sampler_name="Euler a"))[0]
    assert max_pixel_difference(again, images[0]) <= 1


def test_a1111_default_payload_with_every_field_works_unchanged(client: httpx.Client) -> None:
    response = client.post("/sdapi/v1/txt2img", json=A1111_DEFAULT_TXT2IMG)
    images = images_of(response)
    assert [image.shape for image in images] == [(64, 64, 3)]
    info = json.loads(response.json()["info"])
    assert len(info["all_seeds"]) == 1 and 0 <= info["seed"] == info["all_seeds"][0]
    assert info["sampler_name"] == "Euler" and info["infotexts"][0].startswith("\nSteps: 4".strip())
    # Unknown fields (an extension's) are accepted too.
    assert txt2img(client, my_extension_field={"x": 1}).status_code == 200


def test_legacy_combined_sampler_names_equal_sampler_plus_schedule_type(client: httpx.Client) -> None:
    combined = images_of(txt2img(client, seed=5, sampler_name="DPM++ 2M Karras"))[0]
    split = images_of(txt2img(client, seed=5, sampler_name="DPM++ 2M", scheduler="karras"))[0]
    automatic = images_of(txt2img(client, seed=5, sampler_name="DPM++ 2M", scheduler="Automatic"))[0]
    uniform = images_of(txt2img(client, seed=5, sampler_name="DPM++ 2M", scheduler="Uniform"))[0]
    assert max_pixel_difference(combined, split) <= 1
    assert max_pixel_difference(combined, automatic) <= 1  # Karras is DPM++ 2M's automatic schedule
    assert max_pixel_difference(combined, uniform) > 10


def test_every_listed_sampler_and_schedule_type_resolves_to_a_scheduler_we_build(
    client: httpx.Client,
) -> None:
    listed = client.get("/sdapi/v1/samplers").json()
    assert [item["name"] for item in listed] == [s.name for s in SAMPLERS]
    assert {"Euler a", "DPM++ 2M", "DDIM", "UniPC"} <= {item["name"] for item in listed}
    assert all(set(item) == {"name", "aliases", "options"} for item in listed)
    for sampler in SAMPLERS:
        for label in sampler.schedules:
            assert resolve_sampler(sampler.name, None, label).scheduler in SCHEDULERS
        for alias in sampler.aliases:
            assert resolve_sampler(alias, None, None).sampler == sampler.name
    schedules = client.get("/sdapi/v1/schedulers").json()
    assert [item["label"] for item in schedules] == [s.label for s in SCHEDULE_TYPES]
    assert set(schedules[0]) == {"name", "label", "aliases", "default_rho", "need_inner_model"}


# --- img2img and inpainting -------------------------------------------------------------------------


def test_img2img_output_follows_the_init_image_at_low_denoising_strength(client: httpx.Client) -> None:
    def follows_input(strength: float) -> float:
        a = images_of(
            img2img(client, init_images=[b64(noise(1), data_url=True)], denoising_strength=strength, seed=7)
        )
        b = images_of(img2img(client, init_images=[b64(noise(2))], denoising_strength=strength, seed=7))
        assert a[0].shape == (64, 64, 3)
        return float(np.abs(a[0] - b[0]).mean())

    low, full = follows_input(0.1), follows_input(1.0)
    assert low > 10 * full, (low, full)


def test_img2img_answers_at_the_requested_size_with_denoising_strength_in_info(client: httpx.Client) -> None:
    # Sizes and info only: 4 steps (3 at strength 0.75) instead of the helper's 10.
    response = img2img(
        client, init_images=[b64(noise(3, size=96))], width=128, height=64, resize_mode=1, n_iter=2, steps=4
    )
    assert [image.shape for image in images_of(response)] == [(64, 128, 3)] * 2
    body = response.json()
    assert body["parameters"]["init_images"] is None  # include_init_images is false by default
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.75 and "Denoising strength: 0.75" in info["infotexts"][0]


def test_inpainting_repaints_the_mask_and_returns_the_rest_exactly(client: httpx.Client) -> None:
    image = noise(4)
    source = np.asarray(image, dtype=np.int16)
    mask = b64(half_mask())
    # At strength 1 the masked half is drawn from each seed's noise and the rest composited back:
    # 4 steps show both as well as the helper's 10.
    a = images_of(
        img2img(client, init_images=[b64(image)], mask=mask, denoising_strength=1.0, seed=1, steps=4)
    )[0]
    b = images_of(
        img2img(client, init_images=[b64(image)], mask=mask, denoising_strength=1.0, seed=2, steps=4)
    )[0]
    # Right of the feathered edge (mask_blur 4), A1111 composites the original back: exact pixels.
    assert max_pixel_difference(a[:, 48:], source[:, 48:]) == 0
    assert np.abs(a - b)[:, :16].mean() > 10  # the repainted half depends on the seed
    # inpainting_mask_invert: the other half is repainted.
    inverted = images_of(
        img2img(
            client,
            init_images=[b64(image)],
            mask=mask,
            inpainting_mask_invert=1,
            denoising_strength=1.0,
            seed=1,
            steps=4,
        )
    )[0]
    assert max_pixel_difference(inverted[:, :16], source[:, :16]) == 0
    assert np.abs(inverted - source)[:, 48:].mean() > 10


# --- extras (upscale) -------------------------------------------------------------------------------


def test_extra_single_image_doubles_the_size(client: httpx.Client) -> None:
    response = client.post(
        "/sdapi/v1/extra-single-image", json={"image": b64(noise(5)), "upscaler_1": "R-ESRGAN 4x+"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"html_info", "image"}
    assert decode_png(base64.b64decode(body["image"])).shape == (128, 128, 3)
    to_size = client.post(
        "/sdapi/v1/extra-single-image",
        json={"image": b64(noise(5)), "resize_mode": 1, "upscaling_resize_w": 96, "upscaling_resize_h": 128},
    )
    assert decode_png(base64.b64decode(to_size.json()["image"])).shape == (128, 96, 3)


# --- progress and interrupt -------------------------------------------------------------------------


def test_progress_shows_the_running_task_and_interrupt_stops_it_early(
    base: str, client: httpx.Client
) -> None:
    task_id = "task(test-progress)"
    answer: dict[str, httpx.Response] = {}

    def render() -> None:
        with httpx.Client(base_url=base, timeout=300) as http:
            answer["response"] = txt2img(http, steps=LONG_STEPS, seed=3, force_task_id=task_id)

    thread = threading.Thread(target=render)
    thread.start()
    try:

        def stepping() -> dict | None:
            body = client.get("/sdapi/v1/progress", params={"id_task": task_id}).json()
            return body if body["state"]["sampling_step"] >= 2 else None

        progress = wait_for(stepping, 120, "the task to report denoising steps")
        assert progress["current_task"] == task_id
        assert progress["state"]["sampling_steps"] == LONG_STEPS and progress["state"]["job_count"] == 1
        assert 0 < progress["progress"] < 1 and progress["eta_relative"] > 0
        # Without an id: the task running on this ingress.
        assert client.get("/sdapi/v1/progress").json()["current_task"] == task_id
        assert client.post("/sdapi/v1/interrupt").json() == {}
    finally:
        thread.join(300)
    response = answer["response"]
    assert response.status_code == 200, response.text
    assert response.json()["images"] == [] and json.loads(response.json()["info"])["all_seeds"] == []
    after = client.get("/sdapi/v1/progress", params={"id_task": task_id}).json()
    assert after["state"]["interrupted"] is True
    handle = serve.get_deployment_handle("DiffusionModel", app_name=APP)

    def stopped_render() -> dict | None:
        # The answer does not wait for the replica: its pipeline call ends at the next step.
        runs = [b for b in handle.batch_log.remote().result() if LONG_STEPS in b["steps"]]
        return runs[-1] if runs and runs[-1]["render_s"] is not None else None

    run = wait_for(stopped_render, 60, "the interrupted render to end on the replica")
    done = run["steps_done"][run["steps"].index(LONG_STEPS)]
    assert 2 <= done < LONG_STEPS, run
    entry = wait_for(lambda: request_log_entry(task_id), 30, "the interrupted request's log line")
    assert entry["outcome"] == "canceled" and entry["images"] == 1 and entry["batch_sizes"] == []


def request_log_entry(task_id: str) -> dict | None:
    """The ``request_finished`` JSON line an A1111 request wrote to the Serve replica logs."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    for path in logs.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"event":"request_finished"' in line and f'"id":"{task_id}"' in line:
                return json.loads(line[line.index('{"') :])
    return None


def test_every_a1111_request_writes_one_json_log_line(client: httpx.Client) -> None:
    task_id = "task(logged-request)"
    response = txt2img(client, seed=21, batch_size=2, force_task_id=task_id)
    assert response.status_code == 200, response.text
    entry = wait_for(lambda: request_log_entry(task_id), 30, "the A1111 request's log line")
    assert entry["source"] == "a1111" and entry["outcome"] == "succeeded"
    assert entry["images"] == 2 and entry["seeds"] == [21, 22] and entry["sizes"] == ["64x64"]
    assert entry["steps"] == 4 and len(entry["batch_sizes"]) == 2
    assert entry["queue_s"] >= 0 and entry["render_s"] > 0 and entry["model"]
    assert "a cat" not in json.dumps(entry)  # prompts are the users' words: never logged


def test_progress_when_idle_has_a1111_shape(client: httpx.Client) -> None:
    body = client.get(
        "/sdapi/v1/progress", params={"id_task": "task(unknown)", "skip_current_image": "true"}
    ).json()
    assert body["progress"] == 0 and body["state"]["job_count"] == 0 and body["current_image"] is None


# --- models and options -----------------------------------------------------------------------------


def test_models_options_and_upscalers(client: httpx.Client, tiny_model_dir: Path) -> None:
    (model,) = client.get("/sdapi/v1/sd-models").json()
    assert model["filename"] == str(tiny_model_dir) and model["title"]
    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == model["title"]
    # Selecting the served checkpoint and setting other keys works; GET shows the other keys.
    assert (
        client.post(
            "/sdapi/v1/options", json={"sd_model_checkpoint": model["title"], "jpeg_quality": 90}
        ).status_code
        == 200
    )
    assert client.get("/sdapi/v1/options").json()["jpeg_quality"] == 90
    assert txt2img(client, override_settings={"sd_model_checkpoint": model["title"]}).status_code == 200
    assert [u["name"] for u in client.get("/sdapi/v1/upscalers").json()] == ["None", "Lanczos"]


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("txt2img", {"sampler_name": "Nope"}, "sampler_name"),
        ("txt2img", {"sampler_index": "Nope"}, "sampler_index"),
        ("txt2img", {"scheduler": "Exponential"}, "scheduler"),
        ("txt2img", {"sampler_name": "Euler", "scheduler": "Karras"}, "scheduler"),
        ("txt2img", {"width": 512}, "width"),
        ("txt2img", {"height": 16}, "height"),
        ("txt2img", {"steps": 0}, "steps"),
        ("txt2img", {"steps": 301}, "steps"),
        ("txt2img", {"batch_size": 3, "n_iter": 2}, "batch_size"),
        ("txt2img", {"cfg_scale": 99}, "cfg_scale"),
        ("txt2img", {"seed": -5}, "seed"),
        (
            "txt2img",
            {"override_settings": {"sd_model_checkpoint": "sdxl.safetensors [abc]"}},
            "override_settings.sd_model_checkpoint",
        ),
        ("img2img", {}, "init_images"),
        ("img2img", {"init_images": ["bm90IGFuIGltYWdl"]}, "init_images.0"),
        ("img2img", {"init_images": [b64(noise(1)), b64(noise(2))]}, "init_images"),
        ("img2img", {"init_images": [b64(noise(1))], "denoising_strength": 0}, "denoising_strength"),
        ("img2img", {"init_images": [b64(noise(1))], "mask": b64(half_mask(32))}, "mask"),
        ("img2img", {"init_images": [b64(noise(1))], "mask": "%%%"}, "mask"),
        ("extra-single-image", {}, "image"),
        ("extra-single-image", {"image": "bm90IGFuIGltYWdl"}, "image"),
        ("extra-single-image", {"image": b64(noise(1)), "upscaling_resize": 8}, "upscaling_resize"),
        (
            "extra-single-image",
            {"image": b64(noise(1)), "resize_mode": 1, "upscaling_resize_w": 1024},
            "upscaling_resize_w",
        ),
        ("options", {"sd_model_checkpoint": "another-model"}, "sd_model_checkpoint"),
    ],
)
def test_bad_inputs_are_400s_naming_the_a1111_field(
    client: httpx.Client, path: str, body: dict, param: str
) -> None:
    payload = (
        body if path in ("options", "extra-single-image") else {"width": 64, "height": 64, "steps": 4, **body}
    )
    response = client.post(f"/sdapi/v1/{path}", json=payload)
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), param=param)


def test_an_init_image_url_is_refused_without_being_fetched(client: httpx.Client, fake: FakeDiscord) -> None:
    """A1111 takes base64 only: a URL (here to a live server that would answer with a real PNG)
    is a 400 naming the field, and the server got no request at all."""
    buffer = io.BytesIO()
    noise(3).save(buffer, format="PNG")
    url = fake.host("/cat.png", buffer.getvalue())
    response = client.post(
        "/sdapi/v1/img2img", json={"width": 64, "height": 64, "steps": 4, "init_images": [url]}
    )
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), param="init_images.0")
    assert fake.calls_to("/cat.png") == []


# --- a third-party A1111 client ---------------------------------------------------------------------


def test_webuiapi_client_txt2img_img2img_and_upscale(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=4)
    result = api.txt2img(prompt="a lighthouse", seed=11, width=64, height=64, batch_size=2)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.info["all_seeds"] == [11, 12]
    edited = api.img2img(
        images=[result.image],
        prompt="a lighthouse at night",
        seed=3,
        width=64,
        height=64,
        denoising_strength=0.5,
        steps=4,  # sizes only: 2 steps at strength 0.5
    )
    assert [image.size for image in edited.images] == [(64, 64)]
    inpainted = api.img2img(
        images=[noise(6)], mask_image=half_mask(), prompt="a door", width=64, height=64, steps=4
    )  # the unmasked half is composited back exactly whatever the step count
    repainted = np.asarray(inpainted.image.convert("RGB"), dtype=np.int16)
    assert max_pixel_difference(repainted[:, 48:], np.asarray(noise(6), dtype=np.int16)[:, 48:]) == 0
    upscaled = api.extra_single_image(image=result.image, upscaler_1="Lanczos", upscaling_resize=2)
    assert upscaled.image.size == (128, 128)
