"""Config files validate offline, and the tiny model loads through the real from_pretrained path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve_app.app import build_app
from serve_app.config.settings import AppSettings
from serve_app.engine.model.loading import RuntimePlan, load_pipeline
from serve_app.testing.tiny_model import save_tiny_model

DEPLOYMENTS = sorted(Path(__file__).parent.parent.joinpath("deployments").glob("*.yaml"))


@pytest.mark.parametrize("config_path", DEPLOYMENTS, ids=[p.name for p in DEPLOYMENTS])
def test_config_file_passes_serve_schema_and_builds(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aws.yaml's S3 store takes its bucket from the environment cluster.yaml gives the containers.
    monkeypatch.setenv("RAYDIFFUSION_S3_BUCKET", "bucket-from-cluster-yaml")
    config = ServeDeploySchema.model_validate(yaml.safe_load(config_path.read_text()))
    deployment_names = {"DiffusionModel", "Ingress"}
    for app in config.applications:
        assert app.import_path == "serve_app.app:build_app"
        assert {d.name for d in app.deployments} <= deployment_names
        # Building validates every arg; no replica (and no model load) starts here.
        assert build_app(dict(app.args)) is not None


def test_builder_rejects_bad_args_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="max_steps"):
        build_app({"max_steps": 0})


def test_tiny_model_build_is_deterministic_and_loads_through_from_pretrained(tmp_path: Path) -> None:
    import torch

    first = save_tiny_model(tmp_path / "a")
    second = save_tiny_model(tmp_path / "b")
    assert (first / "model_index.json").exists()
    assert save_tiny_model(first) == first  # an existing folder is reused, not rebuilt
    plan = RuntimePlan(device="cpu", dtype="float32", attention="sdpa", compile=False)
    images = []
    for folder in (first, second):
        pipe = load_pipeline(AppSettings(model=str(folder), default_size="64x64"), plan)
        assert type(pipe).__name__ == "StableDiffusionPipeline"
        out = pipe(
            prompt="a cat",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator("cpu").manual_seed(3),
            output_type="np",
        )
        images.append(out.images[0])
    assert images[0].shape == (64, 64, 3)
    assert abs(images[0] - images[1]).max() == 0
