"""Model weights from S3, against moto's standalone S3 server over real HTTP."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import free_port
from moto.server import ThreadedMotoServer

from serve_app.config.settings import AppSettings
from serve_app.engine.model.loading import RuntimePlan, load_pipeline
from serve_app.engine.model.s3_sync import parse_s3_uri, sync_s3_model, sync_s3_object

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
    assert model_files(first.path) == originals
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


def test_sync_and_load_log_their_cold_start_phase_with_durations(
    uploaded_model: str, s3_endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 21 item 7: the weight sync and the pipeline load each log one line with their
    duration, so the README's cold-start table can be filled from a cluster's logs."""
    serve_logger = logging.getLogger("ray.serve")
    if not serve_logger.propagate:  # Ray's logging setup may stop it reaching caplog's root handler
        serve_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="ray.serve"):
            report = sync_s3_model(uploaded_model, tmp_path, s3_endpoint)
            again = sync_s3_model(uploaded_model, tmp_path, s3_endpoint)
            settings = AppSettings(
                model=uploaded_model, model_cache_dir=str(tmp_path), s3_endpoint_url=s3_endpoint
            )
            load_pipeline(settings, PLAN)
    finally:
        serve_logger.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "ray.serve"]
    pattern = re.compile(
        rf"^synced {re.escape(uploaded_model)} from S3: (\d+) files, ([\d.]+) MB in ([\d.]+) s"
    )
    synced = [m for m in map(pattern.match, lines) if m]
    assert len(synced) == 3, lines  # the two syncs here and the one inside the load
    files, megabytes, _ = synced[0].groups()
    assert int(files) == report.downloaded > 0
    assert float(megabytes) == pytest.approx(report.bytes_downloaded / 1e6, abs=0.05)
    assert synced[1].group(1) == "0" and again.skipped == report.downloaded  # all present
    assert any(re.match(r"^loaded pipeline .+ on cpu in [\d.]+ s$", line) for line in lines), lines


def model_files(folder: Path) -> list[Path]:
    """Files a load sees; the ETag records beside them are hidden dot-files."""
    return sorted(
        p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
    )


def s3_client(endpoint: str) -> object:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def upload_folder(endpoint: str, folder: Path, prefix: str) -> str:
    client = s3_client(endpoint)
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder)}")
    return f"s3://{BUCKET}/{prefix}"


def test_an_object_replaced_by_one_of_the_same_size_is_fetched_again(
    uploaded_model: str, s3_endpoint: str, tmp_path: Path
) -> None:
    client = s3_client(s3_endpoint)
    client.put_object(Bucket=BUCKET, Key="models/etag/model_index.json", Body=b'{"v": "AAAA"}')
    first = sync_s3_model(f"s3://{BUCKET}/models/etag", tmp_path, s3_endpoint)
    assert first.downloaded == 1
    client.put_object(Bucket=BUCKET, Key="models/etag/model_index.json", Body=b'{"v": "BBBB"}')
    second = sync_s3_model(f"s3://{BUCKET}/models/etag", tmp_path, s3_endpoint)
    assert (second.downloaded, second.skipped) == (1, 0)
    assert (first.path / "model_index.json").read_bytes() == b'{"v": "BBBB"}'
    third = sync_s3_model(f"s3://{BUCKET}/models/etag", tmp_path, s3_endpoint)
    assert (third.downloaded, third.skipped) == (0, 1)


def test_keys_that_climb_out_or_are_absolute_are_never_written(
    uploaded_model: str, s3_endpoint: str, tmp_path: Path
) -> None:
    client = s3_client(s3_endpoint)
    cache = tmp_path / "cache"
    outside = tmp_path / "outside"
    keys = [
        "models/evil/../../../../outside/dotdot.json",
        f"models/evil/{outside}/absolute.json",  # "models/evil//tmp/..." : an absolute tail
        "models/evil/./unet/../../x.json",
        "models/evil/model_index.json",
    ]
    for key in keys:
        client.put_object(Bucket=BUCKET, Key=key, Body=b"{}")
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="models/evil/")["Contents"]}
    assert listed == set(keys), listed  # S3 keeps the names exactly as written
    report = sync_s3_model(f"s3://{BUCKET}/models/evil", cache, s3_endpoint)
    assert (report.downloaded, report.refused) == (1, 3)
    assert not outside.exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(cache in p.parents for p in written), written


