"""GPU autoscaling 0 -> 1 -> 2 -> 0 on a simulated multi-node cluster, deployed like production.

Ray's real autoscaler, v2 as `ray up` runs it, launches "GPU" worker nodes (local processes
declaring GPU: 1) on demand from tests/serve/cluster/fake_multinode.yaml, which has a preferred node type
and a fallback like cluster.yaml's spot and on-demand types. The app is deployed with the README's
deploy command (`python -m serve_app.ops.deploy`, what `make deploy` runs) from deployments/aws.yaml
itself, with only the model (tiny), device (no CUDA here), store, sizes, CPU counts and autoscaling
delays changed. Timings are written to a JSON file as a by-product (bench/ reads it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port
from support import ROOT, decode_png, wait_for

pytestmark = pytest.mark.slow

TIMINGS_FILE = Path(
    os.environ.get("RAYDIFFUSION_AUTOSCALING_TIMINGS", ROOT / ".cache" / "autoscaling-sim.json")
)
APP = "raydiffusion"
MODEL = "DiffusionModel"


def ray_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="module")
def sim_cluster(tmp_path_factory: pytest.TempPathFactory, no_shared_ray: None) -> Iterator[dict[str, str]]:
    import ray._private.services as services
    import ray.autoscaler._private.fake_multi_node as fake_multi_node
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    gcs_port, dashboard_port = free_port(), free_port()
    ip = services.get_node_ip_address()
    config_file = ROOT / "tests" / "serve" / "cluster" / "fake_multinode.yaml"
    config = yaml.safe_load(config_file.read_text())
    # Worker nodes join the head at this address (the provider defaults to port 6379).
    config["provider"]["gcs_address"] = f"{ip}:{gcs_port}"
    # Autoscaler v2 tracks every node as a cloud instance: the fake head must carry the id the
    # fake provider reports for it (as ray.cluster_utils.AutoscalingCluster does for v2).
    config["provider"].update(launch_multiple=True, head_node_id=FAKE_HEAD_NODE_ID)
    # v2 reads the provider's defaults file, which the Ray wheel does not ship for the fake
    # provider (ray/autoscaler/_private/fake_multi_node/example.yaml). Our config sets every
    # top-level key, so the defaults are entirely overridden: our own file stands in for it.
    defaults = Path(fake_multi_node.__file__).parent / "example.yaml"
    if not defaults.exists():
        defaults.write_text(config_file.read_text())
    config_path = tmp_path_factory.mktemp("cluster") / "fake_multinode.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "RAY_FAKE_CLUSTER": "1",
        # `ray up` starts the head with autoscaler v2 (ray/autoscaler/_private/commands.py); so do we.
        "RAY_enable_autoscaler_v2": "1",
        "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    subprocess.run(
        [
            ray_bin("ray"),
            "start",
            "--head",
            f"--port={gcs_port}",
            f"--autoscaling-config={config_path}",
            "--num-cpus=2",
            "--num-gpus=0",
            '--resources={"raydiffusion_head": 100}',
            "--include-dashboard=true",
            f"--dashboard-port={dashboard_port}",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    previous_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        yield {"address": f"{ip}:{gcs_port}", "dashboard": f"http://127.0.0.1:{dashboard_port}", "env": env}
    finally:
        stop_simulated_cluster()
        # `ray start` recorded the head as this machine's current cluster; a later plain
        # `ray.init()` (make bench's) would try to join the stopped one.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        with contextlib.suppress(OSError):
            if current.read_text().strip() == f"{ip}:{gcs_port}":
                current.unlink()
        if previous_auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = previous_auth


def stop_simulated_cluster(timeout_s: float = 30.0) -> None:
    """Stop this module's cluster only: every process that carries its RAY_FAKE_CLUSTER marker
    (the head's, the simulated nodes' and their workers all inherit it).

    Not ``ray stop --force``: that kills every Ray process on the machine, and under pytest-xdist
    the other workers' shared Rays run beside this one (it crashed two workers once).
    """
    import psutil

    def marked() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.pid != os.getpid() and process.environ().get("RAY_FAKE_CLUSTER") == "1":
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    # Again until none is left: a simulated node's agents may start while the first pass runs.
    for _ in range(3):
        ours = marked()
        if not ours:
            return
        for process in ours:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.terminate()
        _, alive = psutil.wait_procs(ours, timeout=timeout_s)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def simulated_config(model_dir: Path, port: int) -> dict:
    """deployments/aws.yaml with the tiny model and delays short enough for a test."""
    config = yaml.safe_load((ROOT / "deployments" / "aws.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=port, request_timeout_s=300)
    (app,) = config["applications"]
    assert app["args"]["device"] == "cuda" and app["args"]["image_store"] == "s3"
    app["args"].pop("models")  # the catalogue's hub checkpoints cannot be downloaded here
    # ... nor the standalone safety checker from the bucket (no S3 in this simulated cluster).
    assert app["args"].pop("safety_checker_model").startswith("s3://{s3_bucket}/")
    # ... and without them no model asks for the l40s class, so its deployment does not exist
    # (serve_app/app.py makes one per gpu_class the catalogue names; Serve refuses options for
    # a deployment the app did not build).
    app["deployments"] = [d for d in app["deployments"] if d["name"] in (MODEL, "Ingress")]
    app["args"].update(
        model=str(model_dir),
        model_name="tiny-sd",
        variant=None,
        device="cpu",  # the simulated GPU nodes have no CUDA (see test_deploy_failure_is_reported)
        image_store="local",  # no S3 here; the S3 store has its own tests against moto
        default_size="64x64",
        min_size=64,
        default_steps=10,
        default_scheduler="ddim",
        request_timeout_s=240,
    )
    model = next(d for d in app["deployments"] if d["name"] == MODEL)
    assert model["ray_actor_options"]["num_gpus"] == 1
    assert model["autoscaling_config"]["min_replicas"] == 0
    model["ray_actor_options"]["num_cpus"] = 1  # the simulated GPU nodes have one CPU
    model["user_config"] = {"max_batch_size": 2, "batch_wait_timeout_s": 0.05}
    model["max_ongoing_requests"] = 4
    model["graceful_shutdown_timeout_s"] = 5
    model["autoscaling_config"].update(
        max_replicas=2,
        target_ongoing_requests=2,
        upscale_delay_s=2,
        downscale_delay_s=10,
        downscale_to_zero_delay_s=10,
        look_back_period_s=12,
    )
    return config


class ClusterWatch:
    """Samples replicas and GPU nodes once a second into a timeline."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.timeline: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def gpu_nodes() -> int:
        import ray

        return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0)

    @staticmethod
    def gpu_node_types() -> list[str]:
        """'spot' / 'ondemand' for each live GPU node, from the marker resource its type declares."""
        import ray

        return sorted(
            kind
            for n in ray.nodes()
            if n["Alive"]
            for kind in ("spot", "ondemand")
            if n["Resources"].get(f"sim_{kind}", 0) > 0
        )

    @staticmethod
    def replicas() -> int:
        from ray import serve

        app = serve.status().applications.get(APP)
        if app is None or MODEL not in app.deployments:
            return 0
        return app.deployments[MODEL].replica_states.get("RUNNING", 0)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.timeline.append(
                    {"t": self.elapsed(), "replicas": self.replicas(), "gpu_nodes": self.gpu_nodes()}
                )
            except Exception:  # a sample lost while a node comes or goes is fine
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def replica_nodes() -> set[str]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return {a.node_id for a in actors if a.class_name.endswith(f":{APP}:{MODEL}")}


