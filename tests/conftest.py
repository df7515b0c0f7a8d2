"""Shared fixtures: the tiny model (built once per session) and a real local Ray Serve for the modules."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_discord import DiscordSigner, FakeDiscord

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# One auth mode for every Ray cluster the tests start and every driver that joins one. Ray reads
# it once per process: with token auth on for some clusters (Ray 2.60 enables it when a token
# exists under ~/.ray) and off in a driver that joined the simulated cluster, a later local GCS
# refuses the driver ("Missing authorization header"). Loopback-only test clusters need no token.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Keep stored images and job records out of the working tree (settings fall back to this).
os.environ.setdefault("RAYDIFFUSION_DATA_DIR", tempfile.mkdtemp(prefix="raydiffusion-test-data-"))


TESTS = Path(__file__).resolve().parent


# The Ray Serve and browser modules of the second Ray group; every other one is in the first.
# Most of a Serve test's time is waiting (a replica starting, a deadline, a health check, a poll),
# so two groups, each on a Ray of its own in its own pytest-xdist worker, overlap well even on two
# cores. Balanced by the durations a full run prints (keep the two sums close).
SECOND_RAY_GROUP: frozenset[str] = frozenset(
    {
        "test_storage_and_jobs.py",
        "test_discord.py",
        "test_reliability.py",
        "test_compiled_serving.py",
        "test_service_metrics.py",
        "test_queue_place.py",
    }
)


# tryfirst: xdist's worker plugin, registered after this conftest, runs first otherwise and
# turns the group marks into node ids before any mark is there.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: ``-n 3 --dist loadgroup``): the Ray Serve and browser
    modules run in two groups, each in order in one worker on that worker's one shared Ray; every
    other module is a unit of its own that the third worker takes meanwhile. A module is never
    split (module fixtures)."""
    for item in items:
        relative = Path(str(item.path)).resolve().relative_to(TESTS)
        if "no_shared_ray" in getattr(item, "fixturenames", ()):
            # A simulated cluster of its own (minutes): a group of its own, taken by whichever
            # worker frees first (the one running unit modules), not queued behind a Ray group.
            group = relative.as_posix()
        elif relative.parts[0] in {"serve", "browser"}:
            group = "ray-2" if relative.name in SECOND_RAY_GROUP else "ray-1"
        else:
            group = relative.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
    # A module that needs a Ray of its own (a simulated cluster) stops the shared one: run those
    # last, so the shared Ray starts once. The sort is stable: every other order is kept.
    items.sort(key=lambda item: "no_shared_ray" in getattr(item, "fixturenames", ()))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDiscord]:
    """A local HTTP server standing in for Discord's API, per module."""
    server = FakeDiscord()
    yield server
    server.close()


@pytest.fixture(scope="module")
def signer() -> DiscordSigner:
    """Signs interactions with a key of its own, as Discord does with the application's."""
    return DiscordSigner()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from serve_app.testing.tiny_model import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


class SharedAWS:
    """moto's standalone server for the whole run, in the environment before Ray starts.

    Replicas inherit the environment of the Ray that starts them, so the one Ray of the run must
    start after the AWS variables are set: this is started first by ``SharedServe.start`` (and by
    the ``moto_endpoint`` fixture). Modules keep their own buckets, topics and secrets apart by name.
    """

    def __init__(self) -> None:
        self.endpoint: str | None = None
        self._server: object | None = None

    def start(self) -> str:
        if self.endpoint is None:
            from moto.server import ThreadedMotoServer

            port = free_port()
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
            server.start()
            self._server = server
            self.endpoint = f"http://127.0.0.1:{port}"
            os.environ.update(
                AWS_ENDPOINT_URL=self.endpoint,
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_DEFAULT_REGION="us-east-1",
            )
        return self.endpoint


SHARED_AWS = SharedAWS()


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """The run's moto server (see ``SharedAWS``); boto3 clients in this process reach it by default."""
    return SHARED_AWS.start()


class SharedServe:
    """One local Ray + Serve reused by module after module (starting one costs about 9 s).

    Modules get it clean: the applications a module deployed are deleted when it ends, which also
    frees the logical CPUs their replicas held.
    """

    def __init__(self) -> None:
        self.url: str | None = None

    def start(self) -> str:
        if self.url is None:
            import ray
            from ray import serve

            SHARED_AWS.start()  # before Ray: its replicas inherit the AWS environment
            port = free_port()
            # Logical CPUs: replicas reserve them; torch threads are set per replica from its share.
            # address="local": always a fresh instance, never a cluster some `ray start` left running.
            ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            self.url = f"http://127.0.0.1:{port}"
        return self.url

    def clear(self) -> None:
        from ray import serve

        if self.url is not None:
            # All at once (one wait, not one graceful-shutdown wait per application).
            from ray.serve.context import _get_global_client

            names = list(serve.status().applications)
            if names:
                _get_global_client().delete_apps(names, blocking=True)

    def stop(self) -> None:
        if self.url is not None:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
            self.url = None


SHARED_SERVE = SharedServe()


@pytest.fixture(scope="module")
def serve_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A local Ray + Serve for the module, HTTP on a free loopback port.

    Shared with other modules unless the module sets ``OWN_RAY = True``: then a fresh one starts
    now, after the module's own fixtures have set the environment its replicas must inherit (moto's
    endpoint, AWS credentials), and its logs and metrics hold nothing from other modules.
    """
    own = getattr(request.module, "OWN_RAY", False)
    if own:
        SHARED_SERVE.stop()
    url = SHARED_SERVE.start()
    try:
        yield url
    finally:
        if own:
            SHARED_SERVE.stop()
        else:
            SHARED_SERVE.clear()


@pytest.fixture(scope="module")
def no_shared_ray() -> None:
    """For a module that starts or joins a Ray cluster of its own (one driver, one Ray)."""
    SHARED_SERVE.stop()


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_serve() -> Iterator[None]:
    yield
    SHARED_SERVE.stop()
