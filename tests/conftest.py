"""Shared fixtures: the tiny model (built once per session) and a real local Ray Serve per module."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# One auth mode for every Ray cluster the tests start and every driver that joins one. Ray reads
# it once per process: with token auth on for some clusters (Ray 2.60 enables it when a token
# exists under ~/.ray) and off in a driver that joined the simulated cluster, a later local GCS
# refuses the driver ("Missing authorization header"). Loopback-only test clusters need no token.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Keep stored images and job records out of the working tree (settings fall back to this).
os.environ.setdefault("RAYDIFFUSION_DATA_DIR", tempfile.mkdtemp(prefix="raydiffusion-test-data-"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serve_app.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    """A fresh local Ray + Serve for the module, HTTP on a free loopback port."""
    import ray
    from ray import serve

    port = free_port()
    # Logical CPUs: replicas reserve them; torch threads are set per replica from its share.
    # address="local": always a fresh instance, never a cluster some `ray start` left running.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
