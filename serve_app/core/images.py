"""What one image costs to ask for and what comes back: the messages between ingress and model.

Words used across the code: an ``ImageSpec`` is one image to render (a request for ``n`` images
becomes ``n`` specs, so batches fill across callers); a job (``serve_app/jobs/``) is an accepted,
stored request that a runner takes to a terminal state, holding the specs of its images.

Plain dataclasses, because they cross actor boundaries through Ray's pickling on every request;
validation happens once at the HTTP edge (pydantic) before a spec is built.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_SEED = 2**32 - 1

# What a job starts from. txt2img: noise. img2img: ``init_image`` noised to ``strength``.
# inpaint: ``init_image`` repainted where ``mask_image`` is white. upscale: ``init_image`` resized
# by the ingress to the output size, then refined by a low-strength img2img pass ("hires fix").
ImageKind = Literal["txt2img", "img2img", "inpaint", "upscale"]


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True)
class ImageSpec:
    """One image. A request for ``n`` images becomes ``n`` jobs, so batches fill across callers."""

    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: str
    seed: int
    negative_prompt: str = ""
    kind: ImageKind = "txt2img"
    # PNG bytes decoded, validated and resized to (width, height) by the ingress: a replica never
    # parses what a caller uploaded. The mask is single-channel, white = repaint.
    init_image: bytes | None = None
    mask_image: bytes | None = None
    strength: float = 1.0  # how far from the init image (0: unchanged, 1: ignore it)
    # The catalogue entry (serve_app/config/catalogue.py) and the LoRA set, canonical (sorted, no
    # zero weights): also the Serve multiplexed model id the ingress routes the job by.
    model: str = ""
    loras: tuple[tuple[str, float], ...] = ()
    # FLUX.1's "true" classifier-free guidance: above 1 it runs a second pass per step with the
    # negative prompt (1: off; families without it never get another value: core/params.py).
    true_cfg_scale: float = 1.0
    # Who asked (an API key's name, ``discord-<user id>``, ``ip-<address>``), and that caller's
    # weight and priority: the model replica shares its queue fairly across callers
    # (serve_app/engine/fair_order.py). Never part of group_key: a batch still fills from many.
    caller: str = ""
    caller_weight: float = 1.0
    caller_priority: int = 0

    def __post_init__(self) -> None:
        # Job records store JSON, which gives lists back: keep the key hashable.
        object.__setattr__(self, "loras", tuple((str(n), float(w)) for n, w in self.loras))

    @property
    def group_key(self) -> tuple[object, ...]:
        """Jobs with equal keys can share one pipeline call; anything else needs its own.

        Model and LoRA set first: one call runs one checkpoint with one set of adapter weights
        (Serve already splits batches by multiplexed model id; this also keeps LoRA sets apart).
        Kind and strength: one diffusers call runs one pipeline class, and strength sets how many
        of the steps run.
        """
        return (
            self.model,
            self.loras,
            self.kind,
            self.width,
            self.height,
            self.steps,
            self.guidance_scale,
            self.scheduler,
            self.strength,
            self.true_cfg_scale,
        )

    def __repr__(self) -> str:  # keep image bytes out of logs and error messages
        images = f", init_image={len(self.init_image)}B" if self.init_image else ""
        images += f", mask_image={len(self.mask_image)}B" if self.mask_image else ""
        return (
            f"ImageSpec(model={self.model!r}, loras={self.loras!r}, kind={self.kind!r}, "
            f"prompt={self.prompt[:40]!r}, size={self.width}x{self.height}, "
            f"steps={self.steps}, seed={self.seed}, strength={self.strength}{images})"
        )


@dataclass(frozen=True)
class ImageResult:
    png: bytes
    seed: int
    width: int
    height: int
    steps: int
    queue_s: float
    render_s: float
    batch_size: int
    # The model's safety checker flagged the image; ``png`` is then its blacked-out copy, never to be
    # handed out as a result.
    nsfw_content_detected: bool = False
    # The rendering replica's describe() at the time: how /v1/models learns about replicas without
    # calling one (which would wake a model scaled to zero).
    replica: dict[str, Any] | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """Streamed to callers that want to show progress (the Discord bot, async jobs)."""

    state: Literal["queued", "rendering"]
    step: int = 0
    total: int = 0
    # A small JPEG of the image at this step, when the model has a preview decoder configured
    # (serve_app/engine/previews.py); only on some steps.
    preview: bytes | None = None
    # While queued, the job's real place on the model replica holding it: images waiting or
    # rendering there before it, and the seconds until its image is ready at that replica's
    # measured speed (None before it measured one). None until the replica's queue took the job.
    ahead: int | None = None
    expected_wait_s: float | None = None

    def __repr__(self) -> str:  # keep preview bytes out of logs
        preview = f", preview={len(self.preview)}B" if self.preview else ""
        place = ""
        if self.ahead is not None:
            place = f", ahead={self.ahead}, expected_wait_s={self.expected_wait_s}"
        return f"ProgressEvent(state={self.state!r}, step={self.step}, total={self.total}{place}{preview})"


@dataclass
class RenderTicket:
    """A job's link between its caller and the pipeline's worker thread.

    Carries step progress back onto the replica's event loop (when the caller streams it), and the
    caller's cancellation forward, so a render nobody waits for any more stops between steps.
    """

    loop: asyncio.AbstractEventLoop
    wants_progress: bool = False
    cancelled: bool = False
    accepted_at: float = field(default_factory=time.perf_counter)
    queue: asyncio.Queue[ProgressEvent] = field(default_factory=asyncio.Queue)

    def report(self, event: ProgressEvent) -> None:
        if self.wants_progress:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
