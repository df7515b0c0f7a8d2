"""``python -m bench.gpu_report.report`` (``make gpu-report``): one prepared, unattended GPU measurement.

Made for a borrowed GPU machine with no network and minutes of time: everything it imports beyond
the machine's own packages travels as wheels (``make gpu-wheels``), every stage runs in a process of
its own under a deadline (a hung CUDA call or Ray start is killed, and the next stage still runs), and
the JSON is rewritten after every stage and every sub-measurement, so a kill loses only the stage in
flight. Stages, in order:

``env``       GPU, driver, torch and package versions.
``raw``       SD 1.5 at 512x512 with the real architecture and random weights built on the GPU (a
              real-architecture safety checker too): the diffusers pipeline call per batch size, and
              its split into text encoder, UNet (denoise), VAE decode, safety checker (diffusers' PIL
              preprocessing on the CPU vs ours on the device) and PNG encoding (default level vs
              level 1, one thread vs a pool); peak memory.
``served``    the real Serve deployment with deployments/aws.yaml's model options (batching, CPUs, one
              GPU) on that model saved to local disk: time to ready, a closed loop at concurrency 1, 4
              and 16 (p50/p95/p99, images/s), served/raw against the raw pipeline at the same batch
              size in this same run, GPU busy % (NVML) and peak memory, the replica's per-stage split.
``compiled``  a compiled replica (torch.compile, size and batch buckets): warm-up time, then a mixed
              burst (bucketed and padded batches, a size outside the buckets, a LoRA switch) and the
              replica's recompiles and eager fallbacks from /v1/models.
``sdxl``      SDXL at 1024x1024, fp16 (VAE upcast to fp32 per call) vs bf16 (no upcast), if time allows.
``cost``      images/s per dollar from hourly prices given as ``--price NAME=DOLLARS_PER_HOUR``.

Without CUDA the same stages run the tiny model at 64x64 with few steps and short windows (how CI
proves it runs; those figures say nothing about GPUs, and the JSON says so).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
STAGES = ("env", "raw", "served", "compiled", "sdxl", "cost")
PROMPT = "a photograph of a lighthouse at dusk, detailed, golden hour"
# Per stage on a GPU, seconds: the whole report fits 8 minutes (the machine's start and the wheels'
# install come on top of it). A stage that would start with less than its floor left is skipped.
GPU_DEADLINES = {"env": 15, "raw": 90, "served": 140, "compiled": 100, "sdxl": 50, "cost": 5}
CPU_DEADLINES = {"env": 60, "raw": 300, "served": 300, "compiled": 300, "sdxl": 30, "cost": 10}
FLOORS = {"env": 5, "raw": 30, "served": 60, "compiled": 45, "sdxl": 30, "cost": 1}


# --- the parent: stages under deadlines ------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS), help="folder for the JSON")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds (default 400 GPU, 900 CPU)")
    parser.add_argument(
        "--model-dir",
        default=str(Path(tempfile.gettempdir()) / "gpu-report-model"),
        help="where the raw stage saves the model the served stages load (GBs on a GPU: not --out)",
    )
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument(
        "--price", action="append", default=[], help="NAME=DOLLARS_PER_HOUR (an hourly price to divide by)"
    )
    parser.add_argument("--loop-s", type=float, default=None, help="seconds measured per concurrency")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (30 GPU, 3 CPU)")
    parser.add_argument("--name", default=None, help="JSON file name (default <date>-gpu-report-<device>)")
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # a child: run this stage only
    parser.add_argument("--state", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader (or a kill mid-write) never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def run_stage(name: str, deadline_s: float, args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """Run one stage in a child process (its own session) and kill the whole group at the deadline.

    The child rewrites ``<state>.<name>.json`` as it goes; what it wrote is the stage's result even
    when it was killed.
    """
    partial = state.with_name(f"{state.stem}.{name}.json")
    partial.unlink(missing_ok=True)
    command = [sys.executable, "-m", "bench.gpu_report.report", "--stage", name, "--state", str(state)]
    command += ["--out", args.out, "--model-dir", args.model_dir]
    for flag, value in (("--loop-s", args.loop_s), ("--steps", args.steps)):
        if value is not None:
            command += [flag, str(value)]
    for price in args.price:
        command += ["--price", price]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        code: int | str = process.wait(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = "killed at the deadline"
    result = json.loads(partial.read_text()) if partial.exists() else {}
    result["stage_s"] = round(time.monotonic() - started, 1)
    result["deadline_s"] = deadline_s
    if code != 0:
        result["error"] = result.get("error") or (code if isinstance(code, str) else f"exit code {code}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage:
        return child(args)
    gpu = cuda_available()
    budget = args.budget_s or (400.0 if gpu else 900.0)
    deadlines = GPU_DEADLINES if gpu else CPU_DEADLINES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = device_label()
    name = args.name or f"{dt.date.today().isoformat()}-gpu-report-{slug(device)}"
    path = out / f"{name}.json"
    # Stage hand-offs live apart from the results: on the GPU machine only a few files come back.
    state = Path(tempfile.mkdtemp(prefix="gpu-report-state-")) / "state.json"
    report: dict[str, Any] = {
        "report": "bench/gpu_report/report.py",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": device,
        "cuda": gpu,
        "note": None if gpu else "no CUDA: the tiny model on CPU proves the report runs; not GPU figures",
        "budget_s": budget,
        "stages": {},
    }
    write_json(path, report)
    started = time.monotonic()
    for stage in [s for s in STAGES if s in args.stages.split(",")]:
        left = budget - (time.monotonic() - started)
        if left < FLOORS[stage]:
            report["stages"][stage] = {"skipped": f"{left:.0f} s of the budget left"}
            write_json(path, report)
            continue
        write_json(state, report)  # what a stage reads of the earlier ones (raw's figures, the model)
        print(f"[gpu-report] {stage}: deadline {min(deadlines[stage], left):.0f} s", flush=True)
        report["stages"][stage] = run_stage(stage, min(deadlines[stage], left), args, state)
        write_json(path, report)
        print(f"[gpu-report] {stage}: {summary_line(stage, report['stages'][stage])}", flush=True)
    report["total_s"] = round(time.monotonic() - started, 1)
    write_json(path, report)
    print(f"[gpu-report] written {path} in {report['total_s']} s", flush=True)
    return 0


def summary_line(stage: str, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error']} ({result.get('stage_s')} s)"
    keys = {
        "raw": ("best_images_per_s", "best_batch"),
        "served": ("ready_s", "served_over_raw", "gpu_busy_pct"),
        "compiled": ("ready_s", "graphs_compiled_since_ready", "eager_fallbacks"),
        "sdxl": ("fp16_s", "bf16_s"),
    }.get(stage, ())
    return ", ".join(f"{k} {result.get(k)}" for k in keys) + f" ({result.get('stage_s')} s)"


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU"


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


# --- a child: one stage --------------------------------------------------------------------------


class Partial:
    """The stage's result, rewritten to disk at every ``save`` (a kill keeps what was saved)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}

    def save(self, **values: Any) -> None:
        self.data.update(values)
        write_json(self.path, self.data)


