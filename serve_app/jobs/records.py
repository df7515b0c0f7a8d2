"""Job records ("predictions", after Replicate's API) and the store that keeps them.

A job is accepted once its record, with every seed already resolved, is in the store: any ingress
replica (or one restarted after a crash) can then answer for it, see a cancel, or adopt it. The
store is shared by replicas that do not talk to each other, so everything that two of them may do
at once is a write that cannot undo the other's:

- the running replica rewrites the record (progress, heartbeat) about once a second, so a cancel
  request is a separate marker key it never writes: no heartbeat can overwrite a cancel;
- a job runs where its lease is: numbered keys created with ``ImageStore.create_json`` (a hard
  link locally, a conditional put on S3), so of two replicas creating the same number exactly one
  wins. The holder renews it by creating the next number; a holder that cannot renew in time (a
  slow store) stops before its lease runs out, and a replica adopting the job after that has
  created a number the old holder can no longer create (the number is the fencing token);
- the terminal state is written once, to a key of its own created with ``create_json``: the first
  outcome stored is the job's outcome, and ``load`` answers with it whatever a late heartbeat
  (a write abandoned after its timeout, still running in its thread) later puts in the record;
- the active marker goes only once the outcome is delivered (webhook, Discord edit), so an
  ingress that dies between storing the outcome and delivering it leaves the job to be adopted
  and delivered, not lost.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
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
    # The steps of all the job's images added up (Replicate's one number), and per image in seeds
    # order the steps it has done: a person reads "image 2 of 2, step 3 of 6", never "12/12" alone.
    step: int = 0
    total: int = 0
    images: list[int] = Field(default_factory=list)


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


def final_key(prediction_id: str) -> str:
    return f"predictions-final/{prediction_id}.json"


def lease_prefix(prediction_id: str) -> str:
    return f"predictions-lease/{prediction_id}/"


_LEASE_NAME = re.compile(r"([0-9]{8})\.json\Z")


@dataclass(frozen=True)
class Lease:
    """A job held by ``owner``: lease key number ``number`` (the fencing token) until ``expires_at``.

    ``valid_until`` is the holder's own (monotonic) view: measured from before the write that
    created the lease started, less a margin for clocks that disagree, so the holder always
    believes its lease is over before any other replica does.
    """

    prediction_id: str
    owner: str
    number: int
    expires_at: float  # epoch seconds, what other replicas compare against
    valid_until: float  # time.monotonic() seconds, what the holder compares against

    def held(self) -> bool:
        return time.monotonic() < self.valid_until


# The share of a lease its holder does not count on: clock skew between replicas.
LEASE_SKEW_SHARE = 0.1


def inputs_prefix(prediction_id: str) -> str:
    return f"inputs/{prediction_id}/"


class JobStore:
    """Records, active markers, cancel markers and adoption leases, over an ``ImageStore``.

    The ``ImageStore`` is synchronous (boto3 blocks); every call here runs it in a thread.
    """

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        # Leases get threads of their own: writes abandoned after their timeout (a hung store)
        # hold threads of the shared default pool, and a renewal queued behind them would let a
        # live job's lease lapse.
        self._lease_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="job-leases")

    @property
    def images(self) -> ImageStore:
        return self._store

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    async def _run_lease(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._lease_threads, call, *args)

    async def save(self, record: JobRecord) -> None:
        await self._run(self._store.put_json, record.key, record.model_dump(mode="json"))

    async def load(self, prediction_id: str) -> JobRecord | None:
        """The job as it stands: once terminal, its stored outcome, whatever the record says since.

        The record may say ``processing`` after the outcome was stored (a heartbeat write that
        outlived its timeout); the outcome key cannot be overwritten, so it wins. The record is
        returned instead when it carries that same outcome (with what delivery added to it).
        """
        if not PREDICTION_ID.fullmatch(prediction_id):
            return None
        final = await self._run(self._store.get_json, final_key(prediction_id))
        data = await self._run(self._store.get_json, record_key(prediction_id))
        if final is None:
            return JobRecord.model_validate(data) if data else None
        if data and data.get("status") == final.get("status") and data.get("completed_at") == final.get(
            "completed_at"
        ):
            return JobRecord.model_validate(data)
        return JobRecord.model_validate(final)

    async def has_outcome(self, prediction_id: str) -> bool:
        return await self._run(self._store.get_json, final_key(prediction_id)) is not None

    async def finalize(self, record: JobRecord) -> JobRecord:
        """Store the terminal state once; returns the job's outcome (an earlier one wins).

        A runner that lost its lease may still get here (its render ended as the new holder's
        started): whichever outcome was created first is the job's, and the other is dropped.
        """
        data = record.model_dump(mode="json")
        if not await self._run(self._store.create_json, final_key(record.id), data):
            stored = await self._run(self._store.get_json, final_key(record.id))
            if stored is not None:
                return JobRecord.model_validate(stored)
        await self.save(record)
        return record

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
        """The job is terminal and delivered: drop what only a running (or undelivered) job needs."""
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

    async def claim(
        self, prediction_id: str, owner: str, lease_s: float, idle_since: float | None = None
    ) -> Lease | None:
        """Take the job for ``lease_s`` seconds; only one caller can win each lease.

        Leases are numbered keys: the holder is the newest, and taking over an expired one is
        creating the next number, which exactly one claimant can do. ``idle_since`` (epoch
        seconds: the record's last sign of life) is for adopters: a job with no lease at all is
        taken only once it has been idle ``lease_s`` (its accepting replica is about to claim it).
        """
        prefix = lease_prefix(prediction_id)
        numbers = await self._lease_numbers(prefix)
        number = 0
        if numbers:
            lease = await self._run_lease(self._store.get_json, f"{prefix}{numbers[-1]:08d}.json") or {}
            if lease.get("owner") != owner and float(lease.get("expires_at", 0)) > time.time():
                return None
            number = numbers[-1] + 1
        elif idle_since is not None and time.time() - idle_since < lease_s:
            return None
        return await self._create_lease(prediction_id, owner, number, lease_s)

    async def renew(self, lease: Lease, lease_s: float) -> Lease | None:
        """Extend a held lease by creating the next number; None when another replica took it."""
        number = lease.number + 1
        renewed = await self._create_lease(lease.prediction_id, lease.owner, number, lease_s)
        if renewed is None:
            # An earlier attempt that timed out on our side may have landed after all: then the
            # lease is ours, until what it says (measured now, from its own expiry).
            key = f"{lease_prefix(lease.prediction_id)}{number:08d}.json"
            stored = await self._run_lease(self._store.get_json, key) or {}
            if stored.get("owner") != lease.owner:
                return None
            expires_at = float(stored.get("expires_at", 0))
            valid_until = time.monotonic() + expires_at - time.time() - lease_s * LEASE_SKEW_SHARE
            renewed = Lease(lease.prediction_id, lease.owner, number, expires_at, valid_until)
        previous = f"{lease_prefix(lease.prediction_id)}{lease.number:08d}.json"
        await self._run_lease(self._store.delete, previous)
        return renewed

    async def _create_lease(
        self, prediction_id: str, owner: str, number: int, lease_s: float
    ) -> Lease | None:
        started = time.monotonic()
        expires_at = time.time() + lease_s
        created = await self._run_lease(
            self._store.create_json,
            f"{lease_prefix(prediction_id)}{number:08d}.json",
            {"owner": owner, "expires_at": expires_at},
        )
        if not created:
            return None
        return Lease(prediction_id, owner, number, expires_at, started + lease_s * (1 - LEASE_SKEW_SHARE))

    async def _lease_numbers(self, prefix: str) -> list[int]:
        # Only well-formed lease names count: anything else in the folder is not a lease.
        names = (key.rsplit("/", 1)[-1] for key in await self._run_lease(self._store.list_keys, prefix))
        return sorted(int(match.group(1)) for name in names if (match := _LEASE_NAME.fullmatch(name)))


_background: set[asyncio.Future[Any]] = set()


def _keep(future: asyncio.Future[Any]) -> None:
    """Hold a strong reference: the event loop keeps only weak ones to tasks."""
    _background.add(future)
    future.add_done_callback(_background.discard)