def test_gpu_replicas_scale_from_zero_to_two_nodes_and_back(
    sim_cluster: dict, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import ray

    port = free_port()
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump(simulated_config(tiny_model_dir, port)))
    ray.init(address=sim_cluster["address"], log_to_driver=False)
    try:
        deploy = deploy_command(config_path, sim_cluster)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        assert f"{APP} RUNNING" in deploy.stdout, deploy.stdout
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(base), 120, "the ingress on the head to answer")
        watch = ClusterWatch()
        assert watch.replicas() == 0 and watch.gpu_nodes() == 0, "min_replicas 0 must start with no GPU"

        # (a) The first request scales from zero: a GPU node is launched and the request succeeds.
        t0 = time.monotonic()
        first = httpx.get(f"{base}/imagine", params={"prompt": "cold start", "seed": 1}, timeout=300)
        first_response_s = time.monotonic() - t0
        assert first.status_code == 200, first.text
        assert decode_png(first.content).shape == (64, 64, 3)
        assert watch.gpu_nodes() >= 1
        # Autoscaler v2 honours node-type priority: the preferred ("spot") type comes first.
        assert watch.gpu_node_types() == ["spot"], watch.gpu_node_types()

        # (b) Sustained concurrent load adds a second replica on a second GPU node.
        stop_load = threading.Event()
        statuses: list[int] = []

        def client(index: int) -> None:
            with httpx.Client(base_url=base, timeout=300) as http:
                while not stop_load.is_set():
                    statuses.append(
                        http.get("/imagine", params={"prompt": f"load {index}", "steps": 20}).status_code
                    )

        t1 = time.monotonic()
        clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
        for thread in clients:
            thread.start()
        wait_for(
            lambda: watch.replicas() == 2 and watch.gpu_nodes() == 2,
            240,
            "2 running replicas on 2 GPU nodes",
            interval_s=1.0,
        )
        scale_up_s = time.monotonic() - t1
        assert len(replica_nodes()) == 2, "the two replicas must run on two different nodes"
        # The preferred type is at its max (1): the fallback ("on-demand") type supplies the second.
        assert watch.gpu_node_types() == ["ondemand", "spot"], watch.gpu_node_types()
        stop_load.set()
        for thread in clients:
            thread.join(timeout=300)
        assert statuses and set(statuses) == {200}, sorted(set(statuses))

        # (c) When load stops, replicas and GPU nodes go back to zero.
        t2 = time.monotonic()
        wait_for(lambda: watch.replicas() == 0, 180, "replicas to scale to zero", interval_s=1.0)
        replicas_zero_s = time.monotonic() - t2
        wait_for(lambda: watch.gpu_nodes() == 0, 240, "GPU nodes to be removed", interval_s=1.0)
        nodes_zero_s = time.monotonic() - t2
        watch.stop()

        TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
        TIMINGS_FILE.write_text(
            json.dumps(
                {
                    "first_response_from_zero_s": round(first_response_s, 2),
                    "scale_up_to_2_replicas_s": round(scale_up_s, 2),
                    "scale_down_replicas_to_zero_s": round(replicas_zero_s, 2),
                    "scale_down_nodes_to_zero_s": round(nodes_zero_s, 2),
                    "load_requests": len(statuses),
                    "timeline": watch.timeline,
                },
                indent=2,
            )
        )
        assert max(sample["replicas"] for sample in watch.timeline) == 2
    finally:
        ray.shutdown()