@pytest.fixture(scope="module")
def uploaded_with_variants(
    uploaded_model: str, s3_endpoint: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The tiny model with default and fp16 weights, plus a single-file checkpoint beside them."""
    from diffusers import AutoPipelineForText2Image

    folder = tmp_path_factory.mktemp("variants")
    pipe = AutoPipelineForText2Image.from_pretrained(str(tiny_model_dir), local_files_only=True)
    pipe.save_pretrained(folder)
    pipe.save_pretrained(folder, variant="fp16")
    (folder / "sd-tiny-pruned.ckpt").write_bytes(b"\0" * 4096)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\0" * 4096)
    return upload_folder(s3_endpoint, folder, "models/variants")


def test_only_the_configured_variant_is_fetched(
    uploaded_with_variants: str, s3_endpoint: str, tmp_path: Path
) -> None:
    fp16 = sync_s3_model(uploaded_with_variants, tmp_path / "a", s3_endpoint, variant="fp16")
    names = [str(p) for p in model_files(fp16.path)]
    weights = [n for n in names if n.endswith((".safetensors", ".bin", ".ckpt"))]
    assert weights and all(n.endswith(".fp16.safetensors") for n in weights), names
    assert {"model_index.json", "unet/config.json", "tokenizer/tokenizer_config.json"} <= set(names)
    assert fp16.variant == "fp16" and fp16.not_needed >= len(weights) + 2

    default = sync_s3_model(uploaded_with_variants, tmp_path / "b", s3_endpoint)
    weights = [str(p) for p in model_files(default.path) if p.suffix in (".safetensors", ".bin", ".ckpt")]
    assert weights and not any(".fp16." in n or n.endswith((".ckpt", ".bin")) for n in weights), weights
    assert default.variant is None

    settings = AppSettings(
        model=uploaded_with_variants,
        model_cache_dir=str(tmp_path / "a"),
        s3_endpoint_url=s3_endpoint,
        variant="fp16",
    )
    pipe = load_pipeline(settings, PLAN)
    assert pipe(prompt="x", num_inference_steps=1, height=64, width=64, output_type="np").images.shape == (
        1,
        64,
        64,
        3,
    )


def test_a_folder_without_the_variant_loads_its_default_weights(
    uploaded_model: str, s3_endpoint: str, tiny_model_dir: Path, tmp_path: Path, caplog
) -> None:
    for model in (uploaded_model, str(tiny_model_dir)):
        settings = AppSettings(
            model=model, model_cache_dir=str(tmp_path), s3_endpoint_url=s3_endpoint, variant="fp16"
        )
        with caplog.at_level("WARNING", logger="ray.serve"):
            pipe = load_pipeline(settings, PLAN)
        assert pipe.unet is not None
        assert "no 'fp16' weights" in caplog.text


def test_missing_prefix_is_a_clear_error(uploaded_model: str, s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model files"):
        sync_s3_model(f"s3://{BUCKET}/models/nothing-here", tmp_path, s3_endpoint)


def cat_pixels(pipe: Any) -> Any:
    """One fixed-seed 64x64 render, as pixels: two loads of the same weights give equal arrays."""
    import torch

    return pipe(
        prompt="a cat",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=torch.Generator("cpu").manual_seed(11),
        output_type="np",
    ).images[0]


def test_s3_model_loads_through_from_pretrained_like_the_local_one(
    uploaded_model: str, s3_endpoint: str, tiny_model_dir: Path, tmp_path: Path
) -> None:

    def render(model: str) -> object:
        settings = AppSettings(
            model=model, model_cache_dir=str(tmp_path), s3_endpoint_url=s3_endpoint, default_size="64x64"
        )
        pipe = load_pipeline(settings, PLAN)
        return cat_pixels(pipe)

    from_s3 = render(uploaded_model)
    local = render(str(tiny_model_dir))
    assert abs(from_s3 - local).max() == 0
    assert (tmp_path / BUCKET / "models" / "tiny-sd" / "model_index.json").exists()


def test_file_selection_follows_diffusers_naming() -> None:
    from serve_app.engine.model.weight_files import select_files

    listing = [
        "model_index.json",
        "v1-5-pruned-emaonly.ckpt",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/model.safetensors",
        "safety_checker/model-00001-of-00002.fp16.safetensors",  # legacy shard naming
        "safety_checker/model.safetensors.fp16.index.json",
        "vae/diffusion_pytorch_model.bin",  # no fp16 here: the default weights
        "vae/flax_model.msgpack",
        "tokenizer/vocab.json",
    ]
    fp16 = select_files(listing, "fp16")
    assert fp16.variant == "fp16"
    assert fp16.files == sorted(
        [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "text_encoder/model.fp16-00001-of-00002.safetensors",
            "text_encoder/model.fp16-00002-of-00002.safetensors",
            "text_encoder/model.safetensors.index.fp16.json",
            "safety_checker/model-00001-of-00002.fp16.safetensors",
            "safety_checker/model.safetensors.fp16.index.json",
            "vae/diffusion_pytorch_model.bin",
            "tokenizer/vocab.json",
        ]
    )
    default = select_files(listing, None)
    assert "unet/diffusion_pytorch_model.safetensors" in default.files
    assert not any(".fp16" in f or f.endswith((".ckpt", ".msgpack")) for f in default.files)
    assert select_files(listing, "bf16").files == default.files
    assert select_files(listing, "bf16").variant is None


def test_a_lora_from_s3_applies_like_the_same_file_on_disk(
    uploaded_model: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """aws.yaml's LoRA is an s3:// object: fetched once into the model cache, then loaded by PEFT."""

    from serve_app.engine.model.loaded import LoadedModel
    from serve_app.testing.tiny_model import LORA_FILE, save_tiny_lora

    lora_dir = save_tiny_lora(tmp_path / "lora")
    s3_client(s3_endpoint).upload_file(str(lora_dir / LORA_FILE), BUCKET, "loras/tiny-ink.safetensors")

    def render(lora_source: str) -> object:
        settings = AppSettings.model_validate(
            {
                "models": [
                    {
                        "name": "tiny",
                        "model": uploaded_model,
                        "loras": [{"name": "ink", "source": lora_source}],
                    }
                ],
                "model_cache_dir": str(tmp_path / "cache"),
                "s3_endpoint_url": s3_endpoint,
                "default_size": "64x64",
            }
        )
        model = LoadedModel("tiny", settings.for_model("tiny"), bucket_count=1)
        model.adapters.activate((("ink", 1.0),))
        return cat_pixels(model.pipe)

    from_s3 = render(f"s3://{BUCKET}/loras/tiny-ink.safetensors")
    fetched = tmp_path / "cache" / "loras" / BUCKET / "loras" / "tiny-ink.safetensors"
    assert fetched.read_bytes() == (lora_dir / LORA_FILE).read_bytes()
    written_at = fetched.stat().st_mtime_ns
    assert abs(from_s3 - render(str(lora_dir))).max() == 0
    render(f"s3://{BUCKET}/loras/tiny-ink.safetensors")  # a second load finds it current: no download
    assert fetched.stat().st_mtime_ns == written_at


def test_a_symlink_in_the_cache_never_leads_an_object_outside_it(s3_endpoint: str, tmp_path: Path) -> None:
    """A LoRA's object is held to the cache folder like a model's files: a symlinked folder (or
    file) in the cache that points elsewhere is refused, and nothing is written there."""
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="loras")
    client.put_object(Bucket="loras", Key="styles/ink.safetensors", Body=b"weights")
    client.put_object(Bucket="loras", Key="files/oil.safetensors", Body=b"weights")
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    (cache / "loras").mkdir(parents=True)
    outside.mkdir()
    (cache / "loras" / "styles").symlink_to(outside, target_is_directory=True)
    (cache / "loras" / "files").mkdir()
    (cache / "loras" / "files" / "oil.safetensors").symlink_to(outside / "oil.safetensors")
    for uri in ("s3://loras/styles/ink.safetensors", "s3://loras/files/oil.safetensors"):
        with pytest.raises(ValueError, match="outside"):
            sync_s3_object(uri, cache, s3_endpoint)
    assert list(outside.iterdir()) == []
    # The same object through a plain folder arrives.
    client.put_object(Bucket="loras", Key="plain/ink.safetensors", Body=b"weights")
    assert sync_s3_object("s3://loras/plain/ink.safetensors", cache, s3_endpoint).read_bytes() == b"weights"


def test_threads_fetching_one_object_never_share_a_temporary_file(s3_endpoint: str, tmp_path: Path) -> None:
    """Two requests of one replica loading the same LoRA at once: each download goes to a
    temporary file of its own (they used to share ``.<name>.<pid>.partial`` and interleave)."""
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket="shared-lora")
    body = bytes(range(256)) * 4096  # 1 MiB: long enough for the downloads to overlap
    client.put_object(Bucket="shared-lora", Key="a/style.safetensors", Body=body)
    partials: list[str] = []
    started = threading.Barrier(4)

    class Recording:
        """A real boto3 client that notes the temporary file each download writes to."""

        def __init__(self) -> None:
            self._client = s3_client(s3_endpoint)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

        def download_file(self, bucket: str, key: str, filename: str) -> None:
            partials.append(filename)
            started.wait(10)  # all four are about to write at the same moment
            self._client.download_file(bucket, key, filename)

    results: list[bytes] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            path = sync_s3_object("s3://shared-lora/a/style.safetensors", tmp_path, client=Recording())
            results.append(path.read_bytes())
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(set(partials)) == 4, partials
    assert results == [body] * 4
