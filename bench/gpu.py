"""``python -m bench.gpu`` (``make bench-gpu``): what each speed recipe buys on this machine's GPU.

No weights are downloaded: pipelines are built with the real SD 1.5 and SDXL architectures and random
weights (serve_app/testing/random_weights.py), which cost exactly what trained ones cost per step. In one run,
per architecture and recipe:

- raw images/s per batch size (median of timed calls after a first, untimed one);
- warm-up: the first call at each batch size (a compiled recipe compiles there);
- peak GPU memory per batch size (``torch.cuda.max_memory_allocated``);
- served / raw: the service's own recipe behind a local Ray Serve, closed-loop at saturation, against
  the best raw figure of the same recipe;
- live previews on / off: the largest batch with the service's recipe, rendered plainly and with a
  TAESD-architecture ``AutoencoderTiny`` (random weights) decoding every image's preview JPEG every
  ``preview_every_steps`` steps, as the model deployment does for callers that watch progress.

Recipes: ``sdpa`` (eager, PyTorch attention), ``xformers`` (eager; skipped where it is not installed
or there is no CUDA), ``fast`` (sdpa + channels-last + fused QKV + VAE slicing), ``compiled`` (fast +
torch.compile of the UNet and VAE decoder). On a machine without CUDA it runs the tiny model at
64x64 with few steps (how CI proves it works; those figures say nothing about GPUs), compiling with
the "eager" backend. Writes ``bench/results/<date>-gpu-<device>.json`` and a plot; prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RECIPES = ("sdpa", "xformers", "fast", "compiled")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=None, help="comma-separated: tiny, sd15, sdxl (default: by device)")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--batches", default=None, help="batch sizes (default: 1,2,4,8 on GPU; 1,2 on CPU)")
    parser.add_argument(
        "--steps", type=int, default=None, help="denoising steps (default: 30 on GPU, 2 on CPU)"
    )
    parser.add_argument("--iterations", type=int, default=None, help="timed calls per batch (default 3 / 1)")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    parser.add_argument("--served-seconds", type=float, default=None, help="0: skip the served measurement")
    parser.add_argument("--no-previews", action="store_true", help="skip the live previews on/off row")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-plot", action="store_true")
    return parser.parse_args(argv)


def device_name() -> tuple[str, str]:
    """('cuda', 'NVIDIA H100 80GB HBM3') or ('cpu', 'x86_64 CPU')."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0)
    return "cpu", f"{platform.machine()} CPU"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def recipe_plan(recipe: str, device: str, dtype: str, xformers: bool) -> Any | None:
    """The RuntimePlan of a recipe on this device, or None where it cannot run here."""
    from serve_app.engine.model.loading import RuntimePlan

    if recipe == "xformers" and not (device == "cuda" and xformers):
        return None
    fast = recipe in ("fast", "compiled")
    return RuntimePlan(
        device=device,
        dtype=dtype,
        attention="xformers" if recipe == "xformers" else "sdpa",
        compile=recipe == "compiled",
        channels_last=fast,
        fuse_qkv=fast,
        vae_slicing=fast,
        compile_vae=recipe == "compiled",
    )


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed_render(pipe: Any, batch: int, size: int, steps: int, **extra: Any) -> float:
    """Seconds for one pipeline call of ``batch`` seeded images, the GPU's queue drained on both ends."""
    import torch

    generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
    _sync()
    began = time.perf_counter()
    pipe(
        ["a photograph of a lighthouse at dusk"] * batch,
        width=size,
        height=size,
        num_inference_steps=steps,
        generator=generators,
        output_type="pil",
        **extra,
    )
    _sync()
    return time.perf_counter() - began


