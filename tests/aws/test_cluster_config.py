"""cluster.yaml and the simulated cluster config pass Ray's own schema and agree with aws.yaml."""

from __future__ import annotations

import os

import pytest
import ray
import yaml
from ray.autoscaler._private.util import validate_config
from support import ROOT


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.mark.parametrize("path", ["cluster.yaml", "tests/serve/cluster/fake_multinode.yaml"])
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


def test_the_image_is_rays_image_of_the_installed_version_plus_the_locked_project() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    (base,) = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    # The CPU image: torch's CUDA wheels carry the CUDA libraries; the -gpu image's toolkit is unused.
    assert base == f"rayproject/ray:{ray.__version__}-py311-cpu"
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c constraints-gpu.txt" in line for line in installs)
    assert any("'.[gpu]'" in line for line in installs)


def test_nodes_run_one_image_and_install_nothing_at_boot() -> None:
    cluster = load("cluster.yaml")
    docker = cluster["docker"]
    assert docker["head_image"] == docker["worker_image"], "head and workers run the same code"
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        assert not any("pip install" in command for command in cluster[key]), key
    assert cluster["file_mounts"] == {}, "the code comes from the image, not from a sync"


def test_dashboard_is_never_exposed() -> None:
    (start,) = [c for c in load("cluster.yaml")["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start


def test_gpu_lock_agrees_with_pyproject_ranges() -> None:
    import tomllib

    from packaging.requirements import Requirement

    from serve_app.provisioning.image_lock import TORCH_VERSION, image_requirements, read_lock

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = read_lock()
    # What the image installs: the base dependencies and the gpu extra, with the extras that one
    # names of this project (raydiffusion[serve]) expanded, as image_lock expands them.
    for line in image_requirements():
        requirement = Requirement(line)
        assert requirement.name != project["name"]
        name = requirement.name.lower()
        assert name in pins, f"{name} is missing from constraints-gpu.txt (run `make lock`)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (line, pins[name])
    # The image runs the torch release the Makefile installs here (its CPU build).
    assert pins["torch"] == TORCH_VERSION
    assert f"torch=={TORCH_VERSION}" in (ROOT / "Makefile").read_text()
    assert f"torch=={TORCH_VERSION}" in image_requirements()
    # The CUDA build: torch's CUDA libraries are locked too, not left to the day of the build.
    assert any(name.startswith("nvidia-cuda-runtime") for name in pins)


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


def test_aws_app_args_validate_with_the_environment_cluster_yaml_gives_the_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serve_app.config.settings import AppSettings

    (app,) = load("deployments/aws.yaml")["applications"]
    options = load("cluster.yaml")["docker"]["run_options"]
    env = dict(o.removeprefix("--env=").split("=", 1) for o in options if o.startswith("--env="))
    assert {"SECRETS_MANAGER_SECRET_ID", "RAYDIFFUSION_S3_BUCKET", "AWS_DEFAULT_REGION"} <= set(env)
    for key in list(os.environ):
        if key.startswith("RAYDIFFUSION_") or key == "SECRETS_MANAGER_SECRET_ID":
            monkeypatch.delenv(key)
    with pytest.raises(ValueError, match="s3_bucket"):
        AppSettings.model_validate(app["args"])  # no bucket: the deploy fails, not a request
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = AppSettings.model_validate(app["args"])
    assert settings.device == "cuda", "a GPU replica without CUDA must fail, not render on CPU"
    assert settings.image_store == "s3" and settings.s3_bucket == env["RAYDIFFUSION_S3_BUCKET"]
    assert settings.secrets_manager_secret_id == env["SECRETS_MANAGER_SECRET_ID"]


def test_gpu_workers_containers_get_the_gpu_and_the_head_does_not() -> None:
    docker = load("cluster.yaml")["docker"]
    assert "--gpus all" in docker["worker_run_options"]
    assert not any(
        "--gpus" in option for option in docker["run_options"] + docker.get("head_run_options", [])
    )


def test_the_readmes_aws_commands_carry_the_key_fail_loudly_and_hide_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each step of "Deploy on AWS" either works as written or fails with a non-zero exit."""
    from bot_gateway.register import app_settings

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy on AWS") : readme.index("## Monitoring")]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    curls = [c for c in commands if c.startswith("curl ")]
    assert curls and all(" -f" in c for c in curls), curls  # an HTTP error is a failed command
    assert all("Authorization: Bearer" in c or c.endswith("\\") for c in curls), curls
    assert not any("HEAD_PUBLIC_IP" in c or ":8000" in c for c in commands), "the HTTPS URL, not the head"
    (dashboard,) = [c for c in commands if c.startswith("ray dashboard")]
    assert not dashboard.endswith("&"), "an interactive shell stops a backgrounded ssh -tt"
    (register,) = [c for c in commands if "bot_gateway.register" in c]
    assert "RAYDIFFUSION_S3_BUCKET" not in register and "--config deployments/aws.yaml" in register
    # ... and without the bucket in the user's environment the register step reads aws.yaml's
    # catalogue (image_store: s3 there needs the bucket only to serve, not to register).
    monkeypatch.delenv("RAYDIFFUSION_S3_BUCKET", raising=False)
    assert "sd-1.5" in app_settings(ROOT / "deployments" / "aws.yaml", None).catalogue.entries


def test_register_dry_run_reads_the_aws_catalogue_without_the_bucket(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21 item 5: `register --config deployments/aws.yaml` with no RAYDIFFUSION_S3_BUCKET."""
    import json

    from bot_gateway.register import main
    from serve_app.config.settings import AppSettings

    for name in ("RAYDIFFUSION_S3_BUCKET", "RAYDIFFUSION_IMAGE_STORE", "SECRETS_MANAGER_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    config = ROOT / "deployments" / "aws.yaml"
    # The service itself still refuses s3 without a bucket (fail the deploy, not a request).
    (args,) = [a["args"] for a in yaml.safe_load(config.read_text())["applications"]]
    with pytest.raises(ValueError, match="needs s3_bucket"):
        AppSettings.model_validate(args)
    assert main(["--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    commands = json.loads(out[out.index("\n") + 1 :])
    (imagine,) = [c for c in commands if c["name"] == "imagine"]
    (model,) = [o for o in imagine["options"] if o["name"] == "model"]
    names = {choice["value"] for choice in model["choices"]}
    assert {"sd-1.5", "flux-schnell", "flux2-klein"} <= names, names
