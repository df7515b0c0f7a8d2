"""The batched, multiplexed model deployment: catalogue models per replica, batches across callers.

Request flow inside a replica::

    generate(job) / generate_stream(job)     one image, from any caller (HTTP, Discord, jobs)
        -> _render_batch([job, ...])         @serve.batch collects jobs for batch_wait_timeout_s
            -> _render_forever()             takes a batch (<= max_batch_size) from the whole queue:
                                             the first job's group filled first (take_batch)
                -> group_indices(...)        one group per (model, LoRAs, size, steps, guidance, ...)
                    -> _get_model(name)      Serve's multiplexing LRU: loaded here, or loaded now
                        -> _run_group in the pipeline thread   stage 1: LoRAs set, the denoise
                        -> Finisher.finish in its own thread   stage 2: decode, safety, encode
                                                               (serve_app/engine/render.py)

The pipeline call runs in a worker thread so the replica keeps answering health checks, metrics
and new requests (which queue up for the next batch) while the GPU or CPU is busy. Only one
denoise runs at a time: diffusers schedulers keep per-call state and are not thread-safe. Stage 2
of a batch overlaps stage 1 of the next, so the GPU never waits for the CPU's PNG encoding; only
the denoise stage holds the pipeline lock.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psutil
from ray import serve
from ray.serve import metrics

from serve_app.config.settings import AppSettings, BatchingSettings
from serve_app.core.images import ImageResult, ImageSpec, ProgressEvent, RenderTicket
from serve_app.core.shapes import (
    PipelineCall,
    dynamo_counters,
    pad_jobs,
    plan_calls,
    shape_policy,
    warmup_shapes,
)
from serve_app.engine.batch_groups import group_indices, take_batch
from serve_app.engine.fair_order import FairOrder, OrderKey, Share
from serve_app.engine.model.loaded import AdapterLoadError, LoadedModel
from serve_app.engine.model.loading import plan_runtime
from serve_app.engine.render import Denoised as _Denoised
from serve_app.engine.render import Finisher, decode_latents
from serve_app.engine.render_health import RenderHealth
from serve_app.engine.render_queue import ReplicaQueue
from serve_app.engine.speed_recipes import compile_cache_dir, use_compile_cache
from serve_app.engine.step_progress import requested_step
from serve_app.ops import metrics as service_metrics

logger = logging.getLogger("ray.serve")

BATCH_LOG_LENGTH = 1000


def torch_thread_count(configured: int | None) -> int:
    """Threads for torch: the configured count, else the CPUs Ray assigned to this replica.

    Ray workers inherit OMP_NUM_THREADS from whatever worker process they reuse, so the count torch
    starts with is not reliable; set it explicitly from what the replica was given.
    """
    if configured:
        return configured
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, round(assigned))


# Calls denoised and waiting for (or in) their finish stage: one finishing while one waits keeps the
# finisher busy; more would only hold latents in GPU memory.
FINISH_BACKLOG = 2
# Progress events per job: at most one per interval (plus the last step and every preview), not one
# per step per image: a 1-step model at batch 8 otherwise floods the event loop and every stream.
PROGRESS_INTERVAL_S = 0.25

# Batches Serve may hand over while the pipeline is busy; each holds at least one request, so
# this only needs to exceed max_ongoing_requests.
MAX_WAITING_BATCHES = 256


@dataclass
class _Waiting:
    job: ImageSpec
    ticket: RenderTicket
    result: asyncio.Future[ImageResult | BaseException]
    told_ahead: int | None = None  # the place last streamed to its caller
    order: OrderKey = (0, 0.0, 0)  # its place in the fair order (serve_app/engine/fair_order.py)


def _gpu_peak_bytes(device: str) -> int | None:
    """The replica's peak CUDA memory since it started (None off CUDA): what sizes max_batch_size."""
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated())


class _NotRendered(RuntimeError):
    """A result slot not filled yet: its image is still being finished, or was never rendered."""


def _raise_if_failed(result: ImageResult | BaseException) -> ImageResult:
    if isinstance(result, BaseException):
        raise result
    return result


