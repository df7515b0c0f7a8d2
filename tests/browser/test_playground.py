"""The browser playground at ``/``, driven in Debian's headless Chromium against the real app.

One Serve and one browser for the module; tiny models at small sizes keep each render short.
The app serves a three-model catalogue (tiny-sd, the default; tiny-sd-b with other weights and
defaults; tiny-sd-text, tiny-sd's weights narrowed to text-to-image) and tiny LoRAs usable with
all three. The model batches one image at a time here, so a
long "blocker" job makes the next one wait in a queue the page can show.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright
from ray import serve
from support import ROOT, decode_png, max_pixel_difference, save_tiny_preview_vae, wait_for

from serve_app.app import build_app, compose
from serve_app.config.settings import AppSettings
from serve_app.testing.tiny_model import save_tiny_model

APP = "playground"
API_KEY = "playground-key-7"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = ROOT
SCREENSHOTS = REPO / ".cache" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def base(serve_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    models = tmp_path_factory.mktemp("playground-models")
    save_tiny_model(models / "b", seed=7)
    save_tiny_model(models / "ink", "lora")
    args = {
        "models": [
            {
                "name": "tiny-sd",
                "model": str(tiny_model_dir),
                "default": True,
                "loras": [{"name": "tiny-ink", "source": str(models / "ink"), "weight": 0.8}],
            },
            # Its own defaults: the page shows them once it is picked.
            {
                "name": "tiny-sd-b",
                "model": str(models / "b"),
                "description": "other weights",
                "default_size": "72x64",
                "default_steps": 6,
                "default_guidance_scale": 5.5,
                # A second LoRA: with max_loras_per_request 1, picking one disables the other.
                "loras": [{"name": "tiny-wash", "source": str(models / "ink"), "weight": -0.5}],
            },
            # Lacks every picture task (as FLUX.2-klein does): the page must not offer them.
            {
                "name": "tiny-sd-text",
                "model": str(tiny_model_dir),
                "description": "text only",
                "tasks": ["txt2img"],
            },
        ],
        # All three stay loaded: the text-only one never evicts another test's model.
        "max_models_per_replica": 3,
        "max_loras_per_request": 1,
        "max_lora_weight": 1.5,
        "default_size": "64x64",
        "default_steps": 4,
        "max_steps": 400,
        "max_images": 4,
        "api_keys": [API_KEY],
        "retry_after_s": 2,
        # Not the default (0.6): Vary must send what /v1/models reports.
        "variation_strength": 0.55,
        # A gallery of this module's images only.
        "data_dir": str(tmp_path_factory.mktemp("playground-data")),
        # One image per pipeline call: a second job queues behind the first.
        "batching": {"max_batch_size": 1, "batch_wait_timeout_s": 0.0},
        # Live previews: a tiny TAESD-style decoder, a 32-pixel JPEG every 5 steps.
        "speed": {
            "preview_vae": str(save_tiny_preview_vae(tmp_path_factory.mktemp("playground-taesd") / "taesd")),
            "preview_every_steps": 5,
            "preview_size": 32,
        },
    }
    serve.run(build_app(args), name=APP, route_prefix="/")
    return serve_url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser: Browser, base: str, *, key: str | None = API_KEY, path: str = "/") -> Page:
    context = browser.new_context(base_url=base, viewport=DESKTOP)
    if key is not None:
        context.add_init_script(f"localStorage.setItem('raydiffusion.apiKey', {json.dumps(key)})")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.script_errors = errors  # checked by each test: a broken script must fail it
    page.goto(path)
    return page


@pytest.fixture
def page(browser: Browser, base: str) -> Iterator[Page]:
    page = open_page(browser, base)
    yield page
    page.context.close()


def no_script_errors(page: Page) -> None:
    assert page.script_errors == [], page.script_errors


def start_blocker(base: str, steps: int = 150) -> str:
    """A long job the model renders first; returns its id once it is rendering."""
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        created = http.post("/v1/predictions", json={"input": {"prompt": "blocker", "steps": steps}})
        assert created.status_code == 201, created.text
        prediction_id = created.json()["id"]

        def rendering() -> bool:
            progress = http.get(f"/v1/predictions/{prediction_id}").json()["progress"] or {}
            return progress.get("step", 0) > 0

        wait_for(rendering, 120, "the blocker to start rendering")
    return prediction_id


def cancel_blocker(base: str, prediction_id: str) -> None:
    """Stop the blocker once the page was seen waiting behind it: the rest of its steps would only
    cost CI time (the model interrupts a canceled render between steps)."""
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        response = http.post(f"/v1/predictions/{prediction_id}/cancel")
        assert response.status_code == 200, response.text


def wait_for_image(page: Page, width: int, height: int) -> None:
    page.wait_for_function(
        """([w, h]) => [...document.querySelectorAll('#results img')].some(
             (img) => img.complete && img.naturalWidth === w && img.naturalHeight === h)""",
        arg=[width, height],
    )


def generate_from_form(page: Page, prompt: str, **fields: str) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    for name, value in fields.items():
        page.locator(f"#{name}").fill(value)
    page.get_by_role("button", name="Generate").click()


def png_file(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> Path:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(noise).convert(mode).save(path)
    return path


def created_by(page: Page, action: Callable[[], None]) -> tuple[dict, dict]:
    """What ``action`` made the page POST to /v1/predictions, and the 201's prediction."""
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/v1/predictions")
    ) as answer:
        action()
    response = answer.value
    assert response.status == 201, response.text()
    return response.request.post_data_json["input"], response.json()


def finished(base: str, prediction_id: str) -> dict:
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        return http.get(f"/v1/predictions/{prediction_id}").json()


