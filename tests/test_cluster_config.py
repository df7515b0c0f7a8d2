"""cluster.yaml and the simulated cluster config pass Ray's own schema and agree with aws.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import validate_config

ROOT = Path(__file__).resolve().parent.parent


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.mark.parametrize("path", ["cluster.yaml", "tests/cluster/fake_multinode.yaml"])
def test_cluster_config_passes_rays_schema(path: str) -> None:
    validate_config(load(path))


def test_head_has_no_gpu_and_gpu_workers_scale_from_zero() -> None:
    cluster = load("cluster.yaml")
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU") == 0
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    assert workers and all(t["resources"]["GPU"] >= 1 and t["min_workers"] == 0 for t in workers.values())
    spot = [
        t
        for t in workers.values()
        if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    ]
    on_demand = [t for t in workers.values() if "InstanceMarketOptions" not in t["node_config"]]
    assert spot and on_demand, "spot preferred, on-demand as fallback"
    assert max(t["priority"] for t in spot) > max(t["priority"] for t in on_demand)
    assert all("IamInstanceProfile" in t["node_config"] for t in workers.values()), "workers read S3"
    assert sum(t["max_workers"] for t in workers.values()) >= cluster["max_workers"] >= 1


def test_images_match_the_installed_ray_version() -> None:
    docker = load("cluster.yaml")["docker"]
    for image in (docker["head_image"], docker["worker_image"]):
        assert image.startswith(f"rayproject/ray:{ray.__version__}-"), image
    assert "gpu" in docker["worker_image"] or "cu" in docker["worker_image"]


def test_workers_install_the_gpu_extra_from_the_synced_repo() -> None:
    cluster = load("cluster.yaml")
    (remote, local) = next(iter(cluster["file_mounts"].items()))
    assert local == "."
    assert any(f"{remote}[gpu]" in command for command in cluster["worker_setup_commands"])
    assert ".venv" in cluster["rsync_exclude"]


def test_aws_serve_config_fits_the_cluster() -> None:
    cluster = load("cluster.yaml")
    (app,) = load("deployments/aws.yaml")["applications"]
    deployments = {d["name"]: d for d in app["deployments"]}
    model, ingress = deployments["DiffusionModel"], deployments["Ingress"]
    assert model["ray_actor_options"]["num_gpus"] == 1
    autoscaling = model["autoscaling_config"]
    assert autoscaling["min_replicas"] == 0 and "downscale_to_zero_delay_s" in autoscaling
    assert autoscaling["max_replicas"] <= cluster["max_workers"]
    batch = model["user_config"]["max_batch_size"]
    assert batch / 2 <= autoscaling["target_ongoing_requests"] <= batch
    assert model["max_ongoing_requests"] >= batch
    # The ingress is pinned to a resource only the head declares.
    head = cluster["available_node_types"][cluster["head_node_type"]]
    for resource in ingress["ray_actor_options"]["resources"]:
        assert resource in head["resources"]
        assert all(
            resource not in t["resources"]
            for name, t in cluster["available_node_types"].items()
            if name != cluster["head_node_type"]
        )
    assert (
        app["args"]["request_timeout_s"] < load("deployments/aws.yaml")["http_options"]["request_timeout_s"]
    )