def measure_recipe(arch: str, recipe: str, plan: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from serve_app.config.speed import SpeedSettings
    from serve_app.engine.speed_recipes import apply_recipes
    from serve_app.testing.random_weights import build_random_pipeline, default_size

    size = default_size(arch)
    speed = SpeedSettings(
        compile_mode=args.compile_mode,
        compile_backend="inductor" if plan.device == "cuda" else "eager",
    )
    started = time.perf_counter()
    pipe = build_random_pipeline(arch, plan.device, plan.dtype)
    applied = apply_recipes(pipe, plan, speed, shapes=len(args.batch_sizes))
    build_s = time.perf_counter() - started
    rows = []
    for batch in args.batch_sizes:
        if plan.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

        def call(batch: int = batch) -> float:
            return _timed_render(pipe, batch, size, args.steps)

        try:
            first = call()
            timed = [call() for _ in range(args.iterations)]
        except torch.OutOfMemoryError:
            rows.append({"batch": batch, "error": "out of memory"})
            break
        median = statistics.median(timed)
        rows.append(
            {
                "batch": batch,
                "first_call_s": round(first, 4),
                "median_s": round(median, 4),
                "images_per_s": round(batch / median, 4),
                "peak_gpu_bytes": torch.cuda.max_memory_allocated() if plan.device == "cuda" else None,
            }
        )
        print(f"  {arch} {recipe:<9} batch {batch}: {batch / median:.3f} images/s (first call {first:.2f} s)")
    best = max((r for r in rows if "images_per_s" in r), key=lambda r: r["images_per_s"], default=None)
    return {
        "arch": arch,
        "recipe": recipe,
        "size": size,
        "plan": plan.as_dict(),
        "applied": applied,
        "build_s": round(build_s, 2),
        "warmup_s": round(sum(r.get("first_call_s", 0.0) for r in rows), 3),
        "batches": rows,
        "best_images_per_s": best["images_per_s"] if best else None,
        "best_batch": best["batch"] if best else None,
    }


def measure_previews(arch: str, plan: Any, args: argparse.Namespace) -> dict[str, Any]:
    """What live previews cost the batch they ride on: the same batch timed without and with them."""
    import torch
    from diffusers import AutoencoderTiny

    from serve_app.config.speed import SpeedSettings
    from serve_app.engine.previews import PreviewDecoder
    from serve_app.engine.speed_recipes import apply_recipes
    from serve_app.testing.random_weights import build_random_pipeline, default_size

    size = default_size(arch)
    batch = max(args.batch_sizes)
    speed = SpeedSettings()
    # The serving default, or every step but the last where a CPU run has only a few.
    every = max(1, min(speed.preview_every_steps, args.steps - 1))
    pipe = build_random_pipeline(arch, plan.device, plan.dtype)
    apply_recipes(pipe, plan, speed, shapes=1)
    torch.manual_seed(0)
    # AutoencoderTiny's defaults are TAESD's architecture (madebyollin/taesd, taesdxl): its real cost.
    decoder = AutoencoderTiny().to(plan.device, getattr(torch, plan.dtype)).eval()
    previews = PreviewDecoder(decoder, every, speed.preview_size)

    def call(with_previews: bool) -> tuple[float, int]:
        decoded = [0]

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if with_previews and previews.due(step + 1, args.steps):
                previews.decode(kwargs["latents"], list(range(batch)))
                decoded[0] += 1
            return kwargs

        return _timed_render(pipe, batch, size, args.steps, callback_on_step_end=on_step_end), decoded[0]

    call(True)  # untimed: first calls pay for allocations and kernel selection
    off, on, count = [], [], 0
    for _ in range(args.iterations):  # interleaved, so drift hits both alike
        off.append(call(False)[0])
        seconds, count = call(True)
        on.append(seconds)
    off_s, on_s = statistics.median(off), statistics.median(on)
    print(f"  {arch} previews batch {batch}: {off_s:.3f} s without, {on_s:.3f} s with {count} previews")
    return {
        "arch": arch,
        "recipe": plan.as_dict(),
        "batch": batch,
        "size": size,
        "every_steps": every,
        "preview_size": speed.preview_size,
        "previews_per_image": count,
        "off_s": round(off_s, 4),
        "on_s": round(on_s, 4),
        "overhead": round(on_s / off_s - 1, 4),
        "ms_per_preview": round((on_s - off_s) * 1000 / count, 2) if count else None,
    }


def measure_served(arch: str, args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    """The service with its auto recipes on this device, saturated by closed-loop HTTP callers."""
    import httpx
    import ray
    from ray import serve

    from bench.load import closed_loop
    from serve_app.app import compose
    from serve_app.config.settings import AppSettings
    from serve_app.testing.random_weights import build_random_pipeline, default_size

    size = default_size(arch)
    max_batch = max(args.batch_sizes)
    with tempfile.TemporaryDirectory(prefix=f"bench-gpu-{arch}-") as folder:
        model_dir = Path(folder) / "model"
        build_random_pipeline(arch, "cpu", "float32" if arch == "tiny" else "float16").save_pretrained(
            model_dir
        )
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": 8123})
            gpus = 1 if raw["plan"]["device"] == "cuda" else 0
            settings = AppSettings(
                model=str(model_dir),
                default_size=f"{size}x{size}",
                min_size=min(64, size),
                default_steps=args.steps,
                max_images=1,
                data_dir=str(Path(folder) / "data"),
            )
            model_options = {
                "ray_actor_options": {"num_cpus": 1, "num_gpus": gpus},
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
                "max_ongoing_requests": 2 * max_batch,
                "max_queued_requests": 1000,
                "user_config": {"max_batch_size": max_batch, "batch_wait_timeout_s": 0.05},
            }
            serve.run(compose(settings, model_options), name="gpu-bench", route_prefix="/")

            async def run() -> dict[str, Any]:
                async with httpx.AsyncClient(base_url="http://127.0.0.1:8123", timeout=600) as http:

                    async def send() -> int:
                        response = await http.get("/imagine", params={"prompt": "a lighthouse"})
                        if response.status_code != 200:
                            raise RuntimeError(f"HTTP {response.status_code}")
                        return 1

                    result = await closed_loop(
                        send, 2 * max_batch, args.served_seconds, f"served {arch}", args.served_seconds / 3
                    )
                    return result.summary()

            summary = asyncio.run(run())
        finally:
            serve.shutdown()
            ray.shutdown()
    served = summary["images_per_s"]
    best = raw["best_images_per_s"] or 0
    return {
        "arch": arch,
        "concurrency": summary["concurrency"],
        "images_per_s": served,
        "p50_s": summary["p50_s"],
        "errors": summary["errors"],
        "raw_recipe": raw["recipe"],
        "raw_best_images_per_s": best,
        "served_over_raw": round(served / best, 3) if best else None,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"GPU benchmark on {report['device']} ({report['date']}), {report['steps']} steps",
        f"{'arch':<6} {'recipe':<10} {'batch':>5} {'images/s':>9} {'first call s':>13} {'peak GiB':>9}",
    ]
    for run in report["runs"]:
        if run.get("skipped"):
            lines.append(f"{run['arch']:<6} {run['recipe']:<10} skipped: {run['skipped']}")
            continue
        for row in run["batches"]:
            if "error" in row:
                lines.append(f"{run['arch']:<6} {run['recipe']:<10} {row['batch']:>5} {row['error']}")
                continue
            peak = f"{row['peak_gpu_bytes'] / 2**30:.2f}" if row["peak_gpu_bytes"] else "n/a"
            lines.append(
                f"{run['arch']:<6} {run['recipe']:<10} {row['batch']:>5} {row['images_per_s']:>9.3f} "
                f"{row['first_call_s']:>13.2f} {peak:>9}"
            )
    for row in report.get("previews", []):
        lines.append(
            f"previews {row['arch']}: batch {row['batch']}, {row['previews_per_image']} per image: "
            f"{row['off_s']:.3f} s -> {row['on_s']:.3f} s ({row['overhead']:+.1%})"
        )
    for served in report["served"]:
        lines.append(
            f"served {served['arch']}: {served['images_per_s']:.3f} images/s at "
            f"{served['concurrency']} callers, served/raw ({served['raw_recipe']}): "
            f"{served['served_over_raw']}"
        )
    return "\n".join(lines)


def write_plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted({run["arch"] for run in report["runs"]})
    fig, axes = plt.subplots(1, len(archs), figsize=(5 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        for run in report["runs"]:
            rows = [r for r in run.get("batches", []) if "images_per_s" in r]
            if run["arch"] == arch and rows:
                ax.plot(
                    [r["batch"] for r in rows], [r["images_per_s"] for r in rows], "o-", label=run["recipe"]
                )
        ax.set_title(f"{arch} on {report['device']}")
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import torch

    from serve_app.engine.model.loading import choose_dtype, xformers_installed
    from serve_app.engine.speed_recipes import choose_attention, choose_fuse_qkv, choose_toggle

    args = parse_args(argv)
    device, name = device_name()
    gpu = device == "cuda"
    archs = (args.arch or ("sd15,sdxl" if gpu else "tiny")).split(",")
    args.batch_sizes = [int(b) for b in (args.batches or ("1,2,4,8" if gpu else "1,2")).split(",")]
    args.steps = args.steps or (30 if gpu else 2)
    args.iterations = args.iterations or (3 if gpu else 1)
    if args.served_seconds is None:
        args.served_seconds = 60.0 if gpu else 6.0
    dtype = choose_dtype("auto", device)
    if not gpu:
        torch.set_num_threads(max(1, torch.get_num_threads()))
    xformers = xformers_installed()
    # The recipe the service picks here on auto: what the served figure is compared with.
    attention = choose_attention("auto", device, xformers)
    service_recipe = (
        "fast" if choose_toggle("auto", device) and choose_fuse_qkv("auto", device, attention) else attention
    )
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "xformers_installed": xformers,
        "dtype": dtype,
        "steps": args.steps,
        "iterations": args.iterations,
        "note": None if gpu else "no CUDA: tiny model on CPU, proves the benchmark runs; not GPU figures",
        "runs": [],
        "served": [],
        "previews": [],
    }
    print(f"bench-gpu on {name}: {', '.join(archs)}, batches {args.batch_sizes}, {args.steps} steps")
    for arch in archs:
        for recipe in args.recipes.split(","):
            plan = recipe_plan(recipe, device, dtype, xformers)
            if plan is None:
                report["runs"].append({"arch": arch, "recipe": recipe, "skipped": "needs CUDA and xformers"})
                continue
            report["runs"].append(measure_recipe(arch, recipe, plan, args))
        if not args.no_previews:
            plan = recipe_plan(service_recipe, device, dtype, xformers)
            report["previews"].append(measure_previews(arch, plan, args))
        if args.served_seconds > 0:
            raw = next(
                (r for r in report["runs"] if r["arch"] == arch and r["recipe"] == service_recipe), None
            )
            if raw is None or raw.get("skipped"):
                raw = next(r for r in report["runs"] if r["arch"] == arch and not r.get("skipped"))
            report["served"].append(measure_served(arch, args, raw))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report['date']}-gpu-{slug(name)}"
    if not args.no_plot:
        report["plot"] = str(write_plot(report, out / f"{stem}-throughput.png"))
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"written: {out / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
