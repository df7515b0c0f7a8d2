"""The service's own metrics, read the way Prometheus reads them: from Ray's metrics endpoint.

Real Ray Serve, real HTTP over loopback, the tiny model. Ray's node metrics agent runs without the
dashboard (conftest starts Ray with ``include_dashboard=False``); its port is this session's own
(``ray.nodes()``), not the shared discovery file in /tmp/ray that concurrent sessions rewrite.
Export lags a few seconds, so every check polls with a deadline.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from support import deploy_fixed_capacity_app, serve_log_lines, wait_for

from serve_app.config.settings import AppSettings

APP = "metrics"
EXPORT_TIMEOUT_S = 45


def scrape() -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        text = httpx.get(f"http://127.0.0.1:{node['MetricsExportPort']}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            samples.extend((s.name, s.labels, s.value) for s in family.samples)
    return samples


def total(name: str, **labels: str) -> float:
    """Sum of ``name`` (as exported: ``ray_`` + ours) over this app's series matching ``labels``."""
    return sum(
        value
        for sample_name, sample_labels, value in scrape()
        if sample_name == f"ray_{name}"
        and sample_labels.get("application") == APP
        and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def settles_at(name: str, expected: float, **labels: str) -> float:
    """Wait until the exported value reaches ``expected`` and return it (it may overshoot)."""
    return wait_for(
        lambda: (value := total(name, **labels)) >= expected and value,
        EXPORT_TIMEOUT_S,
        f"{name}{labels} to reach {expected}",
        interval_s=1.0,
    )


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path) -> str:
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=4,
        max_steps=500,
        request_timeout_s=60,
        retry_after_s=3,
    )
    # One image rendering, one queued: easy to overload.
    deploy_fixed_capacity_app(settings, APP, "/m", in_flight=1, queued=1)
    return f"{serve_url}/m"


def request_log_entries() -> list[dict]:
    """``request_finished`` JSON lines in this app's Serve replica logs."""
    return [
        json.loads(line[line.index('{"') :]) for line in serve_log_lines(APP, '"event":"request_finished"')
    ]


def generate(http: httpx.Client, prompt: str, **extra: object) -> httpx.Response:
    body = {"prompt": prompt, "n": 1, "size": "64x64", "response_format": "b64_json", **extra}
    return http.post("/v1/images/generations", json=body)


def test_rendering_n_images_moves_images_total_by_n_and_fills_the_histograms(
    base: str, tiny_model_dir: Path
) -> None:
    model = AppSettings(model=str(tiny_model_dir)).served_model_name
    done = {"outcome": "succeeded", "kind": "txt2img", "model": model}
    before = total("raydiffusion_images_total", **done)
    waits_before = total("raydiffusion_queue_wait_seconds_count")
    per_image_before = total("raydiffusion_render_seconds_per_image_count")
    batches_before = total("raydiffusion_batch_size_count")
    count = 3
    with httpx.Client(base_url=base, timeout=120) as http:
        for i in range(count):
            response = generate(http, f"metrics {i}")
            assert response.status_code == 200, response.text
    after = settles_at("raydiffusion_images_total", before + count, **done)
    assert after == before + count
    assert settles_at("raydiffusion_queue_wait_seconds_count", waits_before + count) == waits_before + count
    assert (
        settles_at("raydiffusion_render_seconds_per_image_count", per_image_before + count)
        == per_image_before + count
    )
    # Sequential requests: one image per pipeline call, and the render took time.
    assert settles_at("raydiffusion_batch_size_count", batches_before + count) == batches_before + count
    assert total("raydiffusion_render_seconds_sum") > 0
    # Serve's replica tag is on every series: the per-replica queue depth gauge is exported too.
    assert wait_for(
        lambda: [labels for name, labels, _ in scrape() if name == "ray_raydiffusion_queue_depth"],
        EXPORT_TIMEOUT_S,
        "the queue depth gauge",
    )[0].get("replica")


def test_a_503_moves_rejected_total_overload(base: str) -> None:
    before = total("raydiffusion_rejected_total", reason="overload")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            body = {"n": 1, "size": "64x64", "response_format": "b64_json"}
            return await asyncio.gather(
                *(
                    http.post("/v1/images/generations", json={**body, "prompt": f"burst {i}"})
                    for i in range(8)
                )
            )

    responses = asyncio.run(burst())
    overloaded = [r for r in responses if r.status_code == 503]
    assert overloaded, [r.status_code for r in responses]
    assert all(r.json()["error"]["type"] == "overloaded_error" for r in overloaded)
    after = settles_at("raydiffusion_rejected_total", before + len(overloaded), reason="overload")
    assert after == before + len(overloaded)
    # Each refused and each served request also wrote its JSON log line.
    entries = wait_for(
        lambda: (e := request_log_entries())
        and sum(x["outcome"] == "overloaded" for x in e) >= len(overloaded)
        and e,
        30,
        "the requests' log lines",
    )
    assert sum(x["outcome"] == "overloaded" for x in entries) == len(overloaded)
    served = [x for x in entries if x["outcome"] == "succeeded"]
    assert len(served) >= 8 - len(overloaded)
    assert all(x["source"] == "sync" and x["sizes"] == ["64x64"] and x["render_s"] > 0 for x in served)
    assert all(x["model"] and len(x["seeds"]) == 1 and x["batch_sizes"] == [1] for x in served)


def test_a_bad_request_moves_rejected_total_bad_input(base: str) -> None:
    before = total("raydiffusion_rejected_total", reason="bad_input")
    with httpx.Client(base_url=base, timeout=30) as http:
        response = generate(http, "bad", size="13x13")
    assert response.status_code == 400, response.text
    assert settles_at("raydiffusion_rejected_total", before + 1, reason="bad_input") == before + 1
