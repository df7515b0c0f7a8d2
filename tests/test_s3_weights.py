"""Model weights from S3, against moto's standalone S3 server over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import free_port
from moto.server import ThreadedMotoServer

from serve_app.pipeline_loading import RuntimePlan, load_pipeline
from serve_app.s3_model_sync import parse_s3_uri, sync_s3_model
from serve_app.settings import AppSettings

BUCKET = "weights"
PLAN = RuntimePlan(device="cpu", dtype="float32", attention="sdpa", compile=False)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def uploaded_model(s3_endpoint: str, tiny_model_dir: Path) -> str:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    for path in tiny_model_dir.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"models/tiny-sd/{path.relative_to(tiny_model_dir)}")
    return f"s3://{BUCKET}/models/tiny-sd"


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/a/b/") == ("b", "a/b")
    assert parse_s3_uri("s3://b") == ("b", "")
    for bad in ("http://b/x", "s3:///x"):
        with pytest.raises(ValueError):
            parse_s3_uri(bad)


def test_sync_mirrors_the_folder_and_skips_files_already_there(
    uploaded_model: str, s3_endpoint: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    first = sync_s3_model(uploaded_model, tmp_path, s3_endpoint)
    originals = sorted(p.relative_to(tiny_model_dir) for p in tiny_model_dir.rglob("*") if p.is_file())
    assert sorted(p.relative_to(first.path) for p in first.path.rglob("*") if p.is_file()) == originals
    for relative in originals:
        assert (first.path / relative).read_bytes() == (tiny_model_dir / relative).read_bytes()
    assert first.downloaded == len(originals) and first.skipped == 0

    again = sync_s3_model(uploaded_model, tmp_path, s3_endpoint)
    assert (again.downloaded, again.skipped, again.bytes_downloaded) == (0, len(originals), 0)

    damaged = first.path / "unet" / "config.json"
    damaged.write_text("{}")  # a truncated or foreign file is replaced
    repaired = sync_s3_model(uploaded_model, tmp_path, s3_endpoint)
    assert repaired.downloaded == 1
    assert damaged.read_bytes() == (tiny_model_dir / "unet" / "config.json").read_bytes()


def test_missing_prefix_is_a_clear_error(uploaded_model: str, s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model files"):
        sync_s3_model(f"s3://{BUCKET}/models/nothing-here", tmp_path, s3_endpoint)


def test_s3_model_loads_through_from_pretrained_like_the_local_one(
    uploaded_model: str, s3_endpoint: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch

    def render(model: str) -> object:
        settings = AppSettings(
            model=model, model_cache_dir=str(tmp_path), s3_endpoint_url=s3_endpoint, default_size="64x64"
        )
        pipe = load_pipeline(settings, PLAN)
        return pipe(
            prompt="a cat",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator("cpu").manual_seed(11),
            output_type="np",
        ).images[0]

    from_s3 = render(uploaded_model)
    local = render(str(tiny_model_dir))
    assert abs(from_s3 - local).max() == 0
    assert (tmp_path / BUCKET / "models" / "tiny-sd" / "model_index.json").exists()
