"""Every config file in deployments/ passes Serve's schema and builds; bad args fail before
anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema
from support import ROOT

from serve_app.app import build_app
from serve_app.config.settings import AppSettings

DEPLOYMENTS = sorted((ROOT / "deployments").glob("*.yaml"))


@pytest.mark.parametrize("config_path", DEPLOYMENTS, ids=[p.name for p in DEPLOYMENTS])
def test_config_file_passes_serve_schema_and_builds(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aws.yaml's S3 store takes its bucket from the environment cluster.yaml gives the containers.
    monkeypatch.setenv("RAYDIFFUSION_S3_BUCKET", "bucket-from-cluster-yaml")
    config = ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    for app in config.applications:
        assert app.import_path == "serve_app.app:build_app"
        # One model deployment per GPU class of the catalogue (serve_app/app.py), and the ingress.
        classes = AppSettings.model_validate(dict(app.args)).catalogue.gpu_classes[1:]
        deployment_names = {"DiffusionModel", "Ingress", *(f"DiffusionModel-{c}" for c in classes)}
        assert {d.name for d in app.deployments} <= deployment_names
        # Building validates every arg; no replica (and no model load) starts here.
        assert build_app(dict(app.args)) is not None


def test_builder_rejects_bad_args_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        build_app({"max_steps": 0})


def test_each_gpu_class_is_its_own_model_deployment_and_the_ingress_gets_its_handle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aws.yaml's l40s class (FLUX.1, SD 3.5) becomes DiffusionModel-l40s beside DiffusionModel, as
    Serve builds the application (no Ray started); the ingress receives that class's handle."""
    from ray.serve._private.build_app import build_app as serve_build

    monkeypatch.setenv("RAYDIFFUSION_S3_BUCKET", "bucket-from-cluster-yaml")
    (app,) = yaml.safe_load((ROOT / "deployments" / "aws.yaml").read_text())["applications"]
    built = serve_build(build_app(dict(app["args"])), name="aws")
    deployments = {d.name: d for d in built.deployments}
    assert set(deployments) == {"DiffusionModel", "DiffusionModel-l40s", "Ingress"}
    assert deployments["DiffusionModel-l40s"].init_args[1] == "l40s"
    class_handles = deployments["Ingress"].init_args[3]
    assert set(class_handles) == {"l40s"} and type(class_handles["l40s"]).__name__ == "DeploymentHandle"


def test_every_bucket_placeholder_in_aws_yaml_reaches_the_replicas_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each ``{s3_bucket}`` of aws.yaml (models, LoRAs, the standalone safety checker) is the
    cluster's bucket in what the model deployments are built with: a placeholder left in any
    source makes every replica fail its load ("Invalid bucket name"), as the simulated cluster
    showed for the safety checker."""
    from ray.serve._private.build_app import build_app as serve_build

    monkeypatch.setenv("RAYDIFFUSION_S3_BUCKET", "bucket-from-cluster-yaml")
    (app,) = yaml.safe_load((ROOT / "deployments" / "aws.yaml").read_text())["applications"]
    assert "{s3_bucket}" in (ROOT / "deployments" / "aws.yaml").read_text()
    built = serve_build(build_app(dict(app["args"])), name="aws")
    for deployment in built.deployments:
        if deployment.name.startswith("DiffusionModel"):
            settings = deployment.init_args[0]
            dumped = settings.model_dump_json()
            assert "{s3_bucket}" not in dumped, deployment.name
            assert settings.safety_checker_model == "s3://bucket-from-cluster-yaml/weights/safety-checker"
