"""Job records ("predictions", after Replicate's API) and the store that keeps them.

A job is accepted once its record, with every seed already resolved, is in the store: any ingress
replica (or one restarted after a crash) can then answer for it, see a cancel, or adopt it. The
store is shared by replicas that do not talk to each other, so everything that two of them may do
at once is a write that cannot undo the other's:

- the running replica rewrites the record (progress, heartbeat) about once a second, so a cancel
  request is a separate marker key it never writes: no heartbeat can overwrite a cancel;
- adopting a stale job is creating the next lease key, which only one replica can create
  (``ImageStore.create_json``: a hard link locally, a conditional put on S3).

A job that starts from a picture keeps that picture out of its record: the record is rewritten
about once a second and JSON holds no bytes. Each distinct input image is written once, before
the record, under ``inputs/<prediction id>/``, and the record's jobs name its key; whoever runs the
job (fresh, retried or adopted) reads it back, and it is deleted once the job is terminal.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from serve_app.config.settings import AppSettings
from serve_app.core.errors import GenerationFailedError
from serve_app.core.images import ImageSpec
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.jobs.queue_position import QueueInfo
from serve_app.storage import ImageStore

Status = Literal["starting", "processing", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
# Ours are "pred_" + 20 hex digits; the bound keeps any id a valid file name and S3 key (a longer
# one would be ENAMETOOLONG on the local store, a 503 instead of the 404 it is).
# Always used with fullmatch: ``match`` with ``$`` would accept a trailing newline, which then
# becomes part of a file name or S3 key. ``\Z`` keeps a stray ``match`` safe too.
PREDICTION_ID = re.compile(r"pred_[A-Za-z0-9]{1,64}\Z")
_IMAGE_SPEC_FIELDS = frozenset(f.name for f in fields(ImageSpec))
# ImageSpec's byte fields: stored as objects of their own, named in the job dict by "<field>_key".
_INPUT_FIELDS = ("init_image", "mask_image")

T = TypeVar("T")


class Progress(BaseModel):
    step: int = 0
    total: int = 0


class JobRecord(BaseModel):
    # Unknown fields are kept, not dropped: a replica running older code must not erase what a
    # newer one added (per-image flags, for instance) when it rewrites the record.
    model_config = ConfigDict(extra="allow")

    id: str
    status: Status = "starting"
    # Who asked: "api" (predictions, with their webhook) or a client of the runner wired in
    # serve_app/app.py ("discord"); the runner hands the job to the delivery registered for it.
    source: str = "api"
    input: dict[str, Any]
    jobs: list[dict[str, Any]]  # resolved ImageSpecs: a rerun renders exactly the same images
    webhook: str | None = None
    base_url: str = ""  # where the caller reached us: the base of local image URLs
    # Where the source delivers the outcome, in the source's own terms (a Discord message: its
    # application, interaction token and expiry). Holds secrets: never logged, never shown by the API.
    reply_to: dict[str, Any] | None = Field(default=None, repr=False)
    deadline_at: float | None = None  # epoch seconds; past it the job is failed, not rendered
    image_ids: list[str] = Field(default_factory=list)
    nsfw_content_detected: list[bool] = Field(default_factory=list)  # per image, as image_ids
    error: str | None = None
    error_code: str | None = None  # machine-readable reason of a failure ("deadline", ...)
    progress: Progress = Field(default_factory=Progress)
    queue: QueueInfo | None = None  # while its images wait for the model, on the replica running it
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    queue_time_s: float | None = None
    predict_time_s: float | None = None
    attempts: int = 0
    overload_waits: int = 0  # times a full model queue was waited out
    heartbeat_at: float | None = None
    webhook_attempts: int = 0
    # Input images (store key -> PNG) of a record not yet accepted, or already read back: never
    # serialised (``accept`` writes them once, under their keys).
    _inputs: dict[str, bytes] = PrivateAttr(default_factory=dict)

    @property
    def key(self) -> str:
        return record_key(self.id)

    def image_specs(self) -> list[ImageSpec]:
        """The jobs as recorded, without their input images (``JobStore.image_specs`` adds them)."""
        # Only ImageSpec's own fields: records may carry more per image than this version knows.
        return [ImageSpec(**{k: v for k, v in job.items() if k in _IMAGE_SPEC_FIELDS}) for job in self.jobs]

    def set_image_specs(self, jobs: list[ImageSpec]) -> None:
        """Record ``jobs``, their input images moved out to keys of their own (one per distinct image)."""
        keys: dict[bytes, str] = {}
        self._inputs = {}
        self.jobs = []
        for job in jobs:
            data = asdict(job)
            for field in _INPUT_FIELDS:
                image = data.pop(field)
                if image is None:
                    continue
                if image not in keys:
                    keys[image] = f"{inputs_prefix(self.id)}{field}-{len(keys)}.json"
                    self._inputs[keys[image]] = image
                data[f"{field}_key"] = keys[image]
            self.jobs.append(data)


def new_record(
    params: GenerationParams,
    count: int,
    settings: AppSettings,
    source: str,
    *,
    webhook: str | None = None,
    base_url: str = "",
    reply_to: dict[str, Any] | None = None,
    deadline_at: float | None = None,
    jobs: list[ImageSpec] | None = None,
    extra_input: dict[str, Any] | None = None,
) -> JobRecord:
    """Validate and resolve seeds: a record can be rerun anywhere and give the same images.

    ``jobs``: already built from ``params`` (jobs that start from a picture); ``extra_input``:
    what the caller sent beyond ``params`` (kind, strength...), echoed in ``input``.
    """
    record = JobRecord(
        id=f"pred_{secrets.token_hex(10)}",
        source=source,
        input={**params.model_dump(exclude_none=True), "n": count, **(extra_input or {})},
        jobs=[],
        webhook=webhook,
        base_url=settings.base_url_for(base_url),
        reply_to=reply_to,
        deadline_at=deadline_at,
        created_at=time.time(),
    )
    record.set_image_specs(jobs if jobs is not None else build_image_specs(params, count, settings))
    return record


def record_key(prediction_id: str) -> str:
    return f"predictions/{prediction_id}.json"


def active_key(prediction_id: str) -> str:
    return f"predictions-active/{prediction_id}.json"


def cancel_key(prediction_id: str) -> str:
    return f"predictions-cancel/{prediction_id}.json"


def lease_prefix(prediction_id: str) -> str:
    return f"predictions-lease/{prediction_id}/"


def inputs_prefix(prediction_id: str) -> str:
    return f"inputs/{prediction_id}/"


class JobStore:
    """Records, active markers, cancel markers and adoption leases, over an ``ImageStore``.

    The ``ImageStore`` is synchronous (boto3 blocks); every call here runs it in a thread.
    """

    def __init__(self, store: ImageStore) -> None:
        self._store = store

    @property
    def images(self) -> ImageStore:
        return self._store

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    async def save(self, record: JobRecord) -> None:
        await self._run(self._store.put_json, record.key, record.model_dump(mode="json"))

    async def load(self, prediction_id: str) -> JobRecord | None:
        if not PREDICTION_ID.fullmatch(prediction_id):
            return None
        data = await self._run(self._store.get_json, record_key(prediction_id))
        return JobRecord.model_validate(data) if data else None

    async def accept(self, record: JobRecord, timeout_s: float | None = None) -> None:
        """Store the record, then mark it active (what the adoption sweep looks at).

        With ``timeout_s``, raises TimeoutError once it passes (the Discord ACK cannot wait on a
        slow store). The write cannot be stopped, so it is abandoned instead: the active marker is
        not written after the timeout, and if it already was, it is removed and the record failed,
        so a job the caller was told was not queued never runs.
        """
        abandoned = threading.Event()

        def write() -> bool:
            # Inputs first: a record (which the adoption sweep may find) never names a missing one.
            for key, image in record._inputs.items():
                self._store.put_json(key, {"png_base64": base64.b64encode(image).decode()})
            self._store.put_json(record.key, record.model_dump(mode="json"))
            if abandoned.is_set():
                return False
            self._store.put_json(active_key(record.id), {"id": record.id})
            return True

        pending = asyncio.ensure_future(asyncio.to_thread(write))
        try:
            await asyncio.wait_for(asyncio.shield(pending), timeout_s)
        except TimeoutError:
            abandoned.set()
            _keep(asyncio.ensure_future(self._retract(record, pending)))
            raise

    async def _retract(self, record: JobRecord, pending: asyncio.Future[bool]) -> None:
        try:
            marked_active = await pending
        except Exception:
            return  # nothing was stored, or not all of it: either way nothing will run
        record.status, record.error = "failed", "Not queued: the store did not answer in time."
        record.completed_at = time.time()
        await self.save(record)
        if marked_active:
            await self.finish(record.id)
        else:
            await self._drop(inputs_prefix(record.id))

    async def image_specs(self, record: JobRecord) -> list[ImageSpec]:
        """The record's jobs with their input images, read back from the store when not in memory."""
        jobs = []
        for job, data in zip(record.image_specs(), record.jobs, strict=True):
            images: dict[str, bytes] = {}
            for field in _INPUT_FIELDS:
                key = data.get(f"{field}_key")
                if key is not None:
                    images[field] = await self._input(record, str(key))
            jobs.append(replace(job, **images) if images else job)
        return jobs

    async def _input(self, record: JobRecord, key: str) -> bytes:
        if key not in record._inputs:
            stored = (
                await self._run(self._store.get_json, key)
                if key.startswith(inputs_prefix(record.id))  # never another job's, nor any other key
                else None
            )
            if stored is None or not isinstance(stored.get("png_base64"), str):
                raise GenerationFailedError("The job's input image is missing from the store.")
            record._inputs[key] = base64.b64decode(stored["png_base64"])
        return record._inputs[key]

    async def finish(self, prediction_id: str) -> None:
        """The job is terminal: drop the markers (and input images) that only a running job needs."""
        await self._run(self._store.delete, active_key(prediction_id))
        await self._run(self._store.delete, cancel_key(prediction_id))
        await self._drop(lease_prefix(prediction_id))
        await self._drop(inputs_prefix(prediction_id))

    async def _drop(self, prefix: str) -> None:
        for key in await self._run(self._store.list_keys, prefix):
            await self._run(self._store.delete, key)

    async def active_ids(self) -> list[str]:
        keys = await self._run(self._store.list_keys, "predictions-active/")
        return [key.rsplit("/", 1)[-1].removesuffix(".json") for key in keys]

    async def unmark_active(self, prediction_id: str) -> None:
        await self._run(self._store.delete, active_key(prediction_id))

    async def request_cancel(self, prediction_id: str) -> None:
        await self._run(self._store.put_json, cancel_key(prediction_id), {"at": time.time()})

    async def cancel_requested(self, prediction_id: str) -> bool:
        return await self._run(self._store.get_json, cancel_key(prediction_id)) is not None

    async def claim(self, prediction_id: str, owner: str, lease_s: float) -> bool:
        """Take the job for ``lease_s`` seconds; only one caller can win each lease.

        Leases are numbered keys: the holder is the newest, and taking over an expired one is
        creating the next number, which exactly one claimant can do. The lease only has to cover
        the moment between winning and the winner's first heartbeat; afterwards the record's
        heartbeat tells everyone the job is alive.
        """
        prefix = lease_prefix(prediction_id)
        keys = await self._run(self._store.list_keys, prefix)
        number = 0
        if keys:
            newest = max(keys)
            lease = await self._run(self._store.get_json, newest) or {}
            if lease.get("owner") != owner and float(lease.get("expires_at", 0)) > time.time():
                return False
            number = int(newest.rsplit("/", 1)[-1].removesuffix(".json")) + 1
        return await self._run(
            self._store.create_json,
            f"{prefix}{number:08d}.json",
            {"owner": owner, "expires_at": time.time() + lease_s},
        )


_background: set[asyncio.Future[Any]] = set()


def _keep(future: asyncio.Future[Any]) -> None:
    """Hold a strong reference: the event loop keeps only weak ones to tasks."""
    _background.add(future)
    future.add_done_callback(_background.discard)