def deploy_command(config_path: Path, sim_cluster: dict) -> subprocess.CompletedProcess[str]:
    """The README's deploy step (`make deploy` runs this): send the config, wait for RUNNING."""
    return subprocess.run(
        [
            sys.executable, "-m", "serve_app.ops.deploy", str(config_path),
            "--address", sim_cluster["dashboard"],
            # The simulated cluster runs on this machine on purpose (make deploy refuses that otherwise).
            "--allow-local",
        ],
        env=sim_cluster["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_deploy_failure_is_reported_and_a_replica_without_cuda_fails_loudly(
    sim_cluster: dict, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """aws.yaml's `device: cuda` on a node without CUDA: the deploy command exits 1 with the reason.

    `serve deploy` alone exits 0 here. One replica is started on the head at once
    (min_replicas 1) so the failure shows within the deploy rather than at a first request.
    """
    config = simulated_config(tiny_model_dir, free_port())
    (app,) = config["applications"]
    app["args"]["device"] = "cuda"
    model = next(d for d in app["deployments"] if d["name"] == MODEL)
    model["ray_actor_options"]["num_gpus"] = 0
    model["autoscaling_config"].update(min_replicas=1, initial_replicas=1)
    config_path = tmp_path / "serve-cuda.yaml"
    config_path.write_text(yaml.safe_dump(config))
    deploy = deploy_command(config_path, sim_cluster)
    assert deploy.returncode == 1, deploy.stdout + deploy.stderr
    assert "DEPLOY_FAILED" in deploy.stderr and "torch sees no CUDA device" in deploy.stderr, deploy.stderr


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
