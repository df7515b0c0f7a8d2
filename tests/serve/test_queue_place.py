"""Every waiting caller sees their place in line: predictions, Discord's "Queued" message, A1111.

Real Ray Serve with one model replica that accepts many requests but renders one image at a time,
real HTTP over loopback, a local fake Discord. Two long renders hold the model; a third caller must
be told that two are ahead of them, then one, then be rendered. The two are sent straight to the
model through a Serve handle (as another ingress replica or the bot's would): the third caller's
ingress knows nothing of them, so only the model replica's own queue can say "2 ahead".
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
from fake_discord import DiscordSigner, FakeDiscord, ScriptedAnswer, imagine_interaction, snowflake
from support import deploy_fixed_capacity_app, serve_log_lines, wait_for

from serve_app.config.settings import AppSettings
from serve_app.core.images import ImageSpec, ProgressEvent
from serve_app.jobs.records import TERMINAL

APP_ID = "app-queue"
# Long renders that hold the model until the test cancels them (a canceled image leaves the
# queue like a finished one), so the test does not depend on this machine's speed.
BLOCKER_STEPS = 500


@pytest.fixture(scope="module")
def base(
    serve_url: str,
    tiny_model_dir: Path,
    fake: FakeDiscord,
    signer: DiscordSigner,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    settings = AppSettings(
        model=str(tiny_model_dir),
        default_size="64x64",
        default_steps=2,
        max_steps=500,
        request_timeout_s=300,
        data_dir=str(tmp_path_factory.mktemp("queue-store")),
        discord_public_key=signer.public_key_hex,
        discord_application_id=APP_ID,
        discord_api_base_url=fake.url,
        discord_progress_interval_s=0.2,
        discord_max_jobs_per_user=5,
    )
    # Many requests on the replica, one image per pipeline call: a real queue inside the replica.
    deploy_fixed_capacity_app(settings, "queue", "/q", in_flight=16, queued=16, max_batch_size=1)
    return f"{serve_url}/q"


@pytest.fixture(scope="module")
def warm(base: str) -> str:
    """One render first: the ingress has measured the model's speed and can promise a wait."""
    with httpx.Client(base_url=base, timeout=120) as http:
        assert finished(http, create(http, steps=2))["status"] == "succeeded"
    return base


