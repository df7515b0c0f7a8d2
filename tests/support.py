"""Small helpers the integration tests share: decoding images, polling with a deadline."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from serve_app.core.images import ImageResult

T = TypeVar("T")

# The repository's root: tests live one or two folders below it (unit/, serve/, aws/, browser/).
ROOT = Path(__file__).resolve().parents[1]


def image_result(seed: int, flagged: bool = False, replica: dict | None = None) -> ImageResult:
    """A rendered image as the model deployment returns it, for logic that only reads its fields."""
    return ImageResult(
        png=b"png-%d" % seed,
        seed=seed,
        width=64,
        height=64,
        steps=4,
        queue_s=0.0,
        render_s=0.1,
        batch_size=1,
        nsfw_content_detected=flagged,
        replica=replica,
    )


def decode_png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def max_pixel_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a - b).max())


def wait_for(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")


def save_tiny_preview_vae(folder: Path) -> Path:
    """A tiny random ``AutoencoderTiny`` saved like a TAESD checkout, for ``speed.preview_vae``."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(16, 16),
        decoder_block_out_channels=(16, 16),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    ).save_pretrained(folder)
    return folder


def assert_error_shape(body: dict, param: str | None = None) -> None:
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    if param is not None:
        assert error["param"] == param, error


def deploy_fixed_capacity_app(
    settings: object,
    name: str,
    route_prefix: str,
    in_flight: int,
    queued: int,
    batch_wait_s: float = 0.0,
    max_batch_size: int | None = None,
) -> None:
    """One model replica holding ``in_flight`` requests and queueing ``queued``: easy to overload.

    Built from the same deployments as ``build_app``, only with Serve options a config file's
    ``deployments:`` section would set. Batches hold ``in_flight`` images unless ``max_batch_size``
    says fewer (a replica that accepts many requests but renders them one by one).
    """
    from ray import serve

    from serve_app.app import compose

    model_options = {
        "max_ongoing_requests": in_flight,
        "max_queued_requests": queued,
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
        "user_config": {"max_batch_size": max_batch_size or in_flight, "batch_wait_timeout_s": batch_wait_s},
    }
    serve.run(compose(settings, model_options), name=name, route_prefix=route_prefix)


class HangingServer:
    """A TCP endpoint that accepts connections and never answers: a store (or API) that hangs."""

    def __init__(self) -> None:
        import socket
        import threading

        self._socket = socket.create_server(("127.0.0.1", 0))
        self._clients: list[socket.socket] = []
        self._closed = threading.Event()
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            self._clients.append(client)  # held open, never read from or written to

    def close(self) -> None:
        import contextlib
        import socket

        self._closed.set()
        # shutdown() wakes the thread blocked in accept(); close() alone leaves the port listening.
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        for client in self._clients:
            client.close()


def serve_log_lines(app: str, marker: str) -> list[str]:
    """Lines holding ``marker`` in the Serve replica logs of application ``app`` (this Ray session).

    By application, because modules share one Ray per test group: its logs hold every app's lines
    (another module's burst logs thousands of refusals). Serve names each replica's file
    ``replica_<app>_<deployment>_<id>.log``.
    """
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    return [
        line
        for path in logs.glob(f"replica_{app}_*.log")
        for line in path.read_text(errors="replace").splitlines()
        if marker in line
    ]


def serve_replicas(app: str, deployment: str = "DiffusionModel") -> list[dict]:
    """The named actors of one deployment's live replicas, as Ray lists them.

    Serve names a replica ``SERVE_REPLICA::<app>#<deployment>#<id>`` in the "serve" namespace; the
    full prefix keeps app "rel" from matching "xrel". Tests kill these to play a crash.
    """
    import ray

    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    return [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == "serve" and actor["name"].startswith(prefix)
    ]


def kill_serve_replica(replica: dict) -> None:
    """Kill a replica's actor as a crash would (no restart by Ray: Serve has to replace it)."""
    import ray

    ray.kill(ray.get_actor(replica["name"], namespace="serve"), no_restart=True)