def child(args: argparse.Namespace) -> int:
    state_path = Path(args.state)
    state = json.loads(state_path.read_text())
    partial = Partial(state_path.with_name(f"{state_path.stem}.{args.stage}.json"))
    gpu = state["cuda"]
    stage: Callable[..., None] = {
        "env": stage_env,
        "raw": stage_raw,
        "served": stage_served,
        "compiled": stage_compiled,
        "sdxl": stage_sdxl,
        "cost": stage_cost,
    }[args.stage]
    try:
        stage(partial, state, args, gpu)
    except Exception as error:  # recorded, and the next stage still runs
        import traceback

        partial.save(
            error=f"{type(error).__name__}: {error}"[:2000], traceback=traceback.format_exc()[-4000:]
        )
        return 1
    return 0


def steps_for(args: argparse.Namespace, gpu: bool) -> int:
    return args.steps or (30 if gpu else 3)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    sync()
    began = time.perf_counter()
    value = fn()
    sync()
    return time.perf_counter() - began, value


def stage_env(partial: Partial, state: dict[str, Any], args: argparse.Namespace, gpu: bool) -> None:
    import importlib.metadata as metadata

    import torch

    versions = {}
    for package in ("torch", "diffusers", "transformers", "accelerate", "peft", "ray", "fastapi", "pydantic"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": versions,
        "cpus": os.cpu_count(),
        "torch_cuda": torch.version.cuda,
    }
    if gpu:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_bytes=props.total_memory,
            multiprocessors=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
        )
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    partial.save(**info)


