"""Live previews: a tiny autoencoder decodes the current step for callers that stream progress.

Real Ray Serve with the tiny model and a tiny random ``AutoencoderTiny`` saved as a local folder
(the way a TAESD checkout is configured). Random weights make the preview's look meaningless, so
what is checked is where previews come from: the configured steps only, the caller's own latents
(different seeds give different previews, the same seed the same one), small JPEGs, and a cost
measured into the batch log. Then where they reach people: a prediction polled over HTTP while it
renders, and a Discord message's progress edits (tests/fake_discord.py as Discord).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fake_discord import DiscordSigner, FakeDiscord, RecordedCall, imagine_interaction
from PIL import Image
from ray import serve
from support import decode_png, save_tiny_preview_vae, wait_for

from serve_app.api.predictions.protocol import prediction_view
from serve_app.app import build_app
from serve_app.core.images import ImageResult, ImageSpec, ProgressEvent
from serve_app.jobs.preview_board import Preview, PreviewBoard
from serve_app.jobs.records import JobRecord
from serve_app.storage import LocalImageStore

APP = "previews"
PREFIX = "/previews"
STEPS = 6
EVERY = 2
PREVIEW_SIZE = 32
APP_ID = "app-previews"
# Long enough that a poll (or a progress edit) lands while it renders, with previews every 2 steps:
# a two-image step takes about 0.15 s on an idle 2-core machine, so a poll every 0.1 s (a progress
# edit every 0.3 s) has about 3 s from the first preview (step 2) to the last step; longer under load.
SLOW_STEPS = 20


@pytest.fixture(scope="module")
def model(
    serve_url: str,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeDiscord,
    signer: DiscordSigner,
) -> serve.handle.DeploymentHandle:
    folder = save_tiny_preview_vae(tmp_path_factory.mktemp("taesd") / "tiny-taesd")
    args = {
        "model": str(tiny_model_dir),
        "default_size": "64x64",
        "default_steps": STEPS,
        "speed": {"preview_vae": str(folder), "preview_every_steps": EVERY, "preview_size": PREVIEW_SIZE},
        "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.3},
        "data_dir": str(tmp_path_factory.mktemp("previews-store")),
        "discord_public_key": signer.public_key_hex,
        "discord_application_id": APP_ID,
        "discord_api_base_url": fake.url,
        "discord_progress_interval_s": 0.3,
        "discord_retry_initial_s": 0.05,
    }
    serve.run(build_app(args), name=APP, route_prefix=PREFIX)
    return serve.get_deployment_handle("DiffusionModel", app_name=APP)


def _stream(model: serve.handle.DeploymentHandle, seed: int) -> tuple[list[ProgressEvent], ImageResult]:
    job = ImageSpec("a lighthouse", 64, 64, STEPS, 7.5, "ddim", seed=seed)
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
    assert max(first[2].shape[:2]) <= PREVIEW_SIZE
    again, _ = _stream(model, seed=1)
    other, _ = _stream(model, seed=2)
    same = {e.step: _pixels(e.preview) for e in again if e.preview}
    different = {e.step: _pixels(e.preview) for e in other if e.preview}
    assert np.abs(first[4] - same[4]).max() <= 8  # JPEG of the same latents
    assert np.abs(first[4] - different[4]).max() > 20  # another seed's latents


def test_preview_cost_is_measured_and_reported(
    model: serve.handle.DeploymentHandle, record_property: Callable[[str, object], None]
) -> None:
    """The replica times its preview work inside the render; the share is a figure, not an
    assertion (timings on a shared 2-core VM are not pass/fail): README quotes it from this run."""
    before = model.batch_log.remote().result()
    _stream(model, seed=3)
    (entry,) = model.batch_log.remote().result()[len(before) :]
    assert 0 < entry["preview_s"] < entry["render_s"]  # measured, and part of the render it is in
    previews = STEPS // EVERY - 1
    record_property(
        "figure:live_previews",
        {
            "previews_per_image": previews,
            "preview_s": entry["preview_s"],
            "render_s": entry["render_s"],
            "steps": STEPS,
            "size": "64x64",
            "preview_size": PREVIEW_SIZE,
            "summary": (
                f"{previews} live previews of one image (32-pixel JPEGs, every {EVERY} of {STEPS} steps) "
                f"took {entry['preview_s'] * 1000:.1f} ms of a {entry['render_s'] * 1000:.0f} ms render, "
                f"{100 * entry['preview_s'] / entry['render_s']:.1f}%"
            ),
        },
    )
    described = model.describe.remote().result()["previews"]  # it also names the decoder it loaded
    assert (described["every_steps"], described["size"]) == (EVERY, PREVIEW_SIZE), described


def test_callers_not_streaming_get_no_preview_work(model: serve.handle.DeploymentHandle) -> None:
    before = model.batch_log.remote().result()
    job = ImageSpec("a lighthouse", 64, 64, STEPS, 7.5, "ddim", seed=4)
    assert isinstance(model.generate.remote(job).result(), ImageResult)
    (entry,) = model.batch_log.remote().result()[len(before) :]
    assert "preview_s" not in entry


# --- where previews reach people --------------------------------------------------------------------


def _jpeg_from_data_url(url: str) -> Image.Image:
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix), url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "JPEG"
    return image


def test_a_rendering_prediction_shows_previews_and_the_finished_one_its_images(
    model: serve.handle.DeploymentHandle, serve_url: str
) -> None:
    base = f"{serve_url}{PREFIX}"
    created = httpx.post(
        f"{base}/v1/predictions",
        json={"input": {"prompt": "a lighthouse", "n": 2, "size": "64x64", "steps": SLOW_STEPS, "seed": 7}},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    assert created.json()["previews"] is None  # nothing rendered yet
    url = created.json()["urls"]["get"]

    def polled_previews() -> dict | None:
        view = httpx.get(url, timeout=30).json()
        assert view["status"] in ("starting", "processing"), view  # seen before it finishes
        return view if view["previews"] and all(view["previews"]) else None

    rendering = wait_for(polled_previews, 60, "a prediction showing previews of both images", 0.1)
    assert rendering["output"] is None
    previews = [_jpeg_from_data_url(preview) for preview in rendering["previews"]]
    assert [image.size for image in previews] == [(PREVIEW_SIZE, PREVIEW_SIZE)] * 2
    # Each image's own latents: seeds 7 and 8 render different pictures.
    first, second = (np.asarray(image.convert("RGB"), dtype=np.int16) for image in previews)
    assert np.abs(first - second).max() > 20

    def finished() -> dict | None:
        view = httpx.get(url, timeout=30).json()
        return view if view["status"] in ("succeeded", "failed", "canceled") else None

    done = wait_for(finished, 90, "the prediction to finish", 0.2)
    assert done["status"] == "succeeded", done
    assert done["previews"] is None
    assert len(done["output"]) == 2
    for image_url in done["output"]:
        assert decode_png(httpx.get(image_url, timeout=30).content).shape == (64, 64, 3)


def test_previews_are_shown_only_while_the_job_runs(tmp_path: Path) -> None:
    board = PreviewBoard()
    board.put("pred_a", 1, 4, b"\xff\xd8jpeg")
    record = JobRecord(
        id="pred_a", input={"prompt": "x", "n": 2}, jobs=[{"seed": 1}, {"seed": 2}], created_at=1.0
    )
    store = LocalImageStore(tmp_path)
    running = prediction_view(
        record.model_copy(update={"status": "processing"}), store, "", board.latest("pred_a")
    )
    assert running["previews"] == [None, Preview(4, b"\xff\xd8jpeg").data_url]
    assert running["previews"][1] == "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8jpeg").decode()
    for status in ("succeeded", "failed", "canceled"):
        ended = record.model_copy(update={"status": status})
        assert prediction_view(ended, store, "", board.latest("pred_a"))["previews"] is None
    board.forget("pred_a")
    assert board.latest("pred_a") == {} and len(board) == 0


def test_discord_progress_edits_carry_the_preview_and_the_final_edit_only_the_image(
    model: serve.handle.DeploymentHandle, serve_url: str, fake: FakeDiscord, signer: DiscordSigner
) -> None:
    interaction = imagine_interaction(
        APP_ID, "a lighthouse", seed=11, steps=SLOW_STEPS, size="64x64", count=1
    )
    body = json.dumps(interaction).encode()
    response = httpx.post(
        f"{serve_url}{PREFIX}/discord/interactions", content=body, headers=signer.headers(body), timeout=30
    )
    assert response.json() == {"type": 5}, response.text
    token = interaction["token"]

    def delivered(calls: list[RecordedCall]) -> bool:
        return any(token in c.path and "components" in (c.json or {}) for c in calls)

    fake.wait_for(delivered, 90, "the final edit")
    edits = [c for c in fake.calls_to(token) if c.status < 300]
    final = edits[-1]
    assert "components" in final.json, [c.json for c in edits]  # nothing edited after the image
    with_preview = [c for c in edits[:-1] if c.files]
    assert with_preview, [c.json for c in edits]
    for edit in with_preview:
        (name, content_type, data) = edit.files["files[0]"]
        assert set(edit.files) == {"files[0]"}
        assert content_type == "image/jpeg" and name.startswith("preview-11-step") and name.endswith(".jpg")
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG" and image.size == (PREVIEW_SIZE, PREVIEW_SIZE)
        # Only the new preview is listed, so the previous one leaves the message.
        assert edit.json["attachments"] == [{"id": 0, "filename": name}]
        assert edit.json["embeds"][0]["image"]["url"] == f"attachment://{name}"
        assert "Rendering step" in edit.json["content"]
    # Still throttled like every progress edit (scheduling jitter aside).
    progress = edits[:-1]
    assert all(b.at - a.at >= 0.3 * 0.8 for a, b in itertools.pairwise(progress))
    # The final edit replaces the preview with the image: one file, the PNG, and nothing else kept.
    assert set(final.files) == {"files[0]"}
    name, content_type, data = final.files["files[0]"]
    assert (name, content_type) == ("imagine-11.png", "image/png")
    assert decode_png(data).shape == (64, 64, 3)
    assert final.json["attachments"] == [{"id": 0, "filename": "imagine-11.png"}]
    assert final.json["embeds"][0]["image"]["url"] == "attachment://imagine-11.png"


def test_a_discord_grid_previews_all_its_images_in_one_grid(
    model: serve.handle.DeploymentHandle, serve_url: str, fake: FakeDiscord, signer: DiscordSigner
) -> None:
    """/imagine's default grid of four: each preview edit is one JPEG of the four images' latest
    previews laid out 2x2 like the grid, and the final edit the grid of the images itself."""
    # Half the single-image test's steps: four images batched take longer per step.
    interaction = imagine_interaction(APP_ID, "a lighthouse", seed=21, steps=SLOW_STEPS // 2, size="64x64")
    body = json.dumps(interaction).encode()
    response = httpx.post(
        f"{serve_url}{PREFIX}/discord/interactions", content=body, headers=signer.headers(body), timeout=30
    )
    assert response.json() == {"type": 5}, response.text
    token = interaction["token"]
    fake.wait_for(
        lambda calls: any(token in c.path and "components" in (c.json or {}) for c in calls), 120, "the grid"
    )
    edits = [c for c in fake.calls_to(token) if c.status < 300]
    final, with_preview = edits[-1], [c for c in edits[:-1] if c.files]
    assert with_preview, [c.json for c in edits]
    for edit in with_preview:
        name, content_type, data = edit.files["files[0]"]
        assert content_type == "image/jpeg" and name.startswith("preview-21-step")
        assert Image.open(io.BytesIO(data)).size == (2 * PREVIEW_SIZE, 2 * PREVIEW_SIZE)
        assert edit.json["attachments"] == [{"id": 0, "filename": name}]
    name, content_type, data = final.files["files[0]"]
    assert (name, content_type) == ("grid-21.png", "image/png")
    assert decode_png(data).shape == (128, 128, 3)
    assert final.json["attachments"] == [{"id": 0, "filename": "grid-21.png"}]
