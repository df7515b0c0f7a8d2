"""A compiled replica serves mixed batch sizes without compiling again after it reported ready.

Real Ray Serve over loopback with the tiny model, its UNet and VAE decoder put through
``torch.compile`` with the "eager" backend (dynamo traces and guards exactly as it does on a GPU,
without inductor's code generation, so each shape costs seconds here, not minutes). The compiled app
lets dynamo compile any shape it meets while serving (``recompile_while_serving``), so a batch that
escaped the buckets would show up as a new graph in dynamo's counters: the tests read those counters
from ``/v1/models``. A second, uncompiled app renders the same seeds unpadded, for comparison.
"""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from ray import serve
from support import decode_png

from serve_app.app import build_app

STEPS = 3
PIXEL_BUDGET = 2 * 64 * 64
BUCKETS = [1, 4]  # two shapes: each costs a UNet and a VAE trace at warm-up (the CPU-heavy part here)


def _args(tiny_model_dir: Path, compiled: bool) -> dict[str, object]:
    args: dict[str, object] = {
        "model": str(tiny_model_dir),
        "model_name": "compiled" if compiled else "plain",
        "default_size": "64x64",
        "default_steps": STEPS,
        "max_images": 4,
        "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.5},
    }
    if compiled:
        args["compile"] = True
        args["speed"] = {
            "compile_on_cpu": True,
            "compile_backend": "eager",
            "size_buckets": ["64x64"],
            "batch_buckets": BUCKETS,
            "recompile_while_serving": True,
        }
    return args


@pytest.fixture(scope="module")
def apps(serve_url: str, tiny_model_dir: Path) -> str:
    # serve.run returns once the replica is ready: after its warm-up.
    serve.run(build_app(_args(tiny_model_dir, True)), name="compiled", route_prefix="/c")
    # The plain app has a pixel budget of two 64x64 images per call from the start (a redeploy
    # would restart its replica): its three-image renders run as calls of 2 and 1.
    plain = _args(tiny_model_dir, False)
    plain["batching"] = {**plain["batching"], "max_batch_pixels": PIXEL_BUDGET}  # type: ignore[dict-item]
    serve.run(build_app(plain), name="plain", route_prefix="/p")
    return serve_url


def _model(app: str) -> serve.handle.DeploymentHandle:
    return serve.get_deployment_handle("DiffusionModel", app_name=app)


def _generate(base: str, prefix: str, **body: object) -> list[np.ndarray]:
    with httpx.Client(base_url=base, timeout=300) as http:
        response = http.post(f"{prefix}/v1/images/generations", json={"prompt": "a lighthouse", **body})
    assert response.status_code == 200, response.text
    return [decode_png(base64.b64decode(item["b64_json"])) for item in response.json()["data"]]


def _compile_report(app: str) -> dict:
    return _model(app).describe.remote().result()["compile"]


def test_warm_up_compiles_every_bucket_before_ready(apps: str) -> None:
    report = _compile_report("compiled")
    assert report["warmed_shapes"] == [f"64x64x{b}" for b in BUCKETS]
    # One UNet graph and one VAE-decoder graph per batch bucket, all before the first request.
    assert report["graphs_compiled"] >= 2 * len(BUCKETS)
    assert report["graphs_compiled_since_ready"] == 0
    assert report["warmup_seconds"] > 0
    assert _model("plain").describe.remote().result()["compile"] is None


def test_mixed_burst_within_buckets_never_recompiles(apps: str) -> None:
    before = _model("compiled").batch_log.remote().result()
    # Distinct step counts keep each request its own group: group sizes 1 to 4 in one burst.
    counts = [1, 3, 2, 1, 4, 3]
    with ThreadPoolExecutor(len(counts)) as pool:
        rendered = list(
            pool.map(lambda i: _generate(apps, "/c", n=counts[i], seed=i, steps=2 + i), range(len(counts)))
        )
    assert [len(images) for images in rendered] == counts
    batches = _model("compiled").batch_log.remote().result()[len(before) :]
    assert sum(entry["size"] for entry in batches) == sum(counts)
    groups = [size for entry in batches for size in entry["groups"]]
    assert 1 in groups and max(groups) > 1, batches
    calls = [size for entry in batches for group in entry["calls"] for size in group]
    assert set(calls) <= set(BUCKETS), batches
    with httpx.Client(base_url=apps, timeout=30) as http:
        listing = http.get("/c/v1/models").json()
    compile_report = listing["data"][0]["replica"]["compile"]
    assert compile_report["graphs_compiled_since_ready"] == 0, compile_report
    assert listing["data"][0]["replica"]["recipes"]["compiled"] == ["unet", "vae.decode"]


def test_padded_call_equals_the_unpadded_one(apps: str) -> None:
    before = _model("compiled").batch_log.remote().result()
    padded = _generate(apps, "/c", n=3, seed=77)
    (entry,) = _model("compiled").batch_log.remote().result()[len(before) :]
    assert entry["calls"] == [[4]]  # three images rendered in a call of four
    unpadded = _generate(apps, "/p", n=3, seed=77)
    assert len(padded) == len(unpadded) == 3
    for ours, theirs in zip(padded, unpadded, strict=True):
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 2
    # Each result is its own seed's image, not the padding's copy of the last one.
    assert np.abs(padded[0].astype(int) - padded[2].astype(int)).max() > 20


def test_size_outside_the_buckets_runs_eagerly_without_compiling(apps: str) -> None:
    (image,) = _generate(apps, "/c", n=1, size="72x72", seed=5)
    assert image.shape == (72, 72, 3)
    assert _compile_report("compiled")["graphs_compiled_since_ready"] == 0


def test_pixel_budget_splits_a_group(apps: str) -> None:
    model = _model("plain")
    described = model.describe.remote().result()
    assert described["max_batch_pixels"] == PIXEL_BUDGET
    before = model.batch_log.remote().result()
    assert len(_generate(apps, "/p", n=3, seed=9)) == 3
    (entry,) = model.batch_log.remote().result()[len(before) :]
    assert (entry["groups"], entry["calls"]) == ([3], [[2, 1]])