# --- raw ---------------------------------------------------------------------------------------------


def safety_checker_for(arch: str, device: str, dtype: Any) -> tuple[Any, Any]:
    """A safety checker of the real architecture (CLIP ViT-L/14 at 224 px) with random weights.

    Its cost per image is the architecture's, whatever the weights; the tiny model gets a tiny one.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    if arch == "tiny":
        vision = {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        }
        vision.update(image_size=32, patch_size=4)
        projection = 16
    else:
        vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24}
        vision.update(num_attention_heads=16, image_size=224, patch_size=14)
        projection = 768
    text = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
    with torch.device(device):
        checker = StableDiffusionSafetyChecker(config)
    checker = checker.to(device=device, dtype=dtype).eval()
    size = vision["image_size"]
    processor = CLIPImageProcessor(
        crop_size={"height": size, "width": size},
        size={"shortest_edge": size},
        do_center_crop=True,
        do_resize=True,
        do_normalize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    return checker, processor


def build_sd(arch: str, device: str, dtype_name: str) -> Any:
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from serve_app.testing.random_weights import build_random_pipeline

    pipe = build_random_pipeline(arch, device, dtype_name)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    checker, processor = safety_checker_for(arch, device, getattr(torch, dtype_name))
    pipe.register_modules(safety_checker=checker, feature_extractor=processor)
    pipe.register_to_config(requires_safety_checker=True)
    return pipe


def stage_raw(partial: Partial, state: dict[str, Any], args: argparse.Namespace, gpu: bool) -> None:
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from serve_app.config.settings import AppSettings
    from serve_app.config.speed import SpeedSettings
    from serve_app.engine.model.loading import plan_runtime
    from serve_app.engine.render import device_safety_check, encode_images, to_uint8
    from serve_app.engine.speed_recipes import apply_recipes

    arch, size = ("sd15", 512) if gpu else ("tiny", 64)
    device, dtype_name = ("cuda", "float16") if gpu else ("cpu", "float32")
    steps = steps_for(args, gpu)
    batches = [1, 4, 8] if gpu else [1, 2]
    iterations = 3 if gpu else 1
    if not gpu:
        torch.set_num_threads(1)  # the tiny model: figures only prove the path; never oversubscribe
    build_s, pipe = timed(lambda: build_sd(arch, device, dtype_name))
    # Saved before any recipe rewrites its modules: the served stages load these files as the
    # service loads a checkpoint.
    model_dir = Path(args.model_dir)
    saved_s, _ = timed(lambda: pipe.save_pretrained(model_dir))
    partial.save(model_dir=str(model_dir), save_s=round(saved_s, 2))
    # The recipes the service applies on this device (attention, channels-last, fused QKV, VAE
    # slicing): served/raw compares like with like.
    plan = plan_runtime(AppSettings(model=str(model_dir), device=device))
    recipes = apply_recipes(pipe, plan, SpeedSettings(), shapes=0)
    partial.save(recipes=recipes)
    partial.save(
        arch=arch, size=size, steps=steps, dtype=dtype_name, scheduler="dpmpp_2m", build_s=round(build_s, 2)
    )
    rows: list[dict[str, Any]] = []
    for batch in batches:
        prompts = [PROMPT] * batch

        def call(batch: int = batch, prompts: list[str] = prompts) -> Any:
            generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
            return pipe(prompts, width=size, height=size, num_inference_steps=steps, generator=generators)

        if gpu:
            torch.cuda.reset_peak_memory_stats()
        first_s, _ = timed(call)
        seconds = [timed(call)[0] for _ in range(iterations)]
        median = statistics.median(seconds)
        row: dict[str, Any] = {
            "batch": batch,
            "first_call_s": round(first_s, 4),
            "call_s": round(median, 4),
            "images_per_s": round(batch / median, 3),
            "peak_gpu_bytes": torch.cuda.max_memory_allocated() if gpu else None,
        }
        row["split_s"] = split_of_call(pipe, batch, size, steps, device)
        rows.append(row)
        partial.save(batches=rows)
    best = max(rows, key=lambda r: r["images_per_s"])
    partial.save(best_images_per_s=best["images_per_s"], best_batch=best["batch"])

    # Encoding: diffusers-style PIL + default PNG level on one thread vs uint8 from the device, level 1,
    # a small pool (Pillow releases the GIL while it compresses).
    batch = batches[-1]
    latents = torch.randn(batch, 4, size // 8, size // 8, device=device, dtype=pipe.vae.dtype)
    with torch.no_grad():
        pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    arrays = to_uint8(pixels)
    from PIL import Image

    def png_serial(level: int) -> list[bytes]:
        out = []
        for array in arrays:
            import io

            buffer = io.BytesIO()
            Image.fromarray(array).save(buffer, format="PNG", compress_level=level)
            out.append(buffer.getvalue())
        return out

    pool = ThreadPoolExecutor(max_workers=4)
    encode = {
        "batch": batch,
        "png_level6_serial_s": round(timed(lambda: png_serial(6))[0], 4),
        "png_level1_serial_s": round(timed(lambda: png_serial(1))[0], 4),
        "png_level1_pool4_s": round(timed(lambda: encode_images(arrays, "PNG", pool))[0], 4),
        "bytes_level6": sum(map(len, png_serial(6))),
        "bytes_level1": sum(map(len, png_serial(1))),
    }
    pool.shutdown()
    # Safety: diffusers' own preprocessing (PIL, CLIPImageProcessor on the CPU) vs on the device.
    images = pipe.image_processor.pt_to_numpy(((pixels / 2 + 0.5).clamp(0, 1)).float())
    pil = pipe.image_processor.numpy_to_pil(images)

    def diffusers_safety() -> Any:
        features = pipe.feature_extractor(pil, return_tensors="pt").to(device)
        return pipe.safety_checker(images=images, clip_input=features.pixel_values.to(pipe.vae.dtype))

    timed(diffusers_safety)
    timed(lambda: device_safety_check(pipe.safety_checker, pipe.feature_extractor, pixels))
    encode["safety_diffusers_s"] = round(timed(diffusers_safety)[0], 4)
    encode["safety_on_device_s"] = round(
        timed(lambda: device_safety_check(pipe.safety_checker, pipe.feature_extractor, pixels))[0], 4
    )
    partial.save(post=encode)


def split_of_call(pipe: Any, batch: int, size: int, steps: int, device: str) -> dict[str, float]:
    """The pipeline call taken apart: text encoder, denoise (UNet + scheduler), VAE, safety, PNG."""
    import torch

    from serve_app.engine.render import device_safety_check, encode_images, to_uint8

    prompts = [PROMPT] * batch
    with torch.no_grad():
        text_s, (embeds, negative) = timed(lambda: pipe.encode_prompt(prompts, device, 1, True, None))
        context = torch.cat([negative, embeds])
        generator = torch.Generator("cpu").manual_seed(0)
        latents = torch.randn(batch, 4, size // 8, size // 8, generator=generator).to(device, embeds.dtype)

        def denoise() -> Any:
            scheduler = pipe.scheduler
            scheduler.set_timesteps(steps, device=device)
            x = latents * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                model_in = scheduler.scale_model_input(torch.cat([x] * 2), t)
                noise = pipe.unet(model_in, t, encoder_hidden_states=context).sample
                uncond, cond = noise.chunk(2)
                x = scheduler.step(uncond + 7.5 * (cond - uncond), t, x).prev_sample
            return x

        denoise_s, x = timed(denoise)
        vae_s, pixels = timed(lambda: pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample)
        safety_s, _ = timed(lambda: device_safety_check(pipe.safety_checker, pipe.feature_extractor, pixels))
        encode_s, _ = timed(lambda: encode_images(to_uint8(pixels), "PNG", None))
    return {
        "text_encoder": round(text_s, 4),
        "denoise": round(denoise_s, 4),
        "vae_decode": round(vae_s, 4),
        "safety": round(safety_s, 4),
        "encode": round(encode_s, 4),
    }


# --- served ------------------------------------------------------------------------------------------


class GpuSampler:
    """GPU busy % (NVML's utilisation: the share of time a kernel ran) and memory used, sampled."""

    def __init__(self, period_s: float = 0.1) -> None:
        self.busy: list[int] = []
        self.peak_used = 0
        self._stop = threading.Event()
        self._period = period_s
        self._handle: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # no NVML (a CPU machine): nothing sampled
            self._handle = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self.busy.append(int(rates.gpu))
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            self.peak_used = max(self.peak_used, int(memory.used))

    def __enter__(self) -> GpuSampler:
        if self._handle is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.busy:
            return {"gpu_busy_pct": None, "gpu_memory_used_peak_bytes": None}
        return {
            "gpu_busy_pct": round(sum(self.busy) / len(self.busy), 1),
            "gpu_memory_used_peak_bytes": self.peak_used,
        }


def aws_model_options(gpu: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """deployments/aws.yaml's model deployment options and app args, for one replica on this machine."""
    import yaml

    config = yaml.safe_load((ROOT / "deployments" / "aws.yaml").read_text())
    app = config["applications"][0]
    model = next(d for d in app["deployments"] if d["name"] == "DiffusionModel")
    options = {k: v for k, v in model.items() if k != "name"}
    options["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 1, "initial_replicas": 1}
    actor = dict(options.get("ray_actor_options", {}))
    if not gpu:
        actor["num_gpus"] = 0
    options["ray_actor_options"] = actor
    return options, app["args"]


def served_settings(model_dir: str, args_yaml: dict[str, Any], gpu: bool, data_dir: str, **extra: Any) -> Any:
    from serve_app.config.settings import AppSettings

    size = "512x512" if gpu else "64x64"
    keep = ("default_steps", "max_steps", "default_scheduler", "max_images", "request_timeout_s", "speed")
    values = {k: v for k, v in args_yaml.items() if k in keep}
    values.update(
        model=model_dir,
        device="cuda" if gpu else "cpu",
        default_size=size,
        min_size=64,
        image_store="local",
        data_dir=data_dir,
        max_images=1,
    )
    values.update(extra)
    return AppSettings(**values)


def start_ray(gpu: bool) -> None:
    import ray
    from ray import serve

    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        num_cpus=max(4, os.cpu_count() or 4),
        num_gpus=1 if gpu else 0,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": 8123})


def wait_ready(name: str, deadline: float) -> float:
    """Seconds until the application is RUNNING (serve.run's own wait, bounded by ``deadline``)."""
    from ray import serve

    started = time.monotonic()
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and str(status.status).endswith("RUNNING"):
            return time.monotonic() - started
        if status is not None and str(status.status).endswith("DEPLOY_FAILED"):
            raise RuntimeError(f"{name} failed to deploy: {status.message[:1500]}")
        time.sleep(0.2)
    raise TimeoutError(f"{name} not ready within the stage's deadline")


def ensure_model(raw: dict[str, Any], args: argparse.Namespace, gpu: bool) -> str:
    """The model folder the raw stage saved, or one saved now (a raw stage killed early saved none)."""
    if raw.get("model_dir") and (Path(raw["model_dir"]) / "model_index.json").exists():
        return str(raw["model_dir"])
    model_dir = Path(args.model_dir)
    if not (model_dir / "model_index.json").exists():
        arch, device, dtype = ("sd15", "cuda", "float16") if gpu else ("tiny", "cpu", "float32")
        build_sd(arch, device, dtype).save_pretrained(model_dir)
    return str(model_dir)


def stage_served(partial: Partial, state: dict[str, Any], args: argparse.Namespace, gpu: bool) -> None:
    import asyncio

    import httpx
    from ray import serve

    from bench.load import closed_loop
    from serve_app.app import compose

    raw = state["stages"].get("raw", {})
    model_dir = ensure_model(raw, args, gpu)
    deadline = time.monotonic() + (GPU_DEADLINES["served"] if gpu else CPU_DEADLINES["served"]) - 10
    options, app_args = aws_model_options(gpu)
    batch = options["user_config"]["max_batch_size"]
    loop_s = args.loop_s or (12.0 if gpu else 3.0)
    with tempfile.TemporaryDirectory(prefix="gpu-report-") as folder:
        settings = served_settings(
            model_dir, app_args, gpu, folder, default_steps=steps_for(args, gpu)
        )
        start_ray(gpu)
        try:
            began = time.monotonic()
            # serve.run waits without a limit; its unblocked form lets the stage bound the wait itself.
            serve._run(compose(settings, options), name="gpu-report", route_prefix="/", _blocking=False)
            wait_ready("gpu-report", deadline)
            partial.save(ready_s=round(time.monotonic() - began, 2), options=options, loop_s=loop_s)

            async def loops() -> list[dict[str, Any]]:
                rows = []
                async with httpx.AsyncClient(base_url="http://127.0.0.1:8123", timeout=120) as http:

                    async def send() -> int:
                        response = await http.get("/imagine", params={"prompt": PROMPT})
                        if response.status_code != 200:
                            raise RuntimeError(f"HTTP {response.status_code}")
                        return 1

                    for concurrency in (1, 4, 16):
                        if time.monotonic() + loop_s + 5 > deadline:
                            rows.append({"concurrency": concurrency, "skipped": "stage deadline"})
                            continue
                        with GpuSampler() as sampler:
                            result = await closed_loop(send, concurrency, loop_s, f"c{concurrency}", 2.0)
                        row = result.summary()
                        row.pop("latencies_s")
                        row.update(sampler.summary())
                        rows.append(row)
                        partial.save(loops=rows)
                return rows

            rows = asyncio.run(loops())
            handle = serve.get_deployment_handle("DiffusionModel", app_name="gpu-report")
            batches = handle.batch_log.remote().result()
            replica = handle.describe.remote().result()
        finally:
            serve.shutdown()
    measured = [r for r in rows if "images_per_s" in r]
    top = max(measured, key=lambda r: r["concurrency"]) if measured else None
    raw_rows = {r["batch"]: r for r in raw.get("batches", [])}
    raw_at_batch = raw_rows.get(batch) or (
        max(raw_rows.values(), key=lambda r: r["batch"]) if raw_rows else None
    )
    full = [b for b in batches if b.get("size") == batch and b.get("stages_s")]
    stage_split = (
        {key: round(sum(b["stages_s"][key] for b in full) / len(full), 4) for key in full[0]["stages_s"]}
        if full
        else None
    )
    partial.save(
        served_images_per_s=top["images_per_s"] if top else None,
        raw_images_per_s=raw_at_batch["images_per_s"] if raw_at_batch else None,
        raw_batch=raw_at_batch["batch"] if raw_at_batch else None,
        served_over_raw=round(top["images_per_s"] / raw_at_batch["images_per_s"], 3)
        if top and raw_at_batch
        else None,
        gpu_busy_pct=top.get("gpu_busy_pct") if top else None,
        replica_peak_gpu_bytes=replica.get("gpu_peak_bytes"),
        batch_sizes_seen=sorted({b.get("size") for b in batches}),
        full_batch_stage_split_s=stage_split,
        full_batches=len(full),
        replica={k: replica.get(k) for k in ("device", "dtype", "attention", "recipes", "max_batch_size")},
    )


def stage_compiled(partial: Partial, state: dict[str, Any], args: argparse.Namespace, gpu: bool) -> None:
    import asyncio

    import httpx
    from ray import serve

    from serve_app.app import compose

    raw = state["stages"].get("raw", {})
    model_dir = ensure_model(raw, args, gpu)
    deadline = time.monotonic() + (GPU_DEADLINES["compiled"] if gpu else CPU_DEADLINES["compiled"]) - 10
    options, app_args = aws_model_options(gpu)
    size = 512 if gpu else 64
    speed = {
        "size_buckets": [f"{size}x{size}"],
        # Two shapes: each is a full inductor compile of the UNet (about a minute on a GPU machine).
        "batch_buckets": [1, 2],
        "compile_mode": "default",
        "compile_vae": False,
        "compile_backend": "inductor" if gpu else "eager",
        "compile_on_cpu": not gpu,
    }
    options["user_config"] = {**options["user_config"], "max_batch_size": 2}
    with tempfile.TemporaryDirectory(prefix="gpu-report-") as folder:
        settings = served_settings(
            model_dir,
            app_args,
            gpu,
            folder,
            compile=True,
            speed=speed,
            default_steps=steps_for(args, gpu),
        )
        start_ray(gpu)
        try:
            began = time.monotonic()
            serve._run(compose(settings, options), name="compiled", route_prefix="/", _blocking=False)
            # Saved first: a warm-up longer than the stage's deadline still says what it was doing.
            partial.save(speed=speed, warming_up="until ready or killed at the deadline")
            ready_s = wait_ready("compiled", deadline)
            partial.save(ready_s=round(ready_s, 2), warming_up=None)
            handle = serve.get_deployment_handle("DiffusionModel", app_name="compiled")
            partial.save(compile_after_ready=handle.describe.remote().result().get("compile"))

            async def burst() -> dict[str, int]:
                # Bucketed sizes, padded batches (3 -> 4), one size outside the buckets (eager), and a
                # guidance of 0 (a UNet batch warm-up never saw).
                odd = size + 64
                params = [{"prompt": f"p{i}"} for i in range(7)]
                params += [
                    {"prompt": "outside", "size": f"{odd}x{odd}"},
                    {"prompt": "g0", "guidance_scale": 0},
                ]
                codes: dict[str, int] = {}
                async with httpx.AsyncClient(base_url="http://127.0.0.1:8123", timeout=120) as http:
                    responses = await asyncio.gather(*(http.get("/imagine", params=p) for p in params))
                for response in responses:
                    codes[str(response.status_code)] = codes.get(str(response.status_code), 0) + 1
                return codes

            burst_s, codes = timed(lambda: asyncio.run(burst()))
            report = handle.describe.remote().result().get("compile") or {}
            partial.save(
                burst_s=round(burst_s, 2),
                burst_status=codes,
                compile=report,
                warmup_s=report.get("warmup_seconds"),
                graphs_compiled_since_ready=report.get("graphs_compiled_since_ready"),
                eager_fallbacks=report.get("eager_fallbacks"),
                total_s=round(time.monotonic() - began, 2),
            )
        finally:
            serve.shutdown()


# --- SDXL and cost -------------------------------------------------------------------------------


def stage_sdxl(partial: Partial, state: dict[str, Any], args: argparse.Namespace, gpu: bool) -> None:
    import torch

    from serve_app.testing.random_weights import build_random_pipeline

    if not gpu:
        partial.save(skipped="no CUDA: SDXL at 1024x1024 is a GPU measurement")
        return
    steps = 20
    build_s, pipe = timed(lambda: build_random_pipeline("sdxl", "cuda", "float16"))
    partial.save(steps=steps, size=1024, build_s=round(build_s, 2))

    def call() -> Any:
        generator = torch.Generator("cpu").manual_seed(0)
        return pipe(PROMPT, width=1024, height=1024, num_inference_steps=steps, generator=generator)

    for label, dtype, upcast in (("fp16", torch.float16, True), ("bf16", torch.bfloat16, False)):
        pipe.to(dtype=dtype)
        # SDXL's VAE overflows in fp16: diffusers upcasts it to fp32 on every call (force_upcast).
        pipe.vae.register_to_config(force_upcast=upcast)
        torch.cuda.reset_peak_memory_stats()
        timed(call)
        seconds = sorted(timed(call)[0] for _ in range(2))
        partial.save(
            **{
                f"{label}_s": round(seconds[0], 3),
                f"{label}_peak_gpu_bytes": torch.cuda.max_memory_allocated(),
            }
        )


def stage_cost(partial: Partial, state: dict[str, Any], args: argparse.Namespace, gpu: bool) -> None:
    served = state["stages"].get("served", {})
    raw = state["stages"].get("raw", {})
    rows = []
    for price in args.price:
        name, _, dollars = price.partition("=")
        per_hour = float(dollars)
        row: dict[str, Any] = {"name": name, "dollars_per_hour": per_hour}
        for key, rate in (
            ("served", served.get("served_images_per_s")),
            ("raw", raw.get("best_images_per_s")),
        ):
            row[f"{key}_images_per_dollar"] = round(rate * 3600 / per_hour) if rate else None
        rows.append(row)
    partial.save(prices=rows, note="images per dollar = images/s x 3600 / ($ per hour)")


if __name__ == "__main__":
    sys.exit(main())