def create(http: httpx.Client, steps: int, prompt: str = "queue") -> str:
    body = {"input": {"prompt": prompt, "steps": steps, "seed": 1}}
    response = http.post("/v1/predictions", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def finished(http: httpx.Client, prediction_id: str) -> dict:
    return wait_for(
        lambda: (body := http.get(f"/v1/predictions/{prediction_id}").json())["status"] in TERMINAL
        and body,
        180,
        f"prediction {prediction_id} to finish",
    )


class Blocker:
    """A long render sent straight to the model replica, its progress stream read in a thread."""

    def __init__(self, prompt: str) -> None:
        from ray import serve

        handle = serve.get_deployment_handle("DiffusionModel", app_name="queue")
        # Each blocker is a caller of its own: the replica shares its queue fairly across callers
        # (serve_app/engine/fair_order.py), so two blockers from one caller would let a newcomer
        # in between them; from two callers, each has its turn before the newcomer's.
        job = ImageSpec(
            prompt=prompt, width=64, height=64, steps=BLOCKER_STEPS, guidance_scale=7.5,
            scheduler="ddim", seed=1, caller=f"blocker-{prompt}",
        )
        self._stream: Any = handle.options(stream=True).generate_stream.remote(job)
        self.events: list[ProgressEvent] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for event in self._stream:
                if isinstance(event, ProgressEvent):
                    self.events.append(event)
        except Exception:  # canceled by release()
            pass

    def rendering(self) -> bool:
        return any(event.state == "rendering" for event in self.events)

    def ahead(self) -> int | None:
        places = [event.ahead for event in self.events if event.ahead is not None]
        return places[-1] if places else None

    def release(self) -> None:
        """Cancel it: the replica drops it from its queue, or stops its render between steps."""
        self._stream.cancel()
        self._reader.join(30)
        assert not self._reader.is_alive()


def hold_the_model() -> list[Blocker]:
    """Two long renders: the first rendering, the second waiting behind it in the replica."""
    first = Blocker("first")
    wait_for(first.rendering, 60, "the first blocker to be rendering")
    second = Blocker("second")
    wait_for(lambda: second.ahead() == 1, 60, "the replica to tell the second blocker 1 ahead")
    return [first, second]


class Watcher:
    """Releases the blockers one by one once the caller was seen at each place."""

    def __init__(self, blockers: list[Blocker]) -> None:
        self._blockers = list(blockers)

    def saw(self, position: int) -> None:
        if self._blockers and position == len(self._blockers):
            self._blockers.pop(0).release()

    def release_all(self) -> None:
        while self._blockers:
            self._blockers.pop(0).release()


@pytest.fixture
def watcher(warm: str) -> Iterator[Watcher]:
    """The model held by two blockers, released as the caller is seen moving up (or at the end)."""
    watcher = Watcher(hold_the_model())
    yield watcher
    watcher.release_all()


def test_a_third_prediction_sees_two_ahead_then_one_then_renders(warm: str, watcher: Watcher) -> None:
    with httpx.Client(base_url=warm, timeout=60) as http:
        third = create(http, 2, "third")
        positions: list[int] = []
        waits: list[float | None] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            body = http.get(f"/v1/predictions/{third}").json()
            if body["status"] in TERMINAL:
                break
            if body.get("queue"):
                positions.append(body["queue"]["position"])
                waits.append(body["queue"]["expected_wait_s"])
                watcher.saw(positions[-1])
            time.sleep(0.2)
        assert body["status"] == "succeeded", body
    assert positions[0] == 2, positions
    assert 1 in positions, positions
    assert positions == sorted(positions, reverse=True), positions  # it only ever falls
    # With the speed measured, a wait is promised, and a longer one with two ahead than with one.
    two = [w for p, w in zip(positions, waits, strict=True) if p == 2]
    one = [w for p, w in zip(positions, waits, strict=True) if p == 1]
    assert two[0] is not None and one[0] is not None
    assert two[0] > one[-1]


def ahead_in(fake: FakeDiscord, token: str) -> tuple[list[int], list[str]]:
    texts = [str(c.json.get("content", "")) for c in fake.calls_to(token) if c.json and not c.files]
    return [int(m[1]) for text in texts if (m := re.search(r"(\d+) ahead of you", text))], texts


def test_a_third_discord_caller_is_told_two_ahead_then_one(
    warm: str, watcher: Watcher, fake: FakeDiscord, signer: DiscordSigner
) -> None:
    fake.reset()
    with httpx.Client(base_url=warm, timeout=60) as http:
        token = f"tok-{snowflake()}"
        interaction = imagine_interaction(APP_ID, "third in line", user="u3", token=token, steps=2, count=1)
        raw = json.dumps(interaction).encode()
        answer = http.post("/discord/interactions", content=raw, headers=signer.headers(raw))
        assert answer.json() == {"type": 5}, answer.text

        def delivered() -> bool:
            ahead, _ = ahead_in(fake, token)
            if ahead:
                watcher.saw(ahead[-1])
            return any(c.files for c in fake.calls_to(token))

        wait_for(delivered, 180, "the third image", interval_s=0.2)
    ahead, texts = ahead_in(fake, token)
    assert ahead and ahead[0] == 2, texts
    assert 1 in ahead, texts
    assert ahead == sorted(ahead, reverse=True), texts
    assert any(re.search(r"2 ahead of you, about \d+ s", text) for text in texts), texts


# --- structured logs ---------------------------------------------------------------------------


def job_log_lines() -> list[str]:
    """``job_finished`` lines in this app's Serve replica logs (Ray writes "ray.serve" there)."""
    return serve_log_lines("queue", '"event":"job_finished"')


def one_step_discord(line: str) -> bool:
    entry = json.loads(line[line.index('{"') :])
    return entry["source"] == "discord" and entry["steps"] == 1


def job_log_entries(prediction_id: str) -> list[dict]:
    return [json.loads(line[line.index('{"') :]) for line in job_log_lines() if prediction_id in line]


def test_every_finished_job_writes_one_json_line_without_secrets(
    warm: str, fake: FakeDiscord, signer: DiscordSigner
) -> None:
    with httpx.Client(base_url=warm, timeout=60) as http:
        prediction = create(http, 3, "logged")
        assert finished(http, prediction)["status"] == "succeeded"
        token = f"tok-secret-{snowflake()}"
        # The only 1-step job here.
        interaction = imagine_interaction(APP_ID, "logged on discord", user="u3", token=token, steps=1)
        raw = json.dumps(interaction).encode()
        assert http.post("/discord/interactions", content=raw, headers=signer.headers(raw)).json() == {
            "type": 5
        }
        wait_for(lambda: any(c.files for c in fake.calls_to(token)), 120, "the Discord image")
    [entry] = wait_for(lambda: job_log_entries(prediction), 30, "the prediction's log line")
    assert entry["source"] == "api" and entry["outcome"] == "succeeded"
    assert entry["sizes"] == ["64x64"] and entry["steps"] == 3 and entry["seeds"] == [1]
    assert entry["images"] == 1 and entry["batch_sizes"] == [1]
    assert entry["queue_s"] >= 0 and entry["render_s"] > 0
    assert entry["model"]
    discord_line = wait_for(
        lambda: next((line for line in job_log_lines() if one_step_discord(line)), None),
        30,
        "the Discord job's log line",
    )
    assert token not in discord_line  # the interaction token is a secret: never logged
    assert '"outcome":"succeeded"' in discord_line
    assert_never_logged(token)


def session_log_files() -> list[Path]:
    """Every file under this session's logs: Serve's, the workers' stdout/stderr, Ray's own."""
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    return [path for path in logs.rglob("*") if path.is_file()]


def session_log_files_containing(secret: str) -> list[str]:
    return [path.name for path in session_log_files() if secret.encode() in path.read_bytes()]


def times_logged(phrase: str) -> int:
    return sum(path.read_bytes().count(phrase.encode()) for path in session_log_files())


def assert_never_logged(token: str) -> None:
    assert session_log_files_containing(token) == []


def test_an_interaction_token_is_in_no_log_file_even_when_every_edit_fails(
    warm: str, fake: FakeDiscord, signer: DiscordSigner
) -> None:
    """The claim is "no line": every log file is scanned, after the error paths ran (progress
    edits refused, the final edit refused, the failure edit refused: each logs the error)."""
    token = f"tok-secret-{snowflake()}"
    undelivered = "could not tell Discord that job"
    before = times_logged(undelivered)
    fake.fail_next(token, *[ScriptedAnswer(404, {"message": "Unknown Webhook", "code": 10015})] * 60)
    interaction = imagine_interaction(APP_ID, "edits refused", user="u4", token=token, steps=2)
    raw = json.dumps(interaction).encode()
    with httpx.Client(base_url=warm, timeout=60) as http:
        assert http.post("/discord/interactions", content=raw, headers=signer.headers(raw)).json() == {
            "type": 5
        }
    # The final edit and then the failure edit were both refused: both error paths logged.
    wait_for(lambda: times_logged(undelivered) > before, 120, "the delivery failure logged")
    assert len([c for c in fake.calls_to(token) if c.method == "PATCH"]) >= 2
    assert_never_logged(token)


def test_a_third_a1111_caller_sees_its_queue_position_in_progress(warm: str, watcher: Watcher) -> None:
    task_id = "task(third-in-line)"
    answer: dict[str, httpx.Response] = {}

    def render() -> None:
        with httpx.Client(base_url=warm, timeout=300) as http:
            body = {"prompt": "third", "steps": 2, "width": 64, "height": 64, "force_task_id": task_id}
            answer["response"] = http.post("/sdapi/v1/txt2img", json=body)

    with httpx.Client(base_url=warm, timeout=60) as http:
        thread = threading.Thread(target=render)
        thread.start()
        positions: list[int] = []
        texts: list[str] = []
        try:
            while thread.is_alive():
                progress = http.get("/sdapi/v1/progress", params={"id_task": task_id}).json()
                if progress.get("queue_position") is not None:
                    positions.append(progress["queue_position"])
                    texts.append(progress["textinfo"])
                    watcher.saw(positions[-1])
                thread.join(0.2)
        finally:
            thread.join(300)
    assert answer["response"].status_code == 200, answer["response"].text
    assert positions and positions[0] == 2, positions
    assert 1 in positions, positions
    assert positions == sorted(positions, reverse=True), positions
    assert "In queue: 2 ahead" in texts
