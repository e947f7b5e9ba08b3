"""The dashboard in a real headless browser against a real `zscl serve` (embedded worker).

One walk through every page, as a user would: bad input first (a wrong admin key, a corrupt
archive: the API's message on screen, nothing stored), then two uploads, a job watched live to
its gate report, a rollback to an older version, and a photo of a cat classified by it. A second
test serves a read key (ZSCL_INFERENCE_KEY): the page asks for it once and sends it.

The store holds two versions at start: the colour-pretrained tiny CLIP (served; jobs on it take
seconds) and the offline starter (older; the one that knows a cat, built once per test session
by the ``starter_dir`` fixture). Screenshots of each page go to ``$ZSCL_SCREENSHOTS`` when set,
else to the test's tmp_path.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from PIL import Image
from skimage import data as skimage_data

from tests.helpers import ADMIN_KEY, INFERENCE_KEY
from tests.helpers.archives import colours_zip, stripes_zip
from tests.helpers.colour import live_server, make_settings, png_bytes
from tests.helpers.synthetic import FAST_HPARAMS

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
TERMINAL = ("succeeded", "rejected", "failed", "cancelled")


try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says how to install it
    expect = None


@pytest.fixture()
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard test drives a real browser; install "
                    f"it with `apt-get install chromium` (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (a dev dependency; "
                    "it drives the system chromium, no browser download)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture()
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("ZSCL_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture()
def stack(stack_factory, starter_dir, tmp_path):
    """API + embedded worker; the tiny colour model served, the starter registered beside it."""
    stack = stack_factory(broker_url=f"sqla+sqlite:///{tmp_path / 'var' / 'broker.sqlite'}",
                          ZSCL_START_WORKER="true")
    # hard links: the starter's weights are not copied, and the version store stays per test
    shutil.copytree(starter_dir, stack.data_dir / "versions" / starter_dir.name,
                    copy_function=os.link)
    stack.api()
    return stack


def cat_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.chelsea()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def datasets(stack) -> list[dict]:
    return httpx.get(f"{stack.url}/v1/datasets", timeout=10).json()


class Dashboard:
    """The page, with the few moves the test repeats."""

    def __init__(self, page, url: str, folder: Path):
        self.page, self.url, self.folder = page, url, folder

    def open(self, route: str) -> None:
        self.page.goto("about:blank")  # a full load each time, as a user opening a link
        self.page.goto(f"{self.url}/ui/#/{route}")
        self.wait_ready(route)

    def wait_ready(self, name: str) -> None:
        self.page.wait_for_selector(f"body[data-ready='{name}']", timeout=30_000)

    def notice(self) -> str:
        """The page-wide message (an action hides it when it starts)."""
        self.page.locator("#notice").wait_for(state="visible", timeout=60_000)
        return self.page.inner_text("#notice-text")

    def dismiss(self) -> None:
        self.page.click("#notice-close")

    def enter_admin_key(self, key: str) -> None:
        route = self.page.get_attribute("body", "data-ready")
        self.page.click("#admin-key-button")
        self.page.fill("#key-input", key)
        self.page.click("#key-ok")
        # the key state changes, then the page draws again with the admin controls
        expect(self.page.locator("#key-state")).to_have_text("admin")
        self.wait_ready(route)

    def drop(self, selector: str, name: str, mime: str, body: bytes) -> None:
        """Drag a file from the desktop and drop it on ``selector``."""
        transfer = self.page.evaluate_handle(
            """([name, type, bytes]) => {
                const transfer = new DataTransfer();
                transfer.items.add(new File([new Uint8Array(bytes)], name, { type }));
                return transfer;
            }""", [name, mime, list(body)])
        self.page.dispatch_event(selector, "drop", {"dataTransfer": transfer})

    def upload(self, name: str, body: bytes, filename: str, suite: bool = False,
               drop: bool = False) -> None:
        if drop:
            self.drop("#upload .drop", filename, "application/zip", body)
        else:
            self.page.set_input_files("#upload-input", files=[{
                "name": filename, "mimeType": "application/zip", "buffer": body}])
        self.page.fill("#upload-name", name)
        self.page.set_checked("#upload-suite", suite)
        self.page.click("#upload-button")

    def progress(self) -> float:
        return float(self.page.get_attribute("#job-progress [role=progressbar]", "aria-valuenow"))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)


def test_dashboard_walkthrough(stack, browser, screenshots):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page_errors, urls = [], []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    # a CSP violation is a console error; so is every 4xx the test provokes (those are expected)
    page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
            and page_errors.append(m.text))
    page.on("request", lambda request: urls.append(request.url))
    ui = Dashboard(page, stack.url, screenshots)
    served_at_start = stack.served()

    # "/" leads to the dashboard; without a key it is read-only
    page.goto(f"{stack.url}/")
    ui.wait_ready("jobs")
    assert page.url == f"{stack.url}/ui/"
    assert page.inner_text("#key-state") == "read-only"
    ui.open("datasets")
    assert not page.is_visible("#upload")

    # a wrong admin key: the API's message, verbatim; nothing stored; the key is forgotten
    ui.enter_admin_key("not-the-admin-key")
    page.wait_for_selector("#upload", state="visible")
    ui.upload("stripes", stripes_zip(), "stripes.zip")
    assert ui.notice() == "the X-API-Key header does not hold the admin key"
    assert datasets(stack) == []
    assert page.inner_text("#key-state") == "read-only" and not page.is_visible("#upload")
    ui.dismiss()

    # a corrupt archive: the API's own message for the same bytes; nothing stored
    corrupt = b"PK\x03\x04 this is no zip archive" + bytes(range(256)) * 4
    ui.enter_admin_key(ADMIN_KEY)
    ui.upload("broken", corrupt, "broken.zip")
    shown = ui.notice()
    direct = httpx.post(f"{stack.url}/v1/datasets", params={"name": "broken"}, content=corrupt,
                        headers={"X-API-Key": ADMIN_KEY, "Content-Type": "application/zip"})
    assert 400 <= direct.status_code < 500 and shown == direct.json()["detail"]
    assert datasets(stack) == [] and stack.served() == served_at_start
    ui.dismiss()

    # two uploads through the page: a suite and a task
    ui.upload("colours", colours_zip(), "colours.zip", suite=True, drop=True)
    assert ui.notice().startswith("uploaded colours: 4 classes")
    ui.dismiss()
    ui.upload("stripes", stripes_zip(), "stripes.zip")
    assert ui.notice().startswith("uploaded stripes: 2 classes")
    rows = page.locator("#datasets-table tbody tr")
    assert rows.count() == 2 and page.is_visible("tr[data-name='colours'] .badge.suite")
    ui.shot("datasets")

    # start a job on stripes and watch it: progress advances, losses draw, the gate reports
    stripes = next(d for d in datasets(stack) if d["name"] == "stripes")
    page.click(f"button[data-new-job='{stripes['id']}']")
    page.fill("#job-hparams", json.dumps({**FAST_HPARAMS, "steps": 120}))
    page.fill("#job-gate", json.dumps({"confidence": 0.5}))
    page.click("#job-submit")
    ui.wait_ready("job")
    job_id = page.evaluate("location.hash").split("/")[-1]
    seen = []
    deadline = time.monotonic() + 300
    while not page.is_visible("#gate-table") and time.monotonic() < deadline:
        seen.append(ui.progress())
        if 0.3 < seen[-1] < 1 and not any(0.3 < v < 1 for v in seen[:-1]):
            ui.shot("job-running")
        page.wait_for_timeout(100)
    assert page.is_visible("#gate-table"), (seen[-5:], stack.log_tail())
    assert all(b >= a - 1e-3 for a, b in pairwise(seen)), f"progress went backwards: {seen}"
    assert any(0 < v < 1 for v in seen) and len({v for v in seen if 0 < v <= 1}) >= 2, seen
    points = page.get_attribute("polyline[data-loss='ce']", "points").split()
    assert len(points) >= 10
    job = stack.get_job(job_id)
    assert job["state"] in TERMINAL and job["report"]["rows"]
    gate_rows = page.locator("#gate-table tbody tr")
    assert gate_rows.count() == len(job["report"]["rows"]) == 2
    first = gate_rows.nth(0).inner_text()
    assert "stripes" in first and "new_task" in first
    assert "colours" in gate_rows.nth(1).inner_text()
    assert page.locator(".gate-chart rect[data-bar='after']").count() == 2
    if job["state"] == "succeeded":  # the header follows the promotion
        expect(page.locator("#served")).to_have_attribute("data-version", job["candidate_version"],
                                                          timeout=15_000)
    ui.shot("job")

    # a long job, cancelled from its page once it runs
    ui.open("datasets")
    page.click(f"button[data-new-job='{stripes['id']}']")
    page.fill("#job-hparams", json.dumps({**FAST_HPARAMS, "steps": 5000}))
    page.click("#job-submit")
    ui.wait_ready("job")
    long_id = page.evaluate("location.hash").split("/")[-1]
    deadline = time.monotonic() + 120
    while ui.progress() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    page.click("#cancel-job")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    assert stack.get_job(long_id)["state"] == "cancelled"

    ui.open("jobs")
    assert page.get_attribute(f"tr[data-job='{job_id}']", "data-state") == job["state"]
    assert page.get_attribute(f"tr[data-job='{long_id}']", "data-state") == "cancelled"
    ui.shot("jobs")

    # roll back to the older starter (confirm dialog); the served version changes
    versions = httpx.get(f"{stack.url}/v1/models", timeout=10).json()["versions"]
    starter = next(v for v in versions if v["report"].get("name") == "starter")
    ui.open("models")
    assert page.locator("#models-table tbody tr").count() == len(versions) >= 2
    page.click(f"button[data-activate='{starter['id']}']")
    page.click("#confirm-yes")
    expect(page.locator("#serving-version")).to_have_text(starter["id"], timeout=120_000)
    assert ui.notice().startswith(f"now serving {starter['id']}")
    assert stack.served() == starter["id"]
    assert page.is_visible(f"tr[data-version='{starter['id']}'] .served-badge")
    ui.shot("models")

    # a photo of a cat, through the page, answered by the starter
    ui.open("try")
    ui.drop("#try-form .drop", "chelsea.jpg", "image/jpeg", cat_jpeg())
    page.fill("#try-labels", "cat, dog, car, airplane")
    page.click("#try-button")
    page.wait_for_selector("#try-version", timeout=60_000)
    assert page.inner_text("#try-version") == starter["id"]
    ranked = page.locator("ol.ranked li").evaluate_all("items => items.map(i => i.dataset.label)")
    assert ranked[0] == "cat", ranked
    ui.shot("try")

    assert page_errors == []
    assert [u for u in urls if not u.startswith((stack.url, "data:", "blob:", "about:"))] == []
    assert not [u for u in urls if ADMIN_KEY in u or "not-the-admin-key" in u]


def test_a_read_key_is_asked_for_once_and_sent_with_every_read(data_dir, browser):
    with live_server(make_settings(data_dir, inference_key=INFERENCE_KEY)) as url:
        page = browser.new_page()
        urls = []
        page.on("request", lambda request: urls.append(request.url))
        page.goto(f"{url}/ui/#/models")
        page.wait_for_selector("body[data-ready='models']")
        assert page.inner_text("main .error") == "send the inference key in the X-API-Key header"
        page.click("main button.primary")
        page.fill("#key-input", INFERENCE_KEY)
        page.click("#key-ok")
        expect(page.locator("#key-state")).to_have_text("read key")
        page.wait_for_selector("tr[data-version='v-colour'] .served-badge")
        assert not page.is_visible("[data-activate]")  # a read key opens no admin control

        page.click("[data-nav='try']")  # the key is kept: no second prompt
        page.wait_for_selector("body[data-ready='try']")
        page.set_input_files("#try-input", files=[{"name": "red.png", "mimeType": "image/png",
                                                   "buffer": png_bytes("red")}])
        page.fill("#try-labels", "red, green, blue, yellow")
        page.click("#try-button")
        page.wait_for_selector("#try-version")
        assert page.inner_text("#try-version") == "v-colour"
        assert page.locator("ol.ranked li").first.get_attribute("data-label") == "red"
        assert not [u for u in urls if INFERENCE_KEY in u]