def test_page_is_served_with_its_assets_and_a_strict_policy(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        page = http.get("/")  # no key needed to load the page itself
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # The page's own assets, then every module those scripts import (ES modules under static/js).
        pending = re.findall(r'(?:href|src)="(static/[^"]+)"', page.text)
        seen: set[str] = set()
        while pending:
            asset = pending.pop()
            if asset in seen:
                continue
            seen.add(asset)
            response = http.get(f"/{asset}")
            assert response.status_code == 200, asset
            assert response.headers["x-content-type-options"] == "nosniff"
            if asset.endswith(".js"):
                # A module script with any other type is refused by the browser.
                assert response.headers["content-type"].startswith("text/javascript"), asset
                folder = asset.rsplit("/", 1)[0]
                imported = re.findall(r'from "\./([\w-]+\.js)"', response.text)
                pending += [f"{folder}/{name}" for name in imported]
        assert {"static/js/main.js", "static/js/api.js", "static/js/form.js"} <= seen, seen
        missing = http.get("/static/../serve_app/config/settings.py")
        assert missing.status_code == 404
        assert http.get("/static/nope.js").json()["error"]["param"] == "name"


def test_page_asks_for_an_api_key_and_works_once_it_is_given(browser: Browser, base: str) -> None:
    page = open_page(browser, base, key=None)
    try:
        expect(page.locator("#auth")).to_be_visible()
        expect(page.locator("#auth-message")).to_contain_text("requires an API key")
        expect(page.locator("#model-info")).to_contain_text("needs an API key")
        expect(page.get_by_role("textbox", name="API key")).to_be_focused()

        page.get_by_role("textbox", name="API key").fill("wrong-key")
        page.keyboard.press("Enter")
        expect(page.locator("#auth-message")).to_contain_text("refused")

        page.get_by_role("textbox", name="API key").fill(API_KEY)
        page.get_by_role("button", name="Save key").click()
        expect(page.locator("#auth")).to_be_hidden()
        expect(page.locator("#model-info")).to_contain_text("Model tiny-sd")
        assert page.evaluate("localStorage.getItem('raydiffusion.apiKey')") == API_KEY

        # The tiny model has no safety checker: never claimed, whatever the setting says.
        expect(page.locator("#model-info")).not_to_contain_text("safety checker on")
        generate_from_form(page, "a key was given")
        wait_for_image(page, 64, 64)  # the server's default size
        expect(page.locator("#generate-error")).to_be_empty()
        # Once a replica has rendered, the header says what it runs.
        expect(page.locator("#model-info")).to_contain_text("no safety checker")
        no_script_errors(page)
    finally:
        page.context.close()


def test_generate_shows_queue_then_progress_then_the_image_of_the_requested_size(
    page: Page, base: str
) -> None:
    prompt = f"a lighthouse {uuid.uuid4().hex[:6]}"
    blocker = start_blocker(base)
    page.get_by_label("Random seed").uncheck()
    generate_from_form(page, prompt, size="96x64", steps="60", seed="1234", guidance_scale="6.5")

    expect(page.locator("#queue-status")).to_contain_text("1 image ahead of yours")
    cancel_blocker(base, blocker)
    page.wait_for_function(
        """() => { const bar = document.getElementById('progress');
                   return bar.hasAttribute('value') && bar.value > 0 && bar.value < bar.max; }"""
    )
    expect(page.locator("#job-status")).to_contain_text("Rendering: step")
    wait_for_image(page, 96, 64)
    expect(page.locator("#job-status")).to_contain_text("Done")
    expect(page.locator("#queue-status")).to_be_empty()

    card = page.locator("#results .card").first
    expect(card).to_contain_text("seed 1234")
    expect(card).to_contain_text("96x64")
    expect(card).to_contain_text("60 steps")
    expect(card).to_contain_text("guidance 6.5")
    image = card.locator("img")
    expect(image).to_have_attribute("loading", "lazy")
    expect(image).to_have_attribute("alt", f"{prompt} (seed 1234)")
    download = card.get_by_role("link", name="Download the image with seed 1234")
    expect(download).to_have_attribute("download", "raydiffusion-1234.png")
    fetched = page.context.request.get(download.get_attribute("href"))
    assert fetched.status == 200 and fetched.headers["content-type"] == "image/png"

    # The gallery lists the new image at once.
    expect(page.locator("#gallery button.thumb").first).to_have_attribute(
        "aria-label", f"Parameters of “{prompt}”, seed 1234"
    )
    # Reuse seed: back to that seed, random off.
    page.get_by_label("Random seed").check()
    expect(page.locator("#seed")).to_be_disabled()
    card.get_by_role("button", name="Reuse seed 1234").click()
    expect(page.get_by_label("Random seed")).not_to_be_checked()
    expect(page.locator("#seed")).to_have_value("1234")

    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        finished = http.get(f"/v1/predictions/{blocker}").json()
    assert finished["status"] == "canceled" and finished["queue"] is None
    save_screenshots(page, "module")
    no_script_errors(page)


def save_screenshots(page: Page, prefix: str, docs: bool = False) -> None:
    """Desktop and phone width, as test artifacts; into docs/ only for ``docs`` and when asked to.

    Every field's placeholder must fit it and nothing may be wider than a phone's screen.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=SCREENSHOTS / f"{prefix}-desktop.png", full_page=True)
    assert placeholders_that_overflow(page) == []
    page.set_viewport_size(PHONE)
    assert placeholders_that_overflow(page) == []
    # Usable at phone width: nothing wider than the screen, so no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    expect(page.get_by_role("button", name="Generate")).to_be_in_viewport()
    page.screenshot(path=SCREENSHOTS / f"{prefix}-phone.png")
    if docs and os.environ.get("RAYDIFFUSION_UPDATE_DOCS_SCREENSHOTS"):
        (REPO / "docs").mkdir(exist_ok=True)
        for width in ("desktop", "phone"):
            shutil.copyfile(SCREENSHOTS / f"{prefix}-{width}.png", REPO / "docs" / f"playground-{width}.png")


# What `make run` builds into .cache (the Makefile's tiny-model targets): (kind, seed) per folder.
MAKE_RUN_MODELS = {
    ".cache/tiny-sd": ("text2img", 0),
    ".cache/tiny-sd-b": ("text2img", 7),
    ".cache/tiny-lora": ("lora", 1),
    ".cache/tiny-flux": ("flux", 0),
    ".cache/tiny-flux-lora": ("flux-lora", 1),
}


def test_docs_screenshots_show_what_make_run_serves(
    browser: Browser, base: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """README's screenshots: deployments/local.yaml's own app (its catalogue, limits and batching),
    its `.cache` models built here as `make run` builds them, one render of the default model with
    its LoRA. Written into docs/ with RAYDIFFUSION_UPDATE_DOCS_SCREENSHOTS=1."""
    (app,) = yaml.safe_load((REPO / "deployments" / "local.yaml").read_text())["applications"]
    built = tmp_path_factory.mktemp("make-run-models")
    text = json.dumps(app["args"])
    for folder, (kind, seed) in MAKE_RUN_MODELS.items():
        if f'"{folder}"' in text:
            target = save_tiny_model(built / Path(folder).name, kind, seed)
            text = text.replace(f'"{folder}"', json.dumps(str(target)))
    args = {**json.loads(text), "data_dir": str(tmp_path_factory.mktemp("make-run-data"))}
    serve.run(build_app(args), name="make-run", route_prefix="/make-run")
    page = open_page(browser, base, key=None, path="/make-run/")
    try:
        expect(page.locator("#model-info")).to_contain_text("Model tiny-sd")
        page.get_by_label("tiny-ink", exact=True).check()
        page.locator("#n").fill("2")
        generate_from_form(page, "a lighthouse at dusk")
        expect(page.locator("#results .card img")).to_have_count(2, timeout=TIMEOUT_MS)
        wait_for_image(page, 64, 64)  # local.yaml's default size
        expect(page.locator("#job-status")).to_contain_text("Done")
        expect(page.locator("#model-info")).to_contain_text("no safety checker")
        save_screenshots(page, "make-run", docs=True)
        expect(page.locator("#true_cfg_scale-field")).to_be_hidden()  # SD 1.5 has no true CFG
        render_tiny_flux_from_the_form(page, base + "/make-run")
        no_script_errors(page)
    finally:
        page.context.close()
        serve.delete("make-run")


def render_tiny_flux_from_the_form(page: Page, app_url: str) -> None:
    """local.yaml's tiny FLUX.1-dev: the form follows its /v1/models capabilities (family name,
    flow-matching samplers, true CFG), and a render with its LoRA, a negative prompt and true CFG
    2, then a variation of it, goes through."""
    with httpx.Client(base_url=app_url, timeout=30) as http:
        (listed,) = [model for model in http.get("/v1/models").json()["data"] if model["id"] == "tiny-flux"]
    caps = listed["capabilities"]
    assert caps["family_name"] == "FLUX.1-dev" and caps["true_cfg_scale"] is True
    # Every task: its picture inputs and Vary stay offered (the module's tiny-sd-text lacks them).
    assert caps["tasks"] == ["txt2img", "img2img", "inpaint", "upscale"]

    page.set_viewport_size(DESKTOP)  # save_screenshots left it at phone width: lazy images below
    page.get_by_label("Model", exact=True).select_option("tiny-flux")
    expect(page.locator("#model-hint")).to_contain_text("FLUX.1")
    expect(page.locator("#model-caps")).to_contain_text("guidance distilled into the model")
    scheduler = page.locator("#scheduler")
    expect(scheduler.locator("option")).to_have_count(1 + len(caps["schedulers"]))
    values = scheduler.locator("option").evaluate_all("options => options.map((option) => option.value)")
    assert values == ["", *caps["schedulers"]] == ["", "flow_euler"]
    expect(scheduler).not_to_contain_text("DPM++ 2M Karras")
    expect(scheduler.locator("option").first).to_have_text("flow_euler (default)")
    true_cfg = page.get_by_label("True CFG scale")
    expect(true_cfg).to_be_visible()
    expect(page.locator("#true_cfg_scale-hint")).to_contain_text("Above 1 the negative prompt applies")
    expect(page.locator("#negative_prompt-hint")).to_contain_text("only with True CFG scale above 1")
    for name in ("image", "mask", "strength", "upscale"):
        expect(page.locator(f"#{name}")).to_be_enabled()
    expect(page.locator("#picture-hint")).to_be_hidden()  # empty: nothing is missing
    # FLUX.1 LoRAs only: the SD one is not offered.
    expect(page.get_by_label("tiny-ink", exact=True)).to_have_count(0)
    page.get_by_label("tiny-flux-ink", exact=True).check()
    true_cfg.fill("2")
    page.get_by_label("Negative prompt").fill("blurry")
    page.locator("#n").fill("1")
    sent, prediction = created_by(page, lambda: generate_from_form(page, "an ink lighthouse"))
    assert sent["model"] == "tiny-flux" and sent["loras"] == [{"name": "tiny-flux-ink", "weight": 0.8}]
    assert sent["true_cfg_scale"] == 2 and sent["negative_prompt"] == "blurry"
    assert "scheduler" not in sent  # the model's default, flow_euler
    card = page.locator("#results .card").first
    expect(card).to_contain_text("tiny-flux + tiny-flux-ink 0.8", timeout=TIMEOUT_MS)
    expect(card).to_contain_text("true CFG 2")
    wait_for_image(page, 64, 64)  # tiny-flux's default_size in local.yaml
    expect(page.locator("#job-status")).to_contain_text("Done")
    with httpx.Client(base_url=app_url, timeout=30) as http:
        done = http.get(f"/v1/predictions/{prediction['id']}").json()
    assert done["status"] == "succeeded" and done["model"] == "tiny-flux", done
    save_screenshots(page, "make-run-flux")
    page.set_viewport_size(DESKTOP)

    # Vary keeps what drew it, true CFG included (the negative prompt needs it).
    vary = card.get_by_role("button", name=f"Vary the image with seed {prediction['seeds'][0]}")
    expect(vary).to_be_visible()
    expect(card.get_by_role("button", name=re.compile("^Upscale"))).to_be_visible()
    sent, varied = created_by(page, vary.click)
    assert sent["model"] == "tiny-flux" and sent["loras"] == [{"name": "tiny-flux-ink", "weight": 0.8}]
    assert sent["true_cfg_scale"] == 2 and sent["negative_prompt"] == "blurry"
    assert varied["input"]["kind"] == "img2img"
    expect(page.locator("#results .card").first).to_contain_text(
        f"seed {varied['seeds'][0]}", timeout=TIMEOUT_MS
    )
    expect(page.locator("#results .card img")).to_have_count(2)
    expect(page.locator("#job-status")).to_contain_text("Done")

    # Its stored settings load back from the gallery: the model first, then its own sampler, and
    # the true CFG scale its negative prompt needs (cleared here, so only the record can fill it).
    true_cfg.fill("")
    page.get_by_label("Model", exact=True).select_option("tiny-sd")
    expect(page.locator("#true_cfg_scale-field")).to_be_hidden()
    (url,) = done["output"]
    page.locator("#gallery li").filter(has=page.locator(f"img[src='{url}']")).locator("button.thumb").click()
    dialog = page.locator("#image-dialog")
    expect(dialog.locator("dd[data-param='Scheduler']")).to_have_text("flow_euler")
    expect(dialog.locator("dd[data-param='True CFG scale']")).to_have_text("2")
    expect(dialog.locator("#dialog-vary")).to_be_visible()
    expect(dialog.locator("#dialog-upscale")).to_be_visible()
    page.get_by_role("button", name="Use these settings").click()
    expect(page.get_by_label("Model", exact=True)).to_have_value("tiny-flux")
    expect(scheduler).to_have_value("flow_euler")
    expect(page.get_by_label("Negative prompt")).to_have_value("blurry")
    expect(page.get_by_label("tiny-flux-ink", exact=True)).to_be_checked()
    expect(true_cfg).to_be_visible()
    expect(true_cfg).to_have_value("2")


def placeholders_that_overflow(page: Page) -> list[dict]:
    """Every visible placeholder (and a select's shown option) wider than the room its field has."""
    return page.evaluate(
        """() => {
          const context = document.createElement('canvas').getContext('2d');
          const fields = [...document.querySelectorAll('input[placeholder], select')]
            .filter((field) => field.offsetParent !== null);
          return fields.map((field) => {
            const style = getComputedStyle(field);
            context.font = style.font;
            const text = field.tagName === 'SELECT'
              ? field.options[field.selectedIndex].textContent : field.placeholder;
            // A number field's spinner and a select's arrow take about 20 px of the box.
            const chrome = field.type === 'number' || field.tagName === 'SELECT' ? 20 : 0;
            const room = field.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)
              - chrome;
            return {id: field.id, text, width: Math.ceil(context.measureText(text).width), room};
          }).filter((field) => field.width > field.room);
        }"""
    )


def test_the_chosen_model_and_lora_draw_the_image_and_the_gallery_names_them(page: Page, base: str) -> None:
    model = page.get_by_label("Model", exact=True)
    expect(model).to_have_value("tiny-sd")  # the catalogue's default
    expect(page.locator("#model-hint")).to_have_text("SD 1.5")
    expect(page.locator("#steps")).to_have_attribute("placeholder", "4 (default)")
    page.locator("#guidance_scale").fill("4")  # typed by the user: a switch keeps it
    model.select_option("tiny-sd-b")
    expect(page.locator("#model-hint")).to_have_text("SD 1.5 · other weights")
    expect(page.locator("#model-info")).to_contain_text("Model tiny-sd-b")
    expect(page.locator("#size")).to_have_attribute("placeholder", "72x64 (default)")
    expect(page.locator("#steps")).to_have_attribute("placeholder", "6 (default)")
    expect(page.locator("#guidance_scale")).to_have_value("4")

    # tiny-ink is listed under tiny-sd but usable with every SD 1.5 model: offered here too, at
    # its listed weight, bounded by max_lora_weight.
    use = page.get_by_label("tiny-ink", exact=True)
    slider = page.get_by_label("tiny-ink weight", exact=True)
    weight = page.get_by_label("tiny-ink weight value")
    expect(weight).to_have_value("0.8")
    expect(weight).to_be_disabled()
    expect(slider).to_have_attribute("max", "1.5")
    expect(slider).to_have_attribute("min", "-1.5")
    other = page.get_by_label("tiny-wash", exact=True)
    expect(page.get_by_label("tiny-wash weight value")).to_have_value("-0.5")
    expect(other).to_be_enabled()
    use.check()
    expect(other).to_be_disabled()  # max_loras_per_request: 1
    weight.fill("0.5")
    expect(slider).to_have_value("0.5")
    page.get_by_label("Random seed").uncheck()
    prompt = f"a harbour {uuid.uuid4().hex[:6]}"
    sent, prediction = created_by(page, lambda: generate_from_form(page, prompt, seed="2468", steps="5"))
    assert sent["model"] == "tiny-sd-b" and sent["loras"] == [{"name": "tiny-ink", "weight": 0.5}]
    assert prediction["model"] == "tiny-sd-b"
    wait_for_image(page, 72, 64)  # tiny-sd-b's default size: Size was left empty
    card = page.locator("#results .card").first
    expect(card).to_contain_text("tiny-sd-b + tiny-ink 0.5")
    (url,) = wait_for(
        lambda: finished(base, prediction["id"])["output"], 60, "the prediction's output"
    )
    shown = page.context.request.get(card.locator("img").get_attribute("src"))
    assert shown.status == 200
    shown_pixels = decode_png(shown.body())

    # The gallery entry and its dialog name the model and the LoRA; "Use these settings" picks them.
    entry = page.locator("#gallery li").filter(has=page.locator(f"img[src='{url}']"))
    expect(entry.locator(".thumb-model")).to_have_text("tiny-sd-b + tiny-ink 0.5")
    model.select_option("tiny-sd")
    use.uncheck()
    entry.locator("button.thumb").click()
    dialog = page.locator("#image-dialog")
    expect(dialog.locator("dd[data-param='Model']")).to_have_text("tiny-sd-b")
    expect(dialog.locator("dd[data-param='LoRAs']")).to_have_text("tiny-ink 0.5")
    page.get_by_role("button", name="Use these settings").click()
    expect(model).to_have_value("tiny-sd-b")
    expect(use).to_be_checked()
    expect(weight).to_have_value("0.5")

    # Vary draws with the image's model and LoRA.
    vary = card.get_by_role("button", name="Vary the image with seed 2468")
    sent, _ = created_by(page, vary.click)
    assert sent["model"] == "tiny-sd-b" and sent["loras"] == [{"name": "tiny-ink", "weight": 0.5}]
    wait_for_image(page, 72, 64)

    # The image the page showed is the one the same request through the HTTP API gives; the
    # default model without the LoRA draws another.
    body = {"prompt": prompt, "seed": 2468, "steps": 5, "guidance_scale": 4, "response_format": "b64_json"}
    with httpx.Client(base_url=base, headers=AUTH, timeout=120) as http:

        def render(**extra: object) -> np.ndarray:
            response = http.post("/v1/images/generations", json={**body, **extra})
            assert response.status_code == 200, response.text
            return decode_png(base64.b64decode(response.json()["data"][0]["b64_json"]))

        same = render(model="tiny-sd-b", loras=[{"name": "tiny-ink", "weight": 0.5}])
        other = render(size="72x64")
    assert max_pixel_difference(shown_pixels, same) <= 2
    assert max_pixel_difference(shown_pixels, other) >= 20
    no_script_errors(page)


def test_the_servers_model_and_lora_errors_are_shown_at_their_inputs(page: Page) -> None:
    """What the page offers is valid; a catalogue changed under an open page is not: the 400s."""

    def rewritten(changes: dict) -> Callable[[Route], None]:
        def handle(route: Route) -> None:
            body = route.request.post_data_json
            body["input"].update(changes)
            route.continue_(post_data=json.dumps(body))

        return handle

    creates = "**/v1/predictions"
    page.route(creates, rewritten({"loras": [{"name": "retired-ink", "weight": 0.5}]}))
    generate_from_form(page, "a retired LoRA")
    expect(page.locator("#loras-error")).to_contain_text("Unknown LoRA 'retired-ink'")
    expect(page.locator("#loras")).to_be_focused()
    expect(page.locator("#generate-error")).to_be_empty()
    page.unroute(creates)

    page.route(creates, rewritten({"model": "retired-model"}))
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#model-error")).to_contain_text("Unknown model 'retired-model'")
    expect(page.locator("#model-error")).to_contain_text("tiny-sd, tiny-sd-b")
    expect(page.get_by_label("Model", exact=True)).to_be_focused()
    expect(page.locator("#loras-error")).to_be_empty()  # a new attempt clears the old error
    expect(page.locator("#job")).to_be_hidden()
    page.unroute(creates)
    no_script_errors(page)


def test_a_rendering_job_shows_its_live_preview_then_the_image(page: Page) -> None:
    """Two images: a preview each, and progress that reads per image and says its sum is a total."""
    page.get_by_label("Random seed").uncheck()
    generate_from_form(page, "a preview", size="64x64", steps="40", seed="99", n="2")
    page.wait_for_function(
        """() => /^Rendering 2 images: step \\d+ of 80 in all \\(image 1: \\d+ of 40, image 2: \\d+ of 40\\)$/
                   .test(document.getElementById('job-status').textContent)"""
    )
    # The prediction's preview (a JPEG data URL of preview_size) where the image will appear.
    page.wait_for_function(
        """() => [...document.querySelectorAll('#results li.preview img')].some(
             (img) => img.src.startsWith('data:image/jpeg;base64,') && img.complete
                      && img.naturalWidth === 32 && img.naturalHeight === 32)"""
    )
    expect(page.locator("#results li.preview img").first).to_have_attribute(
        "alt", "Preview of the image with seed 99, still rendering"
    )
    wait_for_image(page, 64, 64)
    expect(page.locator("#job-status")).to_contain_text("Done")
    expect(page.locator("#results li.preview")).to_have_count(0)  # the images replaced them
    expect(page.locator("#results .card img")).to_have_count(2)
    no_script_errors(page)


def test_bad_input_is_shown_next_to_the_field_it_names(page: Page) -> None:
    generate_from_form(page, "a bad size", size="63x64")
    expect(page.locator("#size-error")).to_contain_text("multiples of 8")
    expect(page.locator("#size")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#size")).to_be_focused()
    expect(page.locator("#generate-error")).to_be_empty()

    # A field the body's schema rejects comes back as "input.steps": still shown at Steps.
    page.locator("#size").fill("64x64")
    expect(page.locator("#size-error")).to_be_empty()
    page.locator("#steps").fill("0")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#steps-error")).to_contain_text("steps")
    expect(page.locator("#steps")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#size")).not_to_have_attribute("aria-invalid", "true")

    page.locator("#steps").fill("")
    page.get_by_label("Prompt", exact=True).fill("")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#prompt-error")).to_have_text("Enter a prompt.")
    expect(page.locator("#job")).to_be_hidden()  # nothing was sent
    no_script_errors(page)


def test_gallery_pages_and_loads_parameters_back_into_the_form(browser: Browser, base: str) -> None:
    prompt = f"gallery {uuid.uuid4().hex[:6]}"
    body = {
        "prompt": prompt,
        "negative_prompt": "blurry",
        "n": 3,
        "size": "80x64",
        "steps": 5,
        "guidance_scale": 3.5,
        "scheduler": "euler",
        "seed": 777,
        "response_format": "url",
    }
    with httpx.Client(base_url=base, headers=AUTH, timeout=120) as http:
        assert http.post("/v1/images/generations", json=body).status_code == 200

    page = open_page(browser, base, path="/?gallery_limit=2")
    try:
        thumbs = page.locator("#gallery button.thumb")
        expect(thumbs).to_have_count(2)
        more = page.get_by_role("button", name="Load more")
        expect(more).to_be_visible()
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
            stored = [image["id"] for image in http.get("/v1/images", params={"limit": 100}).json()["data"]]
        for shown in range(4, len(stored) + 2, 2):  # one more page per click, until there is none
            more.click()
            expect(thumbs).to_have_count(min(shown, len(stored)))
        expect(more).to_be_hidden()
        ids = thumbs.evaluate_all("items => items.map((item) => item.dataset.imageId)")
        assert ids == stored  # every stored image once, newest first
        labels = thumbs.evaluate_all("items => items.map((item) => item.getAttribute('aria-label'))")
        # Newest first; the three were stored within moments of each other, in any order.
        assert set(labels[:3]) == {f"Parameters of “{prompt}”, seed {seed}" for seed in (777, 778, 779)}
        expect(thumbs.first.locator("img")).to_have_attribute("loading", "lazy")

        # Keyboard only: open one of the three, close with Escape, open again, use it.
        third = page.get_by_role("button", name=f"Parameters of “{prompt}”, seed 777")
        third.focus()
        page.keyboard.press("Enter")
        dialog = page.locator("#image-dialog")
        expect(dialog).to_be_visible()
        expect(dialog.locator("dd[data-param='Seed']")).to_have_text("777")
        expect(dialog.locator("dd[data-param='Size']")).to_have_text("80x64")
        expect(dialog.locator("dd[data-param='Scheduler']")).to_have_text("euler")
        expect(dialog.locator("dd[data-param='Prompt']")).to_have_text(prompt)
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        third.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_role("button", name="Use these settings")).to_be_focused()
        page.keyboard.press("Enter")
        expect(dialog).to_be_hidden()

        expect(page.get_by_label("Prompt", exact=True)).to_have_value(prompt)
        expect(page.get_by_label("Negative prompt")).to_have_value("blurry")
        expect(page.locator("#size")).to_have_value("80x64")
        expect(page.locator("#steps")).to_have_value("5")
        expect(page.locator("#guidance_scale")).to_have_value("3.5")
        expect(page.locator("#scheduler")).to_have_value("euler")
        expect(page.locator("#seed")).to_have_value("777")
        expect(page.get_by_label("Random seed")).not_to_be_checked()

        # The loaded settings make the same image again: same seed, same size.
        page.get_by_role("button", name="Generate").click()
        wait_for_image(page, 80, 64)
        expect(page.locator("#results .card").first).to_contain_text("seed 777")
        no_script_errors(page)
    finally:
        page.context.close()


def test_a_network_failure_mid_job_resumes_polling(page: Page, base: str) -> None:
    blocker = start_blocker(base, steps=100)  # keeps the page's own job waiting while the network is down
    created: list[str] = []
    page.on("request", lambda r: r.method == "POST" and "predictions" in r.url and created.append(r.url))
    generate_from_form(page, "through an outage", steps="20", size="64x72")
    expect(page.locator("#job-status")).to_contain_text("Waiting for the model")

    polls = re.compile(r"/v1/predictions/pred_")
    page.route(polls, lambda route: route.abort("internetdisconnected"))
    expect(page.locator("#job-status")).to_contain_text("Connection lost")
    expect(page.locator("#job-status")).to_contain_text("Reconnecting")
    page.unroute(polls)
    cancel_blocker(base, blocker)

    wait_for_image(page, 64, 72)
    expect(page.locator("#job-status")).to_contain_text("Done")
    expect(page.locator("#generate-error")).to_be_empty()
    assert len(created) == 1, created  # the outage resumed the job, never resubmitted it
    no_script_errors(page)


def test_a_503_is_shown_at_the_button_with_its_retry_after(
    browser: Browser, base: str, tiny_model_dir: Path
) -> None:
    """Storage down: the prediction is refused with 503 + Retry-After; the page is under a prefix."""
    with socket.socket() as probe:  # a port nothing listens on: every S3 call is refused
        probe.bind(("127.0.0.1", 0))
        s3_port = probe.getsockname()[1]
    settings = AppSettings(
        model=str(tiny_model_dir),
        retry_after_s=3,
        image_store="s3",
        s3_bucket="down",
        s3_region="us-east-1",
        s3_endpoint_url=f"http://127.0.0.1:{s3_port}",
    )
    # No model replica: nothing here gets as far as rendering.
    cold = {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1}
    serve.run(compose(settings, {"autoscaling_config": cold}), name="down", route_prefix="/down")
    page = open_page(browser, base, key=None, path="/down/")  # relative URLs: /down/v1/...
    try:
        # Liveness says the ingress answers; readiness says no model replica can take work yet.
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/down/healthz").status_code == 200
            cold = http.get("/down/readyz")
            assert cold.status_code == 503 and cold.json()["status"] == "scaled_to_zero", cold.text
            assert "cold start" in cold.json()["detail"]
            # The model with a replica that rendered this module's images is ready.
            warm = http.get("/readyz")
            assert warm.status_code == 200 and warm.json()["model_replicas"]["running"] >= 1, warm.text
        expect(page.locator("#model-info")).to_contain_text("Model")
        expect(page.locator("#gallery-status")).to_contain_text("Image storage is unavailable")
        generate_from_form(page, "while storage is down")
        error = page.locator("#generate-error")
        expect(error).to_contain_text("Image storage is unavailable")
        expect(error).to_contain_text("Retry in 3 s")
        expect(page.get_by_role("button", name=re.compile(r"^Generate \(\d s\)$"))).to_be_disabled()
        expect(page.get_by_role("button", name="Generate", exact=True)).to_be_enabled()
        expect(page.locator("#job")).to_be_hidden()
        no_script_errors(page)
    finally:
        page.context.close()
        serve.delete("down")


def test_a_reload_resumes_watching_the_job(page: Page, base: str) -> None:
    blocker = start_blocker(base, steps=100)  # the page's job is still waiting when the page reloads
    generate_from_form(page, "across a reload", steps="8", size="72x64")
    expect(page.locator("#job-status")).to_contain_text("Waiting for the model")
    page.reload()
    expect(page.locator("#job")).to_be_visible()
    expect(page.locator("#job-status")).to_contain_text("Waiting for the model")  # watching again
    cancel_blocker(base, blocker)
    wait_for_image(page, 72, 64)
    expect(page.locator("#results .card").first).to_contain_text("72x64")
    assert page.evaluate("localStorage.getItem('raydiffusion.activePrediction')") is None
    no_script_errors(page)


def test_an_init_image_and_a_mask_picked_as_files_start_img2img_and_inpainting(
    page: Page, base: str, tmp_path: Path
) -> None:
    picture = png_file(tmp_path / "picture.png", 72, 64, seed=1)
    page.get_by_label("Init image").set_input_files(picture)
    page.get_by_label("Strength").fill("0.5")
    sent, prediction = created_by(page, lambda: generate_from_form(page, "from a file", steps="8"))
    assert sent["image"].startswith("data:image/png;base64,") and sent["strength"] == 0.5
    assert prediction["input"]["kind"] == "img2img"
    card = page.locator("#results .card").first
    expect(card).to_contain_text("img2img at strength 0.5", timeout=TIMEOUT_MS)
    wait_for_image(page, 72, 64)  # the picture's own size: Size was left empty
    (url,) = finished(base, prediction["id"])["output"]

    # The stored image's record says how it was made, and the gallery dialog shows it.
    thumb = page.locator("#gallery button.thumb").first
    expect(thumb.locator("img")).to_have_attribute("src", url, timeout=TIMEOUT_MS)
    thumb.click()
    dialog = page.locator("#image-dialog")
    expect(dialog.locator("dd[data-param='Kind']")).to_have_text("img2img")
    expect(dialog.locator("dd[data-param='Strength']")).to_have_text("0.5")
    page.get_by_role("button", name="Close").click()

    # With a mask it is inpainting (the strength field left to the server's default, 1).
    mask = np.zeros((64, 72), dtype=np.uint8)
    mask[:, 36:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    page.get_by_label("Mask (white = repaint)").set_input_files(tmp_path / "mask.png")
    page.get_by_label("Strength").fill("")
    sent, prediction = created_by(page, lambda: page.get_by_role("button", name="Generate").click())
    assert sent["mask"].startswith("data:image/png;base64,")
    assert prediction["input"]["kind"] == "inpaint" and prediction["input"]["strength"] == 1.0
    expect(card).to_contain_text("inpaint at strength 1", timeout=TIMEOUT_MS)  # the new card
    wait_for_image(page, 72, 64)
    assert finished(base, prediction["id"])["status"] == "succeeded"
    no_script_errors(page)


def test_upscale_and_vary_a_result_from_its_buttons_and_from_the_gallery(page: Page, base: str) -> None:
    page.get_by_label("Random seed").uncheck()
    generate_from_form(page, "to be upscaled", seed="4321", steps="8")
    wait_for_image(page, 64, 64)
    card = page.locator("#results .card").first
    first_url = card.locator("img").get_attribute("src")

    # Upscale: the stored image's URL (never re-uploaded), twice the size, the same seed.
    sent, prediction = created_by(
        page, lambda: card.get_by_role("button", name="Upscale the image with seed 4321").click()
    )
    assert sent["image"] == first_url and sent["upscale"] is True and sent["seed"] == 4321
    assert prediction["input"]["kind"] == "upscale" and prediction["input"]["size"] == "128x128"
    # The server's upscale_strength, on the new card (the old one goes when the job starts).
    expect(card).to_contain_text("upscale at strength 0.3", timeout=TIMEOUT_MS)
    wait_for_image(page, 128, 128)
    expect(card).to_contain_text("seed 4321")
    upscaled_url = card.locator("img").get_attribute("src")
    assert upscaled_url != first_url

    # Vary: that image at the variation strength /v1/models reports, a new seed, the same size.
    sent, prediction = created_by(
        page, lambda: card.get_by_role("button", name="Vary the image with seed 4321").click()
    )
    assert sent["image"] == upscaled_url and sent["strength"] == 0.55 and "seed" not in sent
    (new_seed,) = prediction["seeds"]
    assert new_seed != 4321 and prediction["input"]["kind"] == "img2img"
    expect(card).to_contain_text(f"seed {new_seed}", timeout=TIMEOUT_MS)
    expect(card).to_contain_text("img2img at strength 0.55")
    wait_for_image(page, 128, 128)
    varied = finished(base, prediction["id"])
    assert varied["status"] == "succeeded" and varied["output"][0] not in (first_url, upscaled_url)
    # Upscale and Vary added their images above the earlier ones: all three are still shown.
    shown = page.locator("#results .card img")
    expect(shown).to_have_count(3)
    assert shown.evaluate_all("images => images.map((image) => image.getAttribute('src'))")[1:] == [
        upscaled_url,
        first_url,
    ]

    # The same from the gallery dialog: Vary on the first (64x64) image.
    page.get_by_role("button", name="Parameters of “to be upscaled”, seed 4321").last.click()
    dialog = page.locator("#image-dialog")
    expect(dialog.locator("img")).to_have_attribute("src", first_url)
    expect(dialog.locator("dd[data-param='Kind']")).to_have_text("txt2img")
    sent, prediction = created_by(page, lambda: dialog.get_by_role("button", name="Vary").click())
    assert sent["image"] == first_url and sent["strength"] == 0.55
    expect(dialog).to_be_hidden()
    expect(card).to_contain_text(f"seed {prediction['seeds'][0]}", timeout=TIMEOUT_MS)
    wait_for_image(page, 64, 64)
    expect(shown).to_have_count(4)
    no_script_errors(page)


def test_bad_picture_inputs_are_shown_next_to_their_fields(page: Page, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a picture")
    page.get_by_label("Init image").set_input_files(tmp_path / "notes.txt")
    generate_from_form(page, "from a text file")
    expect(page.locator("#image-error")).to_contain_text("'input.image' is not a PNG, JPEG or WebP image")
    expect(page.locator("#image")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#image")).to_be_focused()
    expect(page.locator("#generate-error")).to_be_empty()
    expect(page.locator("#job")).to_be_hidden()

    (tmp_path / "empty.png").write_bytes(b"")
    page.get_by_label("Init image").set_input_files(tmp_path / "empty.png")
    expect(page.locator("#image-error")).to_be_empty()  # a new pick clears the old error
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#image-error")).to_contain_text("'input.image'")

    page.get_by_label("Init image").set_input_files(png_file(tmp_path / "picture.png", 72, 64, seed=2))
    page.get_by_label("Strength").fill("1.5")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#strength-error")).to_contain_text("greater than 0 and at most 1")
    # The hint under the field says the bounds the API enforces.
    expect(page.locator("#strength-hint")).to_contain_text("Greater than 0 and at most 1")
    expect(page.locator("#image")).not_to_have_attribute("aria-invalid", "true")

    page.get_by_label("Strength").fill("")
    page.get_by_label("Mask (white = repaint)").set_input_files(png_file(tmp_path / "m.png", 64, 64, 3, "L"))
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#mask-error")).to_contain_text("is 64x64 but the image is 72x64")

    # Clear picture empties all four; a strength alone is then refused at the strength field.
    page.get_by_role("button", name="Clear picture").click()
    expect(page.locator("#mask-error")).to_be_empty()
    assert page.locator("#image").evaluate("input => input.files.length") == 0
    page.get_by_label("Strength").fill("0.5")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#strength-error")).to_contain_text("needs 'input.image'")
    expect(page.locator("#job")).to_be_hidden()
    no_script_errors(page)


def test_a_model_without_picture_tasks_offers_no_picture_inputs_and_no_vary_or_upscale(
    page: Page, base: str, tmp_path: Path
) -> None:
    """/v1/models' capabilities.tasks decide what the form and the results offer: tiny-sd-text
    runs text-to-image only, so its picture inputs are disabled (a picture picked for another
    model is not sent) and its images have no Vary or Upscale, on their card or in the gallery."""
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        listed = {model["id"]: model for model in http.get("/v1/models").json()["data"]}
    assert listed["tiny-sd-text"]["capabilities"]["tasks"] == ["txt2img"]
    assert "img2img" in listed["tiny-sd"]["capabilities"]["tasks"]
    model = page.get_by_label("Model", exact=True)
    expect(model).to_have_value("tiny-sd")
    picture = ("image", "mask", "strength", "upscale")
    for name in picture:
        expect(page.locator(f"#{name}")).to_be_enabled()
    # SD 1.5: its own samplers, a negative prompt as usual, no true CFG.
    expect(page.locator("#scheduler option[value='dpmpp_2m_karras']")).to_have_text("DPM++ 2M Karras")
    expect(page.locator("#scheduler option[value='flow_euler']")).to_have_count(0)
    expect(page.get_by_label("Negative prompt")).to_be_visible()
    expect(page.locator("#true_cfg_scale-field")).to_be_hidden()
    page.get_by_label("Init image").set_input_files(png_file(tmp_path / "picture.png", 64, 64, seed=4))

    model.select_option("tiny-sd-text")
    expect(page.locator("#model-hint")).to_have_text("SD 1.5 · text only")
    expect(page.locator("#model-caps")).to_have_text("Tasks: text to image.")
    expect(page.locator("#picture-hint")).to_have_text("This model draws from text only: no picture inputs.")
    for name in picture:
        expect(page.locator(f"#{name}")).to_be_disabled()
    expect(page.get_by_role("button", name="Clear picture")).to_be_disabled()
    page.get_by_label("Random seed").uncheck()
    sent, prediction = created_by(page, lambda: generate_from_form(page, "text only", seed="1357", steps="4"))
    assert sent["model"] == "tiny-sd-text" and "image" not in sent, sent
    assert prediction["input"].get("kind", "txt2img") == "txt2img"
    card = page.locator("#results .card").first
    expect(card).to_contain_text("tiny-sd-text", timeout=TIMEOUT_MS)
    wait_for_image(page, 64, 64)
    expect(card.get_by_role("button", name="Reuse seed 1357")).to_be_visible()
    for action in ("Vary", "Upscale"):  # made, but hidden
        button = card.locator("button", has_text=action)
        expect(button).to_have_count(1)
        expect(button).to_be_hidden()
    (url,) = wait_for(lambda: finished(base, prediction["id"])["output"], 60, "the prediction's output")

    # Its gallery dialog offers no Vary or Upscale either.
    entry = page.locator("#gallery li").filter(has=page.locator(f"img[src='{url}']"))
    entry.locator("button.thumb").click()
    dialog = page.locator("#image-dialog")
    expect(dialog.locator("dd[data-param='Model']")).to_have_text("tiny-sd-text")
    expect(dialog.get_by_role("button", name="Use these settings")).to_be_visible()
    expect(dialog.locator("#dialog-vary")).to_be_hidden()
    expect(dialog.locator("#dialog-upscale")).to_be_hidden()
    page.get_by_role("button", name="Close").click()

    # Back on a model with every task: offered again, the picked picture still there.
    model.select_option("tiny-sd")
    expect(page.locator("#picture-hint")).to_be_hidden()
    for name in picture:
        expect(page.locator(f"#{name}")).to_be_enabled()
    assert page.locator("#image").evaluate("input => input.files.length") == 1
    no_script_errors(page)
