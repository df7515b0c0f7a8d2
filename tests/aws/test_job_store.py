"""Job records on the local store and on S3 (moto's server): what replicas racing each other get.

An outcome no late heartbeat can undo; a stale job's lease can be won by exactly one
claimant; ids are bounded before they reach a file name or a key; a store that hangs costs a
bounded wait.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from conftest import free_port
from moto.server import ThreadedMotoServer
from support import HangingServer

from serve_app.config.settings import AppSettings
from serve_app.core.errors import GenerationFailedError
from serve_app.core.params import GenerationParams, build_image_specs
from serve_app.jobs.records import JobRecord, JobStore
from serve_app.jobs.records import new_record as record_for
from serve_app.storage import ImageStore, LocalImageStore, S3ImageStore

BUCKET = "raydiffusion-job-records"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, aws_credentials: None) -> ImageStore:
    if request.param == "local":
        return LocalImageStore(tmp_path)
    endpoint = request.getfixturevalue("moto_endpoint")
    return S3ImageStore(BUCKET, prefix=f"t{time.time_ns()}", endpoint_url=endpoint)


def new_record(prediction_id: str = "pred_0123456789abcdef0123") -> JobRecord:
    return JobRecord(
        id=prediction_id,
        status="processing",
        input={"prompt": "x", "n": 1},
        jobs=[{"prompt": "x", "width": 64, "height": 64, "steps": 3, "guidance_scale": 7.5,
               "scheduler": "ddim", "seed": 1, "negative_prompt": ""}],
        created_at=time.time(),
    )


def test_create_json_creates_once_and_keeps_the_first_value(store: ImageStore) -> None:
    assert store.create_json("leases/a.json", {"owner": "first"}) is True
    assert store.create_json("leases/a.json", {"owner": "second"}) is False
    assert store.get_json("leases/a.json") == {"owner": "first"}


def test_a_heartbeat_landing_after_the_outcome_never_resurrects_the_job(store: ImageStore) -> None:
    """The race the runner has (tests/unit/jobs/test_runner_durability.py runs it for real): a
    heartbeat write of the ``processing`` record, abandoned after its timeout, lands after the
    outcome was stored. Every reader still sees the outcome; a second outcome is refused."""
    jobs = JobStore(store)

    async def scenario() -> tuple[JobRecord | None, JobRecord]:
        record = new_record()
        await jobs.accept(record)
        heartbeat = record.model_copy(deep=True)  # the snapshot the slow heartbeat carries
        heartbeat.progress.step, heartbeat.heartbeat_at = 2, time.time()
        record.status, record.completed_at = "succeeded", time.time()
        await jobs.finalize(record)
        await jobs.save(heartbeat)  # lands last
        assert (await asyncio.to_thread(store.get_json, record.key))["status"] == "processing"
        # A runner that lost its lease finishes too, differently: the first outcome stays.
        late = record.model_copy(deep=True)
        late.status, late.completed_at, late.error = "failed", time.time(), "late"
        kept = await jobs.finalize(late)
        return await jobs.load(record.id), kept

    loaded, kept = asyncio.run(scenario())
    assert loaded is not None and loaded.status == "succeeded"
    assert kept.status == "succeeded"


def test_only_one_of_many_simultaneous_claims_wins(store: ImageStore) -> None:
    jobs = JobStore(store)
    claimants = 6
    barrier = threading.Barrier(claimants)
    results: dict[str, bool] = {}

    def claim(owner: str) -> None:
        barrier.wait()
        results[owner] = asyncio.run(jobs.claim("pred_contested", owner, lease_s=60)) is not None

    threads = [threading.Thread(target=claim, args=(f"replica-{i}",)) for i in range(claimants)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == claimants
    assert sum(results.values()) == 1, results


def test_an_expired_lease_is_taken_over_by_one_claimant_and_a_live_one_by_none(store: ImageStore) -> None:
    jobs = JobStore(store)

    async def scenario() -> list[bool]:
        outcomes = [await jobs.claim("pred_lease", "dead-replica", lease_s=0)]  # expired at once
        outcomes += await asyncio.gather(
            jobs.claim("pred_lease", "replica-b", lease_s=60),
            jobs.claim("pred_lease", "replica-c", lease_s=60),
        )
        outcomes.append(await jobs.claim("pred_lease", "replica-d", lease_s=60))
        return [lease is not None for lease in outcomes]

    first, b, c, late = asyncio.run(scenario())
    assert first is True
    assert [b, c].count(True) == 1, (b, c)
    assert late is False  # the winner's lease is live


def test_finishing_a_job_drops_its_markers(store: ImageStore) -> None:
    jobs = JobStore(store)

    async def scenario() -> tuple[list[str], bool, list[str]]:
        record = new_record("pred_finished")
        await jobs.accept(record)
        await jobs.request_cancel(record.id)
        await jobs.claim(record.id, "me", lease_s=60)
        await jobs.finish(record.id)
        leases = await asyncio.to_thread(store.list_keys, "predictions-lease/pred_finished/")
        return await jobs.active_ids(), await jobs.cancel_requested(record.id), leases

    active, canceled, leases = asyncio.run(scenario())
    assert "pred_finished" not in active and not canceled and leases == []


def test_input_images_round_trip_through_the_store_once_and_leave_with_the_job(store: ImageStore) -> None:
    settings = AppSettings(default_size="64x64", default_steps=4)
    init, mask = b"\x89PNG init \xff\x00", b"\x89PNG mask \xfe"
    jobs = [
        replace(job, kind="inpaint", init_image=init, mask_image=mask, strength=0.5)
        for job in build_image_specs(GenerationParams(prompt="x", seed=3), 2, settings)
    ]
    record = record_for(GenerationParams(prompt="x", seed=3), 2, settings, "api", jobs=jobs)
    # The record (rewritten every second) holds keys, never the bytes: JSON holds none.
    serialised = json.dumps(record.model_dump(mode="json"))
    assert "init_image\"" not in serialised and "mask_image\"" not in serialised

    async def scenario() -> tuple[list, list[str], list[str]]:
        await JobStore(store).accept(record)
        stored = await asyncio.to_thread(store.list_keys, f"inputs/{record.id}/")
        # Another replica (a fresh JobStore, nothing in memory) adopts it and reads the images back.
        adopted = await JobStore(store).load(record.id)
        assert adopted is not None
        back = await JobStore(store).image_specs(adopted)
        await JobStore(store).finish(record.id)
        return back, stored, await asyncio.to_thread(store.list_keys, f"inputs/{record.id}/")

    back, stored, left = asyncio.run(scenario())
    assert back == jobs
    assert len(stored) == 2  # one object per distinct image, not per job
    assert left == []


def test_a_missing_or_foreign_input_image_fails_the_job_cleanly(store: ImageStore) -> None:
    record = new_record("pred_noinput")
    record.jobs[0]["kind"], record.jobs[0]["strength"] = "img2img", 0.5
    store.put_json("inputs/pred_other/init_image-0.json", {"png_base64": "aGVsbG8="})
    for key in ("inputs/pred_noinput/init_image-0.json", "inputs/pred_other/init_image-0.json"):
        record.jobs[0]["init_image_key"] = key
        with pytest.raises(GenerationFailedError, match="input image is missing"):
            asyncio.run(JobStore(store).image_specs(JobRecord.model_validate(record.model_dump())))


class CountingStore:
    """A real store that counts the calls it gets: "never touched" is a count of zero."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def counted(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return counted


