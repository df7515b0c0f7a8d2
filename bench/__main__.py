"""``python -m bench`` (``make bench``): raw pipeline vs raydiffusion vs Ray's example, one run.

All three use the same tiny model, image size, step count and torch thread count on this machine,
in one process tree, one after the other (never concurrently, and only the system being measured
is deployed), so their ratios are comparable:

1. raw       the diffusers pipeline called in-process at batch sizes 1..max, on the idle machine
             before Ray starts: the hardware's limit;
2. served    raydiffusion over HTTP (ingress -> batched replica), closed-loop at each concurrency,
             with the replica's own render time per batch read from its batch log;
3. baseline  Ray Serve's Stable Diffusion example pattern (one image per call, no batching).

Then the Discord ACK latency while the served model is saturated, and the autoscaling timeline from
the simulated cluster test (``.cache/autoscaling-sim.json``, written by ``make test``).
Writes ``bench/results/<date>.json`` and PNG plots, and rewrites the README's Performance section.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.load import LoadResult, closed_loop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / ".cache" / "tiny-sd"))
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every system")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-wait", type=float, default=0.01)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--duration", type=float, default=25.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite README's section")
    return parser.parse_args()


# --- raw -------------------------------------------------------------------------------------------


def measure_raw(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from serve_app.config.settings import AppSettings
    from serve_app.engine.model.loading import RuntimePlan, load_pipeline

    torch.set_num_threads(args.threads)
    settings = AppSettings(model=args.model, default_size=f"{args.size}x{args.size}")
    pipe = load_pipeline(settings, RuntimePlan("cpu", "float32", "sdpa", False))
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "batches": []}
    batch = 1
    while batch <= args.max_batch:
        calls, seconds = 0, 0.0
        pipe(["warm"] * batch, height=args.size, width=args.size, num_inference_steps=args.steps)
        # At least 4 calls: a batch of 8 takes about 3 s here, and a median of fewer is mostly noise.
        budget = time.monotonic() + max(6.0, args.duration / 3)
        latencies = []
        while time.monotonic() < budget or calls < 4:
            started = time.perf_counter()
            generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
            pipe(
                [f"raw {i}" for i in range(batch)],
                height=args.size,
                width=args.size,
                num_inference_steps=args.steps,
                generator=generators,
            )
            latencies.append(time.perf_counter() - started)
            calls += 1
        seconds = sum(latencies)
        out["batches"].append(
            {
                "batch_size": batch,
                "images_per_s": round(batch * calls / seconds, 3),
                "latency_s": round(statistics.median(latencies), 4),
            }
        )
        rate, median = batch * calls / seconds, statistics.median(latencies)
        print(f"raw   batch {batch:>2}: {rate:.3f} images/s, {median:.3f} s/call")
        batch *= 2
    out["best_images_per_s"] = max(b["images_per_s"] for b in out["batches"])
    out["single_latency_s"] = out["batches"][0]["latency_s"]
    return out


# --- served and baseline ------------------------------------------------------------------------


def deploy_served(args: argparse.Namespace, signer_public_key: str, discord_api: str) -> str:
    from ray import serve

    from serve_app.app import compose
    from serve_app.config.settings import AppSettings

    settings = AppSettings(
        model=args.model,
        default_size=f"{args.size}x{args.size}",
        default_steps=args.steps,
        torch_threads=args.threads,
        data_dir=str(ROOT / ".cache" / "bench-data"),
        discord_public_key=signer_public_key,
        discord_application_id="bench",
        discord_api_base_url=discord_api,
        discord_max_jobs_per_user=100,
    )
    model_options = {
        "ray_actor_options": {"num_cpus": args.threads},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
        "max_ongoing_requests": 2 * args.max_batch,
        "max_queued_requests": 1000,
        "user_config": {"max_batch_size": args.max_batch, "batch_wait_timeout_s": args.batch_wait},
    }
    serve.run(compose(settings, model_options), name="served", route_prefix="/served")
    return "/served/imagine"


def deploy_baseline(args: argparse.Namespace) -> str:
    from ray import serve

    from bench.baseline import baseline_app

    serve.run(baseline_app(args.model, args.steps, args.threads), name="baseline", route_prefix="/baseline")
    return "/baseline/imagine"


async def sweep(
    base: str, path: str, name: str, levels: list[int], args: argparse.Namespace
) -> list[LoadResult]:
    results = []
    limits = httpx.Limits(max_connections=max(levels) + 8)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:
        counter = 0

        async def send() -> int:
            nonlocal counter
            counter += 1
            params = {"prompt": f"bench {counter}"}
            params.update(
                {"size": f"{args.size}x{args.size}"} if name == "served" else {"img_size": str(args.size)}
            )
            response = await http.get(path, params=params)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            return 1

        for level in levels:
            result = await closed_loop(send, level, args.duration, f"{name} c={level}", args.warmup)
            summary = result.summary()
            print(
                f"{name:<8} c={level:>2}: {summary['images_per_s']:.3f} images/s, "
                f"p50 {summary['p50_s']} s, p99 {summary['p99_s']} s, errors {summary['errors']}"
            )
            results.append(result)
    return results


# --- Discord ACK under saturation ---------------------------------------------------------------


async def discord_ack_under_load(
    base: str, signer: Any, args: argparse.Namespace, probes: int = 100
) -> dict[str, Any]:
    """Saturate the served model, then time signed /imagine interactions until their type-5 ACK."""
    limits = httpx.Limits(max_connections=64)
    # Probes open a connection each, as a caller arriving from outside does: a pooled keep-alive
    # connection the proxy has just timed out fails the next POST with ReadError (it crashed a run).
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http,
        httpx.AsyncClient(base_url=base, timeout=600, limits=fresh) as probe,
    ):
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    await http.get("/served/imagine", params={"prompt": "saturate"})
                except httpx.TransportError:  # a dropped keep-alive connection: keep saturating
                    continue

        loaders = [asyncio.create_task(load()) for _ in range(16)]
        await asyncio.sleep(args.warmup)
        latencies = []
        for index in range(probes):
            body = json.dumps(
                {
                    "id": str(index),
                    "application_id": "bench",
                    "type": 2,
                    "token": f"bench-{index}",
                    "guild_id": "g",
                    "member": {"user": {"id": f"user{index}"}},
                    "data": {"name": "imagine", "options": [{"name": "prompt", "type": 3, "value": "ack"}]},
                }
            ).encode()
            started = time.perf_counter()
            response = await probe.post("/served/discord/interactions", content=body, headers=signer(body))
            latencies.append(time.perf_counter() - started)
            assert response.json().get("type") == 5, response.text
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*loaders, return_exceptions=True)
    result = LoadResult(concurrency=1, duration_s=0.0, latencies_s=latencies)
    return {
        "probes": probes,
        "p50_ms": round((result.percentile(50) or 0.0) * 1000, 1),
        "p99_ms": round((result.percentile(99) or 0.0) * 1000, 1),  # nearest rank: 99th of 100
        "max_ms": round(max(latencies) * 1000, 1),
    }


def start_discord_stub() -> tuple[str, Any]:
    """A local stand-in for Discord's API that accepts every edit (the bench measures the ACK)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_PATCH(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_PATCH

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/api/v10", server


