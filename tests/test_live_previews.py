"""Live previews: a tiny autoencoder decodes the current step for callers that stream progress.

Real Ray Serve with the tiny model and a tiny random ``AutoencoderTiny`` saved as a local folder
(the way a TAESD checkout is configured). Random weights make the preview's look meaningless, so
what is checked is where previews come from: the configured steps only, the caller's own latents
(different seeds give different previews, the same seed the same one), small JPEGs, and a cost
measured into the batch log.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from ray import serve

from serve_app.app import build_app
from serve_app.generation import ImageJob, ImageResult, ProgressEvent

APP = "previews"
STEPS = 6
EVERY = 2


@pytest.fixture(scope="module")
def model(
    serve_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> serve.handle.DeploymentHandle:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("taesd") / "tiny-taesd"
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    ).save_pretrained(folder)
    args = {
        "model": str(tiny_model_dir),
        "default_size": "64x64",
        "default_steps": STEPS,
        "speed": {"preview_vae": str(folder), "preview_every_steps": EVERY, "preview_size": 32},
        "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.3},
    }
    serve.run(build_app(args), name=APP, route_prefix="/previews")
    return serve.get_deployment_handle("DiffusionModel", app_name=APP)


def _stream(model: serve.handle.DeploymentHandle, seed: int) -> tuple[list[ProgressEvent], ImageResult]:
    job = ImageJob("a lighthouse", 64, 64, STEPS, 7.5, "ddim", seed=seed)
    events = list(model.options(stream=True).generate_stream.remote(job))
    *progress, result = events
    assert isinstance(result, ImageResult)
    return progress, result


def _pixels(jpeg: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_previews_on_the_configured_steps_from_the_callers_own_latents(
    model: serve.handle.DeploymentHandle,
) -> None:
    progress, _ = _stream(model, seed=1)
    previewed = [event.step for event in progress if event.preview]
    assert previewed == [2, 4]  # every 2 steps, never the last (the image itself follows)
    assert all(event.preview is None for event in progress if event.step not in (2, 4))
    first = {e.step: _pixels(e.preview) for e in progress if e.preview}
    assert max(first[2].shape[:2]) <= 32
    again, _ = _stream(model, seed=1)
    other, _ = _stream(model, seed=2)
    same = {e.step: _pixels(e.preview) for e in again if e.preview}
    different = {e.step: _pixels(e.preview) for e in other if e.preview}
    assert np.abs(first[4] - same[4]).max() <= 8  # JPEG of the same latents
    assert np.abs(first[4] - different[4]).max() > 20  # another seed's latents


def test_preview_cost_is_measured_and_reported(model: serve.handle.DeploymentHandle) -> None:
    before = model.batch_log.remote().result()
    _stream(model, seed=3)
    (entry,) = model.batch_log.remote().result()[len(before) :]
    assert 0 < entry["preview_s"] < entry["render_s"]
    print(f"previews: {entry['preview_s'] * 1000:.1f} ms of a {entry['render_s'] * 1000:.0f} ms render")
    assert model.describe.remote().result()["previews"] == {"every_steps": EVERY, "size": 32}


def test_callers_not_streaming_get_no_preview_work(model: serve.handle.DeploymentHandle) -> None:
    before = model.batch_log.remote().result()
    job = ImageJob("a lighthouse", 64, 64, STEPS, 7.5, "ddim", seed=4)
    assert isinstance(model.generate.remote(job).result(), ImageResult)
    (entry,) = model.batch_log.remote().result()[len(before) :]
    assert "preview_s" not in entry