def test_overlong_and_odd_ids_are_unknown_without_touching_the_store(store: ImageStore) -> None:
    counting = CountingStore(store)
    jobs = JobStore(counting)  # type: ignore[arg-type]
    # A real id whose record exists: with a trailing newline it must still be unknown (item 2).
    real = new_record("pred_0123456789abcdef0123")
    asyncio.run(jobs.accept(real))
    counting.calls.clear()
    odd = ("pred_" + "a" * 246, "pred_../../x", "pred_", "img_abc", "pred_a/b", f"{real.id}\n", "pred_x\n")
    for prediction_id in odd:
        assert asyncio.run(jobs.load(prediction_id)) is None, prediction_id
    assert counting.calls == []
    assert asyncio.run(jobs.load(real.id)) is not None and counting.calls  # the counter does count


def test_accept_against_a_hanging_store_gives_up_in_time(aws_credentials: None) -> None:
    hanging = HangingServer()
    try:
        jobs = JobStore(S3ImageStore(BUCKET, endpoint_url=hanging.url))

        async def scenario() -> float:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await jobs.accept(new_record(), timeout_s=0.5)
            elapsed = time.monotonic() - started
            hanging.close()  # lets the abandoned write fail, so the loop can shut its threads down
            return elapsed

        assert asyncio.run(scenario()) < 2.0
    finally:
        hanging.close()
