"""The dashboard at /ui in a real browser: Debian's chromium, driven by Playwright.

Its own server and data folder, so the jobs it lists are the ones made here: a real (short) LoRA
fine-tune whose loss curve the page draws, an agent run whose steps stream into the chat box, a
vision tool whose picture shows, and with API keys set, the page itself asking for one.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, sync_playwright

from agentd.config import Settings
from agentd.server.app import create_app
from pipelines.registry import ModelRegistry, ModelSpec
from tests.conftest import DATA_DIR, ENGINE, MODEL, RunningServer
from tests.fixtures.tickets import ticket_records

CHROMIUM = "/usr/bin/chromium"  # `make test` installs Debian's package; Playwright downloads no browser here
STEPS = 3


@pytest.fixture(scope="module")
def ui_registry():
    registry = ModelRegistry([ModelSpec(id=MODEL, kind="embedded")], DATA_DIR, backend=ENGINE)
    asyncio.run(registry.load_all())
    yield registry
    asyncio.run(registry.close())


@pytest.fixture(scope="module")
def ui_server(ui_registry, tmp_path_factory):
    running = RunningServer(create_app(Settings(data_dir=tmp_path_factory.mktemp("ui")), ui_registry))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium: `make test` installs it"
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture()
def page(browser) -> Page:
    context = browser.new_context()
    opened = context.new_page()
    opened.errors = []
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()


@pytest.fixture(scope="module")
def finished_job(ui_server) -> str:
    client = ui_server.client()
    records = "".join(json.dumps(record) + "\n" for record in ticket_records(8)).encode()
    uploaded = client.files.create(file=("tickets.jsonl", io.BytesIO(records)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=uploaded.id, hyperparameters={
        "n_epochs": 1, "batch_size": 1, "max_steps": STEPS, "learning_rate": 1e-3, "seq_len": 128})
    deadline = time.monotonic() + 300
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(1)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    return job.id


def test_the_page_loads_and_each_tab_shows_the_servers_state(ui_server, page):
    page.goto(f"{ui_server.url}/ui")
    assert page.title() == "agentd"
    page.wait_for_selector("#chat-model option[value='agentd-react']", state="attached")
    page.click("nav button[data-tab='tools']")
    page.wait_for_selector("#tool-list button:text-is('calculator')")
    page.click("#tool-list button:text-is('calculator')")
    assert '"expression"' in page.text_content("#tool-schema")  # inside a closed <details>
    page.fill("#tool-form input[name='expression']", "6 * 7")
    page.click("#tool-form button[type='submit']")
    page.wait_for_selector("#tool-result pre:text('42')")
    page.click("nav button[data-tab='evals']")
    page.wait_for_selector("#leaderboard-chart text")
    page.click("nav button[data-tab='deployments']")
    page.wait_for_selector("#deployments-table")
    assert page.errors == []


def test_an_answer_shows_its_tables_pictures_and_links_and_never_runs_markup(ui_server, page):
    page.goto(f"{ui_server.url}/ui")
    shown = page.evaluate("""() => {
        const box = document.createElement('div');
        renderAnswer(box, 'ft:x is better.\\n\\n| task | base | tuned |\\n|---|---|---|\\n| qa | 0.0 | 1.0 |\\n'
                          + '<img src=x onerror=alert(1)> ![edges](/v1/files/file-1/content) [log](javascript:alert(1))');
        return {rows: [...box.querySelectorAll('table tr')].map(r => [...r.children].map(c => c.textContent)),
                images: [...box.querySelectorAll('img')].map(i => i.getAttribute('src')),
                links: [...box.querySelectorAll('a')].map(a => a.getAttribute('href')), text: box.textContent};
    }""")
    assert shown["rows"] == [["task", "base", "tuned"], ["qa", "0.0", "1.0"]]
    assert shown["images"] == ["/v1/files/file-1/content"]  # the <img> in the text stays text
    assert shown["links"] == ["#"] and "<img src=x" in shown["text"]
    assert page.errors == []


def test_a_finished_jobs_loss_curve_renders(ui_server, finished_job, page):
    page.goto(f"{ui_server.url}/ui")
    page.click("nav button[data-tab='jobs']")
    page.wait_for_selector(f"#jobs-table tr[data-job='{finished_job}']")
    page.wait_for_selector(f"#loss-chart[data-job='{finished_job}'] polyline.series-train_loss")
    points = page.get_attribute("#loss-chart polyline.series-train_loss", "points").split()
    assert len(points) == STEPS  # one point per training step, from /fine_tuning/jobs/{id}/metrics
    assert "succeeded" in page.inner_text("#job-title")
    assert "succeeded" in page.inner_text("#job-events")
    assert page.errors == []


def test_a_chat_message_streams_the_agents_steps_before_its_answer(ui_server, page):
    page.goto(f"{ui_server.url}/ui")
    page.wait_for_selector("#chat-model option[value='agentd-react']", state="attached")
    page.select_option("#chat-model", "agentd-react")
    # When each step and each change of the answer reached the page, in the page's own clock.
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver((changes) => {
            for (const change of changes) {
                const target = change.target.nodeType === 1 ? change.target : change.target.parentElement;
                const kind = target.closest('.steps') ? 'step' : target.closest('.answer') ? 'answer' : null;
                if (kind) window.seen.push([kind, performance.now()]);
            }
        }).observe(document.querySelector('#chat-log'), {childList: true, subtree: true, characterData: true});
    }""")
    page.fill("#chat-input", "4821 crates hold 377 bolts each. How many bolts is that?")
    page.click("#chat-send")
    page.wait_for_selector(".message.assistant .steps li.step-tool_call")
    page.wait_for_function("!document.querySelector('#chat-send').disabled", timeout=120_000)
    assert "calculator" in page.inner_text(".steps li.step-tool_call")
    assert "1817517" in page.inner_text(".steps li.step-observation").replace(",", "")
    assert page.inner_text(".message.assistant .answer").strip()
    seen = page.evaluate("window.seen")
    first_step = min(t for kind, t in seen if kind == "step")
    last_answer = max(t for kind, t in seen if kind == "answer")
    assert first_step < last_answer  # the steps were on screen while the answer was still coming
    assert page.errors == []


