"""Starting from a picture: OpenAI edits and variations, batched by kind, every bad input a 400.

Real Ray Serve, real HTTP over loopback, the tiny offline model. Its weights are random, so its VAE
does not reproduce an image it encodes (any decode of any latent looks like noise): "close to the
input" cannot be measured as a pixel distance to the input. What can be measured is how much the
output *follows* the input: at low strength a different input image changes the output a lot and a
different seed changes it less; at strength 1 the input hardly matters. Inpainting the same way:
unmasked pixels do not depend on the seed (they are the input's), masked ones do.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from ray import serve
from support import assert_error_shape, decode_png, max_pixel_difference

from serve_app.app import build_app
from serve_app.config.settings import AppSettings
from serve_app.core.errors import InvalidRequestError
from serve_app.core.image_inputs import decode_base64_image

APP = "images-in"
STEPS = 10


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path) -> str:
    args = {
        "model": str(tiny_model_dir),
        "default_size": "64x64",
        "default_steps": STEPS,
        "max_steps": 50,
        "max_images": 4,
        "max_input_bytes": 200_000,
        "max_input_pixels": 1024 * 1024,
        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.3},
    }
    serve.run(build_app(args), name=APP, route_prefix="/")
    return serve_url


@pytest.fixture
def client(base: str) -> httpx.Client:
    with httpx.Client(base_url=base, timeout=180) as http:
        yield http


def noise_png(seed: int, size: int = 64, mode: str = "RGB") -> bytes:
    pixels = (np.random.RandomState(seed).rand(size, size, len(mode)) * 255).astype("uint8")
    image = Image.fromarray(pixels if len(mode) > 1 else pixels[:, :, 0], mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def half_mask(size: int = 64) -> bytes:
    """White (repaint) on the left half, black (keep) on the right: no alpha channel."""
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size // 2, size))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def edit(client: httpx.Client, image: bytes, mask: bytes | None = None, **fields: object) -> httpx.Response:
    files = {"image": ("image.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    data = {"prompt": "a cat", **{k: str(v) for k, v in fields.items()}}
    return client.post("/v1/images/edits", data=data, files=files)


def image_of(response: httpx.Response, index: int = 0) -> np.ndarray:
    assert response.status_code == 200, response.text
    return decode_png(base64.b64decode(response.json()["data"][index]["b64_json"]))


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


# --- what comes back --------------------------------------------------------------------------------


def test_img2img_output_follows_the_input_at_low_strength_and_not_at_full(client: httpx.Client) -> None:
    first, other = noise_png(1), noise_png(2)

    def follows_input(strength: float) -> float:
        a = image_of(edit(client, first, strength=strength, seed=7))
        b = image_of(edit(client, other, strength=strength, seed=7))
        assert a.shape == (64, 64, 3)
        return mean_difference(a, b)

    low, full = follows_input(0.1), follows_input(1.0)
    assert low > 10 * full, (low, full)


def test_inpainting_keeps_the_unmasked_pixels_and_repaints_the_masked(client: httpx.Client) -> None:
    image, mask = noise_png(3), half_mask()
    a = image_of(edit(client, image, mask, seed=1))
    b = image_of(edit(client, image, mask, seed=2))
    masked, unmasked = np.abs(a - b)[:, :28].mean(), np.abs(a - b)[:, 36:].mean()
    assert unmasked * 5 < masked, (masked, unmasked)


def test_transparent_pixels_of_the_image_are_the_mask_as_openai_defines_it(client: httpx.Client) -> None:
    rgba = Image.open(io.BytesIO(noise_png(3))).convert("RGBA")
    alpha = Image.new("L", (64, 64), 255)
    alpha.paste(0, (0, 0, 32, 64))  # transparent left half: edit there
    rgba.putalpha(alpha)
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    a = image_of(edit(client, buffer.getvalue(), seed=1))
    b = image_of(edit(client, buffer.getvalue(), seed=2))
    assert np.abs(a - b)[:, 36:].mean() * 5 < np.abs(a - b)[:, :28].mean()


def test_requested_size_and_n(client: httpx.Client) -> None:
    # Sizes only: 4 steps (3 at the default strength) answer at the same size as the default 10.
    response = edit(client, noise_png(4, size=96), size="128x64", n=2, steps=4)
    assert response.status_code == 200, response.text
    assert [decode_png(base64.b64decode(d["b64_json"])).shape for d in response.json()["data"]] == [
        (64, 128, 3),
        (64, 128, 3),
    ]
    # Without a size, the input's own (in multiples of 8).
    assert image_of(edit(client, noise_png(4, size=96), steps=4)).shape == (96, 96, 3)


def test_mixed_burst_is_batched_by_kind_and_equals_each_job_alone(base: str, client: httpx.Client) -> None:
    image = noise_png(5)
    # Batching and equality do not depend on the render's length: 4 steps (2 at strength 0.5).
    steps = 4

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=180) as http:
            txt = [
                http.post(
                    "/v1/images/generations",
                    json={"prompt": "a cat", "seed": 10 + i, "size": "64x64", "steps": steps},
                )
                for i in range(3)
            ]
            img = [
                http.post(
                    "/v1/images/edits",
                    data={"prompt": "a cat", "seed": str(20 + i), "strength": "0.5", "steps": str(steps)},
                    files={"image": ("i.png", image, "image/png")},
                )
                for i in range(3)
            ]
            return list(await asyncio.gather(*txt, *img))

    started = time.time()
    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    batches = [
        b
        for b in serve.get_deployment_handle("DiffusionModel", app_name=APP).batch_log.remote().result()
        if b["at"] >= started
    ]
    mixed = [b for b in batches if {"txt2img", "img2img"} <= set(b["kinds"])]
    assert mixed, batches  # one batch held both kinds, rendered as one pipeline call per kind
    assert all(len(b["kinds"]) == len(b["groups"]) for b in mixed)

    # Each image equals the same job rendered on its own.
    alone_txt = client.post(
        "/v1/images/generations", json={"prompt": "a cat", "seed": 11, "size": "64x64", "steps": steps}
    )
    alone_img = edit(client, image, seed=21, strength=0.5, steps=steps)
    assert max_pixel_difference(image_of(responses[1]), image_of(alone_txt)) <= 1
    assert max_pixel_difference(image_of(responses[4]), image_of(alone_img)) <= 1


def test_variations_vary_the_picture(client: httpx.Client) -> None:
    files = {"image": ("image.png", noise_png(6), "image/png")}
    response = client.post("/v1/images/variations", data={"n": "2"}, files=files)
    a, b = image_of(response, 0), image_of(response, 1)
    assert a.shape == (64, 64, 3) and max_pixel_difference(a, b) > 10


def test_the_openai_sdk_edit_and_variation_calls_work_unchanged(base: str, tmp_path: Path) -> None:
    sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    image_path, mask_path = tmp_path / "image.png", tmp_path / "mask.png"
    image_path.write_bytes(noise_png(7))
    mask_path.write_bytes(half_mask())
    with image_path.open("rb") as image, mask_path.open("rb") as mask:
        edited = sdk.images.edit(
            image=image, mask=mask, prompt="a red door", n=1, size="64x64", response_format="b64_json"
        )
    assert decode_png(base64.b64decode(edited.data[0].b64_json)).shape == (64, 64, 3)
    with image_path.open("rb") as image:
        varied = sdk.images.create_variation(image=image, n=2, size="64x64", response_format="url")
    assert len(varied.data) == 2
    for item in varied.data:
        png = httpx.get(item.url, timeout=30)
        assert png.status_code == 200 and decode_png(png.content).shape == (64, 64, 3)


# --- bad input: each a 400 naming the field -----------------------------------------------------------


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge image, with almost no data: decoding it would explode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("image", "mask", "fields", "param"),
    [
        (b"this is not an image", None, {}, "image"),
        (noise_png(1)[:200], None, {}, "image"),  # truncated
        (_bomb_png(40000, 40000), None, {}, "image"),  # decompression bomb
        (b"GIF89a" + b"\0" * 100, None, {}, "image"),
        (noise_png(1, size=400), None, {}, "image"),  # over max_input_bytes
        (noise_png(1), half_mask(32), {}, "mask"),  # mask of another size
        (noise_png(1), b"not a mask", {}, "mask"),
        (noise_png(1), None, {"strength": 1.5}, "strength"),
        (noise_png(1), None, {"strength": 0}, "strength"),
        (noise_png(1), None, {"strength": 0.01}, "strength"),  # 0.01 x 10 steps: nothing would run
        (noise_png(1), None, {"size": "65x64"}, "size"),
        (noise_png(1), None, {"n": 0}, "n"),
    ],
    ids=[
        "not-an-image",
        "truncated",
        "bomb",
        "gif",
        "too-many-bytes",
        "mask-size",
        "mask-not-image",
        "strength-high",
        "strength-zero",
        "strength-no-step",
        "size",
        "n",
    ],
)
def test_bad_inputs_are_400s_naming_the_field(
    client: httpx.Client, image: bytes, mask: bytes | None, fields: dict, param: str
) -> None:
    response = edit(client, image, mask, **fields)
    assert response.status_code == 400, response.text
    assert_error_shape(response.json(), param=param)


def test_missing_image_and_prompt(client: httpx.Client) -> None:
    response = client.post("/v1/images/edits", data={"prompt": "x"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "image"
    response = client.post("/v1/images/edits", data={}, files={"image": ("i.png", noise_png(1), "image/png")})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize("value", ["data:", "data:image/png;base64", "data:image/png;base64,"])
def test_a_data_url_without_data_is_a_400_naming_the_field(value: str) -> None:
    """An empty file picked in a browser arrives as ``data:``: a 400, never a 500."""
    with pytest.raises(InvalidRequestError) as refused:
        decode_base64_image(value, "input.image", AppSettings(model="m"))
    assert refused.value.param == "input.image"
