"""CPU-heavy steps of an ingress request run in worker threads, never on its event loop.

A PIL decode, resize or PNG encode of a large upload takes tens to hundreds of milliseconds; on the
ingress's loop that stalls every other caller (Discord's 3-second ACKs among them). Real parts: the
API's edit and variation routes in a FastAPI app; each image step is wrapped to note whether an
event loop runs in the thread that called it.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from serve_app.api.errors import install_error_handlers
from serve_app.api.openai import edits
from serve_app.config.settings import AppSettings
from serve_app.core.errors import OverloadedError
from serve_app.storage import LocalImageStore


class RefusingModel:
    """The model's client: every render refused (the test is about what happens before it)."""

    async def generate(self, jobs: list[Any]) -> list[Any]:
        raise OverloadedError(5)


def png(size: int = 256, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), (10, 20, 30, 0) if mode == "RGBA" else (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_edit_and_variation_images_are_decoded_and_resized_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    on_loop: list[tuple[str, bool]] = []

    def noting(name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop.append((name, True))
            except RuntimeError:
                on_loop.append((name, False))
            return real(*args, **kwargs)

        return call

    for name in ("decode_image", "image_specs", "mask_from_alpha"):
        monkeypatch.setattr(edits, name, noting(name, getattr(edits, name)))
    settings = AppSettings(default_size="64x64", default_steps=2)
    app = FastAPI()
    install_error_handlers(app, settings.retry_after_s)
    model: Any = RefusingModel()
    app.include_router(edits.create_image_edit_router(model, LocalImageStore(tmp_path), settings, []))
    with TestClient(app) as http:
        edit = http.post(
            "/v1/images/edits",
            data={"prompt": "x", "size": "64x64"},
            files={"image": ("a.png", png(mode="RGBA"), "image/png"), "mask": ("m.png", png(), "image/png")},
        )
        variation = http.post("/v1/images/variations", files={"image": ("a.png", png(), "image/png")})
    assert (edit.status_code, variation.status_code) == (503, 503), (edit.text, variation.text)
    assert {name for name, _ in on_loop} >= {"decode_image", "image_specs"}
    assert [call for call in on_loop if call[1]] == []