def test_an_image_result_shows(ui_server, page, tmp_path):
    picture = tmp_path / "square.png"
    image = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(image).rectangle((24, 24, 72, 72), fill="black")
    image.save(picture)
    page.goto(f"{ui_server.url}/ui")
    page.click("nav button[data-tab='tools']")
    page.click("#tool-list button:text-is('detect_edges')")
    page.set_input_files("#tool-form input[type='file']", str(picture))
    page.click("#tool-form button[type='submit']")
    shown = page.wait_for_selector("#tool-result img")
    page.wait_for_function("document.querySelector('#tool-result img').naturalWidth > 0")
    assert shown.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [96, 96]
    assert page.errors == []


def test_with_api_keys_the_dashboard_asks_for_one_and_then_works(ui_registry, tmp_path, page):
    guarded = RunningServer(create_app(Settings(data_dir=tmp_path, api_keys=["s3cret"]), ui_registry))
    try:
        for path in ("/ui", "/ui/dashboard.js", "/v1/models"):
            assert httpx.get(f"{guarded.url}{path}").status_code == 401, path
        wrong = httpx.post(f"{guarded.url}/ui/login", data={"key": "nope"})
        assert wrong.status_code == 401 and "not one of" in wrong.text
        page.goto(f"{guarded.url}/ui")
        page.fill("input[name='key']", "s3cret")
        page.click("button[type='submit']")
        page.wait_for_selector("nav button[data-tab='tools']")
        page.click("nav button[data-tab='tools']")
        page.wait_for_selector("#tool-list button:text-is('calculator')")  # the API took the page's cookie
        cookie = next(c for c in page.context.cookies() if c["name"] == "agentd_key")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.errors == []
    finally:
        guarded.stop()
