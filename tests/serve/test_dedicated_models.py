"""Dedicated checkpoints for inpainting and 2x upscaling, when configured, render those jobs.

Tiny offline checkpoints with the real shapes (a 9-channel inpainting UNet; sd-x2-latent-upscaler's
8-in/5-out UNet conditioned on the pooled text embedding) are built by serve_app.testing.tiny_model and
loaded through the same from_pretrained path a real hub id or s3:// prefix takes.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from ray import serve
from support import decode_png

from serve_app.app import build_app
from serve_app.testing.tiny_model import save_tiny_model

APP = "dedicated"


def noise_png(seed: int, size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.RandomState(seed).rand(size, size, 3) * 255).astype("uint8")).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("dedicated")
    args = {
        "model": str(tiny_model_dir),
        "inpainting_model": str(save_tiny_model(folder / "inpainting", "inpainting")),
        "upscaler_model": str(save_tiny_model(folder / "upscaler", "upscaler")),
        "default_size": "64x64",
        "default_steps": 4,
        "max_size": 256,
        "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.05},
    }
    serve.run(build_app(args), name=APP, route_prefix="/")
    return serve_url


def test_the_dedicated_upscaler_doubles_the_picture(base: str) -> None:
    with httpx.Client(base_url=base, timeout=180) as http:
        response = http.post(
            "/sdapi/v1/extra-single-image",
            json={"image": base64.b64encode(noise_png(1)).decode(), "upscaling_resize": 2},
        )
        assert response.status_code == 200, response.text
        assert decode_png(base64.b64decode(response.json()["image"])).shape == (128, 128, 3)
        models = http.get("/v1/models").json()["data"][0]
    replica = models["replica"]
    assert replica["upscaler"] == "StableDiffusionLatentUpscalePipeline", replica
    assert replica["inpainting_model"] == "dedicated", replica
    log = serve.get_deployment_handle("DiffusionModel", app_name=APP).batch_log.remote().result()
    assert "upscale" in [kind for entry in log for kind in entry["kinds"]]


def test_the_dedicated_inpainting_checkpoint_repaints_only_the_mask(base: str) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")

    def inpaint(seed: int) -> np.ndarray:
        with httpx.Client(base_url=base, timeout=180) as http:
            response = http.post(
                "/v1/images/edits",
                data={"prompt": "a door", "seed": str(seed)},
                files={
                    "image": ("i.png", noise_png(2), "image/png"),
                    "mask": ("m.png", buffer.getvalue(), "image/png"),
                },
            )
        assert response.status_code == 200, response.text
        return decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))

    a, b = inpaint(1), inpaint(2)
    assert a.shape == (64, 64, 3)
    # A 9-channel UNet sees the mask itself; seeds change what it paints inside the mask.
    assert np.abs(a - b)[:, :28].mean() > 1.0