def make_signer() -> tuple[str, Any]:
    from nacl.signing import SigningKey

    key = SigningKey.generate()

    def headers(body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        return {
            "X-Signature-Ed25519": key.sign(timestamp.encode() + body).signature.hex(),
            "X-Signature-Timestamp": timestamp,
            "Content-Type": "application/json",
        }

    return key.verify_key.encode().hex(), headers


# --- main -------------------------------------------------------------------------------------------


def served_batches(since: float, until: float) -> dict[str, Any]:
    """What the replica ran between two instants: how many batches of each size, and the median
    time each size took in the render thread (to compare with the same batch called in-process)."""
    from ray import serve

    log = serve.get_deployment_handle("DiffusionModel", app_name="served").batch_log.remote().result()
    by_size: dict[int, list[float]] = {}
    for entry in log:
        if since <= entry["at"] <= until and entry.get("render_s") is not None:
            by_size.setdefault(entry["size"], []).append(entry["render_s"])
    return {
        str(size): {"count": len(times), "render_s_p50": round(statistics.median(times), 4)}
        for size, times in sorted(by_size.items())
    }


def main() -> int:
    args = parse_args()
    if not Path(args.model, "model_index.json").exists():
        from serve_app.testing.tiny_model import save_tiny_model

        save_tiny_model(args.model)
    levels = [int(c) for c in args.concurrency.split(",")]
    started = time.time()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "workload": {"model": "tiny-sd (random weights, offline)", "size": args.size, "steps": args.steps},
        "threads": f"torch.set_num_threads({args.threads}) in the raw process and in each model replica",
        "batching": {"max_batch_size": args.max_batch, "batch_wait_timeout_s": args.batch_wait},
    }
    print("raw, idle machine:")
    report["raw"] = measure_raw(args)

    import ray
    from ray import serve

    from bench.plots import write_plots
    from bench.report import ratios, update_readme

    public_key, signer = make_signer()
    discord_api, stub = start_discord_stub()
    # A Ray of its own, whatever `ray start` left recorded on this machine.
    ray.init(
        address="local", num_cpus=max(4, 2 * args.threads + 1), include_dashboard=False, log_to_driver=False
    )
    port = 8500
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    try:
        path = deploy_served(args, public_key, discord_api)
        report["served"], report["served_batches"] = [], {}
        for level in levels:
            since = time.time()
            (result,) = asyncio.run(sweep(base, path, "served", [level], args))
            report["served"].append(result.summary())
            report["served_batches"][f"c{level}"] = served_batches(since, time.time())
        report["discord_ack_under_saturation"] = asyncio.run(discord_ack_under_load(base, signer, args))
        print(f"discord ACK while saturated: {report['discord_ack_under_saturation']}")
        serve.delete("served")
        path = deploy_baseline(args)
        report["baseline"] = [r.summary() for r in asyncio.run(sweep(base, path, "baseline", levels, args))]
    finally:
        serve.shutdown()
        ray.shutdown()
        stub.shutdown()
    sim = ROOT / ".cache" / "autoscaling-sim.json"
    report["autoscaling_sim"] = json.loads(sim.read_text()) if sim.exists() else None
    report["ratios"] = ratios(report, args.batch_wait)
    report["bench_seconds"] = round(time.time() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = dt.date.today().isoformat()
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2))
    plots = write_plots(report, RESULTS, stem)
    if not args.no_readme:
        update_readme(ROOT / "README.md", report, stem, plots)
    print(json.dumps(report["ratios"], indent=2))
    print(f"wrote {RESULTS / (stem + '.json')} and {', '.join(p.name for p in plots)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