@serve.deployment(
    ray_actor_options={"num_cpus": 1, "num_gpus": 0},
    # The replica holds what waits for it, because fairness is decided in its own queue
    # (serve_app/engine/fair_order.py): Serve's router queue in front of it is first come, first
    # served, so a flood parked there would delay every caller behind it. Each waiting request
    # costs only its ImageSpec (an init image at most: max_input_bytes).
    max_ongoing_requests=256,
    # Bounded: past this, callers get BackPressureError -> HTTP 503 with Retry-After.
    max_queued_requests=64,
    autoscaling_config={
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 8,
    },
    health_check_period_s=10,
    health_check_timeout_s=60,
    # Batching reaches a replica only as user_config, so Serve hands it to reconfigure() before the
    # replica takes a request, and a `serve deploy` that changes it retunes live replicas. These
    # are BatchingSettings' defaults; serve_app/app.py sends the config file's.
    user_config=BatchingSettings().model_dump(),
)
class DiffusionModel:
    # Async: the default model loads in the pipeline thread through Serve's multiplexing (so Serve
    # knows this replica holds it) while the replica's event loop stays free.
    async def __init__(  # type: ignore[misc]
        self, settings: AppSettings, gpu_class: str | None = None
    ) -> None:
        import torch

        self._torch_threads = torch_thread_count(settings.torch_threads)
        torch.set_num_threads(self._torch_threads)
        self._settings = settings
        self._catalogue = settings.catalogue
        # One deployment per GPU class (serve_app/app.py): a replica serves its class's models and
        # starts with the first of them (the catalogue's default in the default class).
        self._gpu_class = gpu_class or self._catalogue.default.gpu_class
        self._default_model = self._catalogue.class_default(self._gpu_class)
        # Device, dtype and compile are the same for every model of the replica.
        self._plan = plan_runtime(settings.for_model(self._default_model))
        # Shapes are compiled at warm-up (reconfigure, once the pixel budget from user_config is
        # known); the recompile limit must already cover every bucket then.
        self._bucket_count = len(warmup_shapes(shape_policy(settings, self._plan.compile)))
        if self._plan.compile:
            use_compile_cache(compile_cache_dir(settings.speed, settings.model_cache_dir))
        # Exported as ray_raydiffusion_graphs_compiled_since_ready: anything but 0 on a compiled
        # replica means a request paid for a compile (or ran eagerly) after warm-up.
        self._graphs_gauge = metrics.Gauge(
            "raydiffusion_graphs_compiled_since_ready",
            description="torch.compile graphs dynamo built after the replica's warm-up.",
        )
        self._graphs_at_ready: int | None = None
        self._recompiles_at_ready: int | None = None
        # Calls a compiled replica ran eagerly (a size outside its buckets): a hidden slowdown unless
        # counted. Exported as ray_raydiffusion_eager_fallbacks and in /v1/models.
        self._eager_calls = 0
        self._eager_counter = metrics.Counter(
            "raydiffusion_eager_fallbacks",
            description="Pipeline calls a compiled replica ran eagerly (outside its compiled shapes).",
        )
        self._call_lock = threading.Lock()
        # The render's second stage (serve_app/engine/render.py): decode, safety and encode of one
        # batch overlap the next batch's denoise. Its encoding pool shares the replica's CPUs.
        self._finisher = Finisher(self._plan.device, encode_threads=max(2, self._torch_threads))
        self._finishing: deque[asyncio.Task[None]] = deque()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._denoise_stream: Any = None
        if self._plan.device == "cuda":
            self._denoise_stream = torch.cuda.Stream()
        # One long-lived thread for every pipeline call and model load: OpenMP keeps a thread team
        # (and the thread count) per calling thread, so a pool of threads would each build and spin
        # their own; and a load never overlaps a render (GPU memory peaks stay apart).
        self._pipeline_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
        self._batch_log: deque[dict[str, Any]] = deque(maxlen=BATCH_LOG_LENGTH)
        self._images_rendered = 0
        self._health = RenderHealth(settings.unhealthy_after_failed_renders)
        # Set by reconfigure(), which Serve calls before the replica takes its first request.
        self._batching: BatchingSettings | None = None
        self._waiting: list[_Waiting] = []
        self._waiting_changed = asyncio.Event()
        self._render_loop: asyncio.Task[None] | None = None
        self._queue = ReplicaQueue()  # places and waits told to the callers in _waiting
        self._fair = FairOrder()  # _waiting is kept sorted by it: callers served round-robin
        # Models this replica holds, by name (Serve's LRU cache holds the same objects).
        self._loaded: dict[str, LoadedModel] = {}
        self._load_log: deque[dict[str, Any]] = deque(maxlen=BATCH_LOG_LENGTH)

        async def load_model(model_id: str) -> LoadedModel:
            return await self._load_model(model_id)

        # Ray Serve multiplexing: requests carry the model as their multiplexed model id, Serve's
        # router prefers a replica that already holds it, and past max_num_models_per_replica the
        # least recently used model is unloaded (LoadedModel.__del__) before another loads. The
        # limit comes from the config file, so the decorator is applied here, not on a method.
        self._get_model = serve.multiplexed(max_num_models_per_replica=settings.max_models_per_replica)(
            load_model
        )
        await self._get_model(self._default_model)
        logger.info(
            "replica ready: %s, %d torch threads, default model %s",
            self._plan,
            torch.get_num_threads(),
            self._default_model,
        )

    async def _load_model(self, name: str) -> LoadedModel:
        entry = self._catalogue.entries.get(name)
        if entry is None or entry.gpu_class != self._gpu_class:
            raise ValueError(f"model {name!r} is not in the catalogue: {', '.join(self._catalogue.names)}")
        started = time.time()
        model = await asyncio.get_running_loop().run_in_executor(
            self._pipeline_thread,
            lambda: LoadedModel(
                name, self._settings.for_model(name), self._bucket_count, self._forget
            ),
        )
        self._loaded[name] = model
        self._load_log.append({"at": started, "model": name, "load_s": round(model.load_s, 3)})
        if self._plan.compile and self._batching is not None:
            await asyncio.get_running_loop().run_in_executor(self._pipeline_thread, self._warm_up, model)
        return model

    # --- Serve hooks -------------------------------------------------------------------------

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Retune batching live: `serve deploy` with a new user_config needs no replica restart.

        Serve calls this before the replica reports ready, so a compiled replica warms up its shapes
        here (their batch sizes depend on the pixel budget, which arrives with user_config).
        """
        batching = BatchingSettings.model_validate(user_config or {})
        self._render_batch.set_max_batch_size(batching.max_batch_size)
        self._render_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        # From here on a model loaded later warms up its compiled shapes for this pixel budget at
        # once; the ones loaded before are warmed up below.
        self._batching = batching
        if self._plan.compile:
            for model in list(self._loaded.values()):
                self._pipeline_thread.submit(self._warm_up, model).result()

    def check_health(self) -> None:
        # No "is a model loaded" check: a catalogue entry that fails to load (after Serve evicted
        # the others to make room) fails its requests, not the replica every other model runs on.
        self._health.check()

    # --- public methods, called through DeploymentHandle ------------------------------------

    async def generate(self, job: ImageSpec) -> ImageResult:
        ticket = RenderTicket(loop=asyncio.get_running_loop())
        try:
            return _raise_if_failed(await self._render_batch(job, ticket))
        except asyncio.CancelledError:
            ticket.cancelled = True
            self._tell_places()  # the callers behind it moved up
            raise

    async def generate_stream(self, job: ImageSpec) -> AsyncIterator[ProgressEvent | ImageResult]:
        """Progress events while the job waits and renders, then the ImageResult last.

        Call with ``handle.options(stream=True)``. Used by callers that show progress to people.
        """
        ticket = RenderTicket(loop=asyncio.get_running_loop(), wants_progress=True)
        render = asyncio.ensure_future(self._render_batch(job, ticket))
        yield ProgressEvent(state="queued", total=job.steps)
        try:
            while not render.done():
                next_event = asyncio.ensure_future(ticket.queue.get())
                await asyncio.wait({render, next_event}, return_when=asyncio.FIRST_COMPLETED)
                if next_event.done():
                    yield next_event.result()
                else:
                    next_event.cancel()
            yield _raise_if_failed(render.result())
        finally:
            if not render.done():
                ticket.cancelled = True
                render.cancel()
                self._tell_places()  # the callers behind it moved up

    def describe(self, model: LoadedModel | None = None) -> dict[str, Any]:
        """What /v1/models reports: a model (default: the default one), where it runs, how it batches."""
        model = model or self._loaded.get(self._default_model) or next(iter(self._loaded.values()), None)
        return {
            **(model.describe() if model is not None else {"model": None}),
            "models_loaded": sorted(self._loaded),
            "max_models_per_replica": self._settings.max_models_per_replica,
            "torch_threads": self._torch_threads,
            "max_batch_size": self.batching.max_batch_size,
            "batch_wait_timeout_s": self.batching.batch_wait_timeout_s,
            "max_batch_pixels": self.batching.max_batch_pixels or None,
            "compile": self._compile_report(model),
            "images_rendered": self._images_rendered,
            "rss_bytes": psutil.Process().memory_info().rss,
            "consecutive_failed_renders": self._health.consecutive_failures,
            "gpu_peak_bytes": _gpu_peak_bytes(self._plan.device),
        }

    def _compile_report(self, model: LoadedModel | None) -> dict[str, Any] | None:
        """Warm-up and dynamo's counters: graphs compiled since ready should stay at 0."""
        if not self._plan.compile or model is None:
            return None
        counters = dynamo_counters()
        ready = self._graphs_at_ready
        return {
            "warmed_shapes": [f"{w}x{h}x{b}" for w, h, b in sorted(model.warmed)],
            "warmup_seconds": round(model.warmup_s, 3),
            "outside_buckets": self._settings.speed.outside_buckets,
            "graphs_compiled": counters["unique_graphs"],
            "graphs_compiled_since_ready": None if ready is None else counters["unique_graphs"] - ready,
            "recompiles_since_ready": None
            if self._recompiles_at_ready is None
            else counters["recompiles"] - self._recompiles_at_ready,
            # Calls run eagerly on purpose (outside the buckets), so no request waits for a compile.
            "eager_fallbacks": self._eager_calls,
            "dynamo": counters,
        }

    def _warm_up(self, model: LoadedModel) -> None:
        """Compile each (size bucket, batch bucket) shape of ``model`` not yet compiled (pipeline thread)."""
        import torch

        torch.set_num_threads(self._torch_threads)
        policy = shape_policy(model.settings, True, self.batching.max_batch_pixels)
        started = time.perf_counter()
        settings = model.settings
        with self._call_lock, model.in_use():
            torch.compiler.set_stance("default")
            for width, height, batch in warmup_shapes(policy):
                if (width, height, batch) in model.warmed:
                    continue
                shape_started = time.perf_counter()
                job = ImageSpec(
                    prompt="warm-up",
                    width=width,
                    height=height,
                    steps=2,
                    guidance_scale=settings.default_guidance_scale,
                    scheduler=settings.default_scheduler,
                    seed=0,
                    model=model.name,
                )
                scheduler = model.schedulers.use(job.scheduler)
                model.adapters.activate(())
                generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
                # The same two stages a request runs: denoise to latents, then the finish stage's
                # decode, so the compiled decoder is traced with the arguments serving passes it.
                latent = model.tasks.stops_at_latents(job.kind)
                output = model.tasks(
                    [job] * batch,
                    generators,
                    lambda *args: args[-1],
                    scheduler,
                    output_type="latent" if latent else "pil",
                )
                if latent:
                    tiling_above = settings.vae_tiling_pixels
                    tiled = bool(tiling_above) and width * height > tiling_above
                    decode_latents(model.finish_vae(), output.images, tiled)
                model.warmed.add((width, height, batch))
                took = time.perf_counter() - shape_started
                logger.info("compiled %s %dx%d x%d in %.1fs", model.name, width, height, batch, took)
            if not settings.speed.recompile_while_serving:
                # A shape warm-up missed (another scheduler's timestep dtype, guidance 0 halving the
                # UNet batch) then runs eagerly: never a compile pause inside a request.
                torch.compiler.set_stance("eager_on_recompile")
        model.warmup_s += time.perf_counter() - started
        counters = dynamo_counters()
        self._graphs_at_ready = counters["unique_graphs"]
        self._recompiles_at_ready = counters["recompiles"]

    def _plan_calls(self, model: LoadedModel, count: int, width: int, height: int) -> list[PipelineCall]:
        policy = shape_policy(model.settings, self._plan.compile, self.batching.max_batch_pixels)
        return plan_calls(count, width, height, policy)

    def _model_name(self, job: ImageSpec) -> str:
        return job.model or self._default_model

    def load_log(self) -> list[dict[str, Any]]:
        """Models this replica loaded, in order (an evicted model loaded again appears twice)."""
        return list(self._load_log)

    def _forget(self, model: LoadedModel) -> None:
        if self._loaded.get(model.name) is model:
            del self._loaded[model.name]

    def batch_log(self) -> list[dict[str, Any]]:
        """Recent batches as run: sizes and groups. Tests and benchmarks read batching from here."""
        return list(self._batch_log)

    # --- batching ----------------------------------------------------------------------------

    @property
    def batching(self) -> BatchingSettings:
        """The user_config reconfigure() applied (always before the first request)."""
        assert self._batching is not None, "Serve calls reconfigure() before any request"
        return self._batching

    # Why @serve.batch feeds a render queue instead of rendering its batch: Serve forms batches
    # eagerly, so while one pipeline call runs, arrivals are cut into a batch per wait window, and
    # with one batch at a time those would render one by one as fragments (seen: batches of 1 at
    # 16 concurrent callers). So Serve's batch is only the collection window (its size and wait
    # are set by reconfigure); every batch it forms joins one render loop that takes everything
    # waiting (up to max_batch_size) each time the pipeline frees up.
    @serve.batch(max_concurrent_batches=MAX_WAITING_BATCHES)
    async def _render_batch(
        self, jobs: list[ImageSpec], tickets: list[RenderTicket]
    ) -> list[ImageResult | BaseException]:
        loop = asyncio.get_running_loop()
        waiting = [
            _Waiting(job, ticket, loop.create_future()) for job, ticket in zip(jobs, tickets, strict=True)
        ]
        for w in waiting:
            # Fair shares, not arrival order: _waiting stays sorted by each image's fair-order key,
            # so the render loop's batches (taken from the front) and the places told to callers
            # both follow it (serve_app/engine/fair_order.py).
            w.order = self._fair.key(Share(w.job.caller, w.job.caller_weight, w.job.caller_priority))
            bisect.insort(self._waiting, w, key=lambda item: item.order)
        service_metrics.queue_depth(len(self._waiting))
        self._tell_places()
        self._waiting_changed.set()
        if self._render_loop is None or self._render_loop.done():
            self._render_loop = asyncio.create_task(self._render_forever())
        return list(await asyncio.gather(*(w.result for w in waiting)))

    async def _render_forever(self) -> None:
        while True:
            await self._waiting_changed.wait()
            self._waiting_changed.clear()
            while self._waiting:
                # The oldest (fair-order first) job's group filled from the whole waiting queue, then
                # the next jobs in order: fuller pipeline calls without passing anyone's turn.
                picked = take_batch([w.job.group_key for w in self._waiting], self.batching.max_batch_size)
                chosen = set(picked)
                taken = [self._waiting[i] for i in picked]
                self._waiting = [w for i, w in enumerate(self._waiting) if i not in chosen]
                self._fair.taken([w.order for w in taken])
                service_metrics.queue_depth(len(self._waiting))
                live = [w for w in taken if not w.ticket.cancelled]
                for w in taken:
                    if w.ticket.cancelled:
                        w.result.set_result(asyncio.CancelledError())
                        self._count_images([w.job], "canceled")
                if not live:
                    continue
                self._queue.batch_started([w.job for w in live], [w.ticket for w in live])
                self._tell_places()
                finishing: list[asyncio.Task[None]] = []
                try:
                    results = await self._render_jobs(
                        [w.job for w in live], [w.ticket for w in live], finishing
                    )
                except Exception as error:  # never let one batch stop the loop
                    logger.exception("render loop iteration failed")
                    results = [error] * len(live)
                # Denoised: the pipeline is free for the next batch while this one is finished. The
                # replica's speed is the denoise stage's (the GPU's), which is what the queue waits on.
                # Slots still being finished are not failures: without this the speed was never
                # measured, and every place told to callers came without a wait.
                failed = any(
                    isinstance(r, BaseException) and not isinstance(r, _NotRendered) for r in results
                )
                self._queue.batch_finished(not failed)
                delivery = asyncio.create_task(self._deliver(live, results, finishing))
                self._deliveries.add(delivery)  # held: the loop keeps only weak references to tasks
                delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(
        self,
        live: list[_Waiting],
        results: list[ImageResult | BaseException],
        finishing: list[asyncio.Task[None]],
    ) -> None:
        """Hand each caller its result once its call's finish stage (decode, safety, encode) is done."""
        await asyncio.gather(*finishing, return_exceptions=True)
        for w, result in zip(live, results, strict=True):
            if not w.result.done():
                w.result.set_result(result)

    def _tell_places(self) -> None:
        """Stream each waiting caller its place in this replica's queue, when it changed.

        Called whenever the queue moves: jobs arrive, the render loop takes a batch, a caller
        leaves. Callers of ``generate`` (no stream) are skipped: nobody would see it.
        """
        waiting = self._waiting
        places = self._queue.places([w.job for w in waiting], [w.ticket for w in waiting])
        for w, place in zip(waiting, places, strict=True):
            if place is None or not w.ticket.wants_progress or w.told_ahead == place.ahead:
                continue
            w.told_ahead = place.ahead
            w.ticket.report(
                ProgressEvent(
                    state="queued",
                    total=w.job.steps,
                    ahead=place.ahead,
                    expected_wait_s=place.expected_wait_s,
                )
            )

    async def _render_jobs(
        self,
        jobs: list[ImageSpec],
        tickets: list[RenderTicket],
        finishing: list[asyncio.Task[None]] | None = None,
    ) -> list[ImageResult | BaseException]:
        """Denoise one batch group by group; a failing group fails only its own callers.

        Returns once every call is denoised; each call's finish stage runs on as a task in
        ``finishing`` and fills its entries of the returned list (awaited here when not given).
        """
        own_finishing = finishing is None
        finishing = [] if finishing is None else finishing
        groups = group_indices(jobs)
        entry: dict[str, Any] = {
            "at": time.time(),
            "size": len(jobs),
            "groups": [len(group) for group in groups],
            "max_batch_size": self.batching.max_batch_size,
            "render_s": None,
            # Per group: steps asked for and steps run (fewer when every caller left and the
            # render was interrupted).
            "steps": [jobs[group[0]].steps for group in groups],
            "kinds": [jobs[group[0]].kind for group in groups],
            # Per group, every model and LoRA set its jobs asked for: one each, as a pipeline call
            # never mixes them (tests read this to prove it).
            "models": [sorted({self._model_name(jobs[i]) for i in group}) for group in groups],
            "loras": [
                sorted({",".join(f"{n}:{w:g}" for n, w in jobs[i].loras) for i in group}) for group in groups
            ],
            "steps_done": [0 for _ in groups],
            # Seconds per stage summed over the batch's calls: denoise (pipeline thread), then decode,
            # safety and encode (the finish stage, overlapping the next batch's denoise).
            "stages_s": {"denoise": 0.0, "decode": 0.0, "safety": 0.0, "encode": 0.0},
        }
        self._batch_log.append(entry)
        batch_started = time.perf_counter()
        results: list[ImageResult | BaseException] = []
        results.extend(_NotRendered("not rendered") for _ in jobs)
        # Per group: the batch size of each pipeline call, padding included (compiled buckets,
        # pixel budget: serve_app/core/shapes.py).
        entry["calls"] = [[] for _ in groups]
        for group_index, whole_group in enumerate(groups):
            first = jobs[whole_group[0]]
            try:
                # Loaded (or found in Serve's LRU cache) between pipeline calls, never during one.
                model = await self._get_model(self._model_name(first))
                calls = self._plan_calls(model, len(whole_group), first.width, first.height)
            except Exception as error:  # a model that fails to load, a size a compiled replica refuses
                if not isinstance(error, ValueError):
                    logger.exception("loading model %s failed", self._model_name(first))
                    self._count_images([jobs[i] for i in whole_group], "failed")
                for index in whole_group:
                    results[index] = error
                continue
            for call in calls:
                group = [whole_group[i] for i in call.indices]
                finish = await self._render_call(
                    model, jobs, tickets, group, call, results, entry, group_index
                )
                if finish is not None:
                    finishing.append(finish)
        entry["denoise_s"] = round(time.perf_counter() - batch_started, 4)
        if self._plan.compile and self._graphs_at_ready is not None:
            self._graphs_gauge.set(dynamo_counters()["unique_graphs"] - self._graphs_at_ready)
        calls = list(finishing)
        finishing.append(asyncio.create_task(self._batch_done(entry, batch_started, calls, results)))
        if own_finishing:
            await asyncio.gather(*finishing)
        return results

    async def _batch_done(
        self,
        entry: dict[str, Any],
        batch_started: float,
        finishing: list[asyncio.Task[None]],
        results: list[ImageResult | BaseException],
    ) -> None:
        await asyncio.gather(*finishing, return_exceptions=True)
        # Wall time of the whole batch, denoise to encoded images: the benchmark compares it with the
        # same batch called in-process to tell slow renders apart from serving overhead.
        entry["render_s"] = round(time.perf_counter() - batch_started, 4)
        entry["stages_s"] = {key: round(value, 4) for key, value in entry["stages_s"].items()}
        self._images_rendered += sum(isinstance(r, ImageResult) for r in results)

    async def _render_call(
        self,
        model: LoadedModel,
        jobs: list[ImageSpec],
        tickets: list[RenderTicket],
        group: list[int],
        call: PipelineCall,
        results: list[ImageResult | BaseException],
        entry: dict[str, Any],
        group_index: int,
    ) -> asyncio.Task[None] | None:
        """Denoise one pipeline call; return its finish stage, running on as a task (None: none)."""
        group_jobs = [jobs[i] for i in group]
        group_tickets = [tickets[i] for i in group]
        if all(ticket.cancelled for ticket in group_tickets):
            return None
        # Bounded overlap: latents wait on the device for at most FINISH_BACKLOG calls, so a finish
        # stage slower than the denoise (a one-step model's PNGs) holds the pipeline back instead of
        # piling up GPU memory.
        while len(self._finishing) >= FINISH_BACKLOG:
            await asyncio.wait({self._finishing[0]})
        entry["calls"][group_index].append(call.batch)
        render_started = time.perf_counter()
        # One hold on the model from the denoise to the finish stage's last image: Serve's LRU
        # evicts a model between the two (a later group loading another model into a full
        # replica), and the finish stage decodes with its weights.
        hold = contextlib.ExitStack()
        try:
            hold.enter_context(model.in_use())
            denoised = await asyncio.get_running_loop().run_in_executor(
                self._pipeline_thread, self._run_group, model, group_jobs, group_tickets, call
            )
        except Exception as error:
            hold.close()
            self._call_failed(error, group, group_jobs, results)
            return None
        entry["steps_done"][group_index] = max(entry["steps_done"][group_index], denoised.steps_done)
        entry["stages_s"]["denoise"] += denoised.denoise_s
        if denoised.preview_s:
            entry["preview_s"] = round(entry.get("preview_s", 0.0) + denoised.preview_s, 4)
        task = asyncio.create_task(
            self._finish_call(model, jobs, tickets, group, denoised, results, entry, render_started)
        )
        self._finishing.append(task)
        task.add_done_callback(self._finishing.remove)
        task.add_done_callback(lambda _task: hold.close())
        return task

    def _call_failed(
        self,
        error: Exception,
        group: list[int],
        group_jobs: list[ImageSpec],
        results: list[ImageResult | BaseException],
    ) -> None:
        logger.exception("pipeline call failed for %d image(s)", len(group), exc_info=error)
        if not isinstance(error, AdapterLoadError):  # a bad LoRA is no sign of a broken replica
            self._health.failed(error)
        for index in group:
            results[index] = error
        self._count_images(group_jobs, "failed")

    async def _finish_call(
        self,
        model: LoadedModel,
        jobs: list[ImageSpec],
        tickets: list[RenderTicket],
        group: list[int],
        denoised: _Denoised,
        results: list[ImageResult | BaseException],
        entry: dict[str, Any],
        render_started: float,
    ) -> None:
        """Stage two of a call (decode, safety, encode) in the finisher's thread, then the results."""
        group_jobs = [jobs[i] for i in group]
        group_tickets = [tickets[i] for i in group]
        first = group_jobs[0]
        tiling_above = model.settings.vae_tiling_pixels
        tiled = bool(tiling_above) and first.width * first.height > tiling_above
        try:

            def finish() -> Any:  # the model is held since the denoise (_render_call)
                return self._finisher.finish(
                    denoised,
                    model.finish_vae(),
                    model.safety_checker,
                    model.feature_extractor,
                    tiled,
                    self._torch_threads,
                )

            finished = await asyncio.get_running_loop().run_in_executor(self._finisher.thread, finish)
        except Exception as error:
            self._call_failed(error, group, group_jobs, results)
            return
        self._health.succeeded()
        for stage, seconds in finished.stages_s.items():
            entry["stages_s"][stage] = entry["stages_s"].get(stage, 0.0) + seconds
        render_s = denoised.denoise_s + sum(finished.stages_s.values())
        service_metrics.batch_rendered(
            len(group), render_s, [render_started - t.accepted_at for t in group_tickets]
        )
        # A render every caller left is interrupted between steps: not a success.
        interrupted = all(ticket.cancelled for ticket in group_tickets)
        self._count_images(group_jobs, "canceled" if interrupted else "succeeded")
        replica = self.describe(model)
        for index, (png, flagged) in zip(group, finished.images, strict=True):
            job = jobs[index]
            results[index] = ImageResult(
                png=png,
                seed=job.seed,
                width=job.width,
                height=job.height,
                steps=job.steps,
                queue_s=render_started - tickets[index].accepted_at,
                render_s=render_s,
                batch_size=len(group),
                nsfw_content_detected=flagged,
                replica=replica,
            )

    def _count_images(self, jobs: list[ImageSpec], outcome: str) -> None:
        for job in jobs:
            service_metrics.images_done(self._model_name(job), job.kind, outcome)

    def _run_group(
        self,
        model: LoadedModel,
        jobs: list[ImageSpec],
        tickets: list[RenderTicket],
        call: PipelineCall | None = None,
    ) -> _Denoised:
        """Stage one: the blocking denoise for jobs that share a group key (model, LoRAs, kind, size...).

        Padded up to ``call.batch`` with copies of the last job when the call runs a compiled
        shape; the finisher drops the copies before anything is decoded. Stops at latents where the
        pipeline can (serve_app/engine/render.py), so the decode runs in the finish stage.
        """
        import torch

        # Threads: OpenMP thread counts are per thread, and this thread starts with Ray's
        # OMP_NUM_THREADS (1 for a 1-CPU worker); set it here or the render runs single-threaded.
        torch.set_num_threads(self._torch_threads)
        first = jobs[0]
        real = len(jobs)
        previewer = model.previews
        if call is not None and call.padding:
            jobs = pad_jobs(jobs, call.batch)
        # CPU generators keep images equal across devices for a seed; the opt-in device generator
        # saves ancestral samplers a host-to-device copy of fresh noise each step (other images).
        noise_device = self._plan.device if model.settings.speed.device_generator else "cpu"
        generators = [torch.Generator(noise_device).manual_seed(job.seed) for job in jobs]
        done = [0]
        previewed = [0]  # the step last previewed (second-order schedulers repeat a step)
        preview_s = [0.0]
        reported = [0.0]  # when progress was last sent (coalesced: at most one per interval)

        def deliver_previews(previewer: Any, pending: Any) -> None:
            # Runs in the encode pool. The step reported is the render's current one, never less
            # than an event already sent: a caller's progress does not step back for a preview.
            for index, jpeg in previewer.encode(pending).items():
                tickets[index].report(
                    ProgressEvent(state="rendering", step=done[0], total=first.steps, preview=jpeg)
                )

        def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> dict:
            # No host sync in here (no .item(), no .cpu()): the next step's kernels are already queued.
            if all(ticket.cancelled for ticket in tickets):
                pipe._interrupt = True  # diffusers' documented way to stop between steps
            # Iterations, not steps: second-order schedulers run about two per requested step.
            iterations = getattr(pipe, "_num_timesteps", None) or len(pipe.scheduler.timesteps)
            done[0] = requested_step(step + 1, iterations, first.steps)
            # Only the rows of callers watching progress (never the padding rows).
            watching = [i for i, t in enumerate(tickets) if t.wants_progress and not t.cancelled]
            due = previewer and previewed[0] != done[0] and previewer.due(done[0], first.steps)
            if due and watching:
                previewed[0] = done[0]
                started = time.perf_counter()
                # Device work only; the size lets packed (FLUX) latents be unpacked. The JPEGs are
                # made in the encode pool and reported from there (serve_app/engine/previews.py).
                pending = previewer.pixels(  # type: ignore[union-attr]
                    kwargs["latents"], watching, first.width, first.height
                )
                preview_s[0] += time.perf_counter() - started
                if pending is not None:
                    self._finisher.encode_soon(deliver_previews, previewer, pending)
            now = time.perf_counter()
            if done[0] >= first.steps or now - reported[0] >= PROGRESS_INTERVAL_S:
                reported[0] = now
                for ticket in tickets:
                    ticket.report(ProgressEvent(state="rendering", step=done[0], total=first.steps))
            return kwargs

        latent = model.tasks.stops_at_latents(first.kind)
        stream = self._denoise_stream
        with self._call_lock, model.in_use():
            started = time.perf_counter()
            try:
                model.adapters.activate(first.loras)
            except Exception as error:  # a LoRA file that is missing or does not fit the model
                raise AdapterLoadError(f"LoRA for {model.name} failed to load: {error}") from error
            scheduler = model.schedulers.use(first.scheduler)
            # A compiled replica runs a size outside its buckets eagerly: no new graph mid-request.
            eager = self._plan.compile and call is not None and not call.compiled
            if eager:
                self._eager_calls += 1
                self._eager_counter.inc()
            with (
                torch.compiler.set_stance("force_eager") if eager else contextlib.nullcontext(),
                torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext(),
            ):
                output = model.tasks(
                    jobs, generators, on_step_end, scheduler, output_type="latent" if latent else "pil"
                )
                ready = None
                if stream is not None:
                    ready = torch.cuda.Event()
                    ready.record(stream)
            denoise_s = time.perf_counter() - started
        if latent:
            return _Denoised(
                real, denoise_s, done[0], preview_s[0], latents=output.images, ready=ready, eager=eager
            )
        # Pipelines with a safety checker black out flagged images and say which; others say None.
        flags = getattr(output, "nsfw_content_detected", None) or [False] * len(output.images)
        images = list(output.images)
        return _Denoised(real, denoise_s, done[0], preview_s[0], images=images, flags=list(flags))
