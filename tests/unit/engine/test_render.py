"""The two-stage render's finish stage on the CPU: the same image as diffusers' one-stage call.

The finisher decodes latents the pipeline stopped at, checks safety on the device and encodes PNGs
in a pool; none of it may change a pixel of what ``pipe(output_type="pil")`` gives for the seed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.engine.render import (
    Denoised,
    Finisher,
    device_safety_check,
    encode_images,
    to_uint8,
)
from serve_app.testing.tiny_model import build_tiny_pipeline


@pytest.fixture(scope="module")
def pipe():  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe, output_type: str):  # type: ignore[no-untyped-def]
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in (1, 2, 3)]
    return pipe(["a lighthouse"] * 3, width=64, height=64, num_inference_steps=2, generator=generators,
                output_type=output_type).images


def test_finish_stage_gives_the_pixels_of_the_one_stage_call(pipe) -> None:  # type: ignore[no-untyped-def]
    expected = [np.asarray(image) for image in _call(pipe, "pil")]
    latents = _call(pipe, "latent")
    finisher = Finisher("cpu", encode_threads=2)
    try:
        # Padded to 3 with a copy (a compiled batch size), 2 real: the copy is dropped.
        finished = finisher.finish(Denoised(real=2, denoise_s=0.0, steps_done=2, latents=latents),
                                   pipe.vae, None, None, tiled=False)
    finally:
        finisher.shutdown()
    assert len(finished.images) == 2
    for (png, flagged), want in zip(finished.images, expected[:2], strict=True):
        assert not flagged
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), want)
    assert set(finished.stages_s) == {"decode", "safety", "encode"}


def test_images_a_pipeline_made_itself_are_only_encoded(pipe) -> None:  # type: ignore[no-untyped-def]
    images = _call(pipe, "pil")
    finisher = Finisher("cpu")
    try:
        finished = finisher.finish(
            Denoised(real=3, denoise_s=0.0, steps_done=2, images=images, flags=[False, True, False]),
            pipe.vae, None, None, tiled=False,
        )
    finally:
        finisher.shutdown()
    assert [flag for _, flag in finished.images] == [False, True, False]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(finished.images[0][0]))), np.asarray(images[0]))


def test_uint8_and_png_round_trip() -> None:
    pixels = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    arrays = to_uint8(pixels)
    assert arrays.shape == (2, 8, 8, 3) and arrays.dtype == np.uint8
    assert arrays.min() == 0 and arrays.max() == 255
    pngs = encode_images(list(arrays), "PNG", None)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(pngs[1]))), arrays[1])


def _tiny_checker():  # type: ignore[no-untyped-def]
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    vision = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 4}
    text = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    checker = StableDiffusionSafetyChecker(config)
    processor = CLIPImageProcessor(crop_size={"height": 32, "width": 32}, size={"shortest_edge": 32})
    return checker.eval(), processor


def test_safety_on_the_device_flags_and_blacks_out_as_diffusers_does() -> None:
    checker, processor = _tiny_checker()
    pixels = torch.rand(2, 3, 64, 48) * 2 - 1
    # Thresholds far above any cosine distance: nothing flagged, pixels untouched.
    checker.concept_embeds_weights.data.fill_(10.0)
    checker.special_care_embeds_weights.data.fill_(10.0)
    kept, flags = device_safety_check(checker, processor, pixels)
    assert flags == [False, False] and torch.equal(kept, pixels)
    # Thresholds below any: every image flagged and black, as diffusers' own check decides then.
    checker.concept_embeds_weights.data.fill_(-10.0)
    blacked, flags = device_safety_check(checker, processor, pixels)
    assert flags == [True, True]
    assert to_uint8(blacked).max() == 0
    features = processor([Image.fromarray(a) for a in to_uint8(pixels)], return_tensors="pt").pixel_values
    _, diffusers_flags = checker(clip_input=features, images=np.zeros((2, 64, 48, 3)))
    assert diffusers_flags == [True, True]


def test_previews_are_queued_on_the_step_thread_and_encoded_in_the_pool(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The step callback only queues device work; JPEGs are made in the encode pool (issue 23)."""
    import threading

    from diffusers import AutoencoderTiny

    from serve_app.engine.previews import PreviewDecoder

    torch.manual_seed(0)
    previews = PreviewDecoder(AutoencoderTiny().eval(), every_steps=1, size=32)
    saved_on: list[str] = []
    real_save = Image.Image.save

    def recording_save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved_on.append(threading.current_thread().name)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", recording_save)
    latents = torch.randn(3, 4, 8, 8)
    pending = previews.pixels(latents, [0, 2])
    assert pending is not None and saved_on == []  # nothing encoded on the denoising thread
    # Resized on the device to the preview size (64 px decoded -> 32), uint8, ready for Pillow.
    assert tuple(pending.pixels.shape) == (2, 32, 32, 3) and pending.pixels.dtype == torch.uint8

    finisher = Finisher("cpu")
    got: dict[int, bytes] = {}
    encoded = threading.Event()

    def deliver(pending) -> None:  # type: ignore[no-untyped-def]
        got.update(PreviewDecoder.encode(pending))
        encoded.set()

    try:
        finisher.encode_soon(deliver, pending)
        assert encoded.wait(30)
    finally:
        finisher.shutdown()
    assert set(got) == {0, 2} and all(jpeg[:2] == b"\xff\xd8" for jpeg in got.values())
    assert saved_on and all(name.startswith("encode") for name in saved_on)
    assert Image.open(io.BytesIO(got[2])).size == (32, 32)
    assert previews.decode(latents, [0, 2]) == got  # the one-call form gives the same bytes
