"""The dashboard in a real headless browser against a real `zscl serve` (embedded worker).

One walk through every page, as a user would: bad input first (a wrong admin key, a corrupt
archive: the API's message on screen, nothing stored), then two uploads, a job watched live to
its gate report, a rollback to an older version, and a photo of a cat classified by it.

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
from pathlib import Path

import httpx
import pytest
from PIL import Image
from skimage import data as skimage_data

from tests.e2e.conftest import ADMIN_KEY
from tests.worker.conftest import FAST_HPARAMS, colours_zip, stripes_zip

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
TERMINAL = ("succeeded", "rejected", "failed", "cancelled")


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
        self.page.wait_for_function("document.getElementById('key-state').textContent === 'admin'")
        self.wait_ready(route)

    def upload(self, name: str, body: bytes, filename: str, suite: bool = False) -> None:
        self.page.set_input_files("#upload-input", files=[{
            "name": filename, "mimeType": "application/zip", "buffer": body}])
        self.page.fill("#upload-name", name)
        self.page.set_checked("#upload-suite", suite)
        self.page.click("#upload-button")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)


def test_dashboard_walkthrough(stack, browser, screenshots):
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page_errors, foreign = [], []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("request", lambda r: r.url.startswith((stack.url, "data:", "blob:")) or foreign.append(r.url))
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
    ui.upload("colours", colours_zip(), "colours.zip", suite=True)
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
        value = page.get_attribute("#job-progress [role=progressbar]", "aria-valuenow")
        seen.append(float(value))
        if 0.3 < seen[-1] < 1 and not (screenshots / "job-running.png").exists():
            ui.shot("job-running")
        page.wait_for_timeout(100)
    assert page.is_visible("#gate-table"), (seen[-5:], stack.log_tail())
    assert all(b >= a - 1e-3 for a, b in zip(seen, seen[1:])), f"progress went backwards: {seen}"
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
    ui.shot("job")

    ui.open("jobs")
    assert page.get_attribute(f"tr[data-job='{job_id}']", "data-state") == job["state"]
    ui.shot("jobs")

    # roll back to the older starter (confirm dialog); the served version changes
    versions = httpx.get(f"{stack.url}/v1/models", timeout=10).json()["versions"]
    starter = next(v for v in versions if v["report"].get("name") == "starter")
    ui.open("models")
    assert page.locator("#models-table tbody tr").count() == len(versions) >= 2
    page.click(f"button[data-activate='{starter['id']}']")
    page.click("#confirm-yes")
    page.wait_for_function("id => document.getElementById('serving-version')?.textContent === id",
                           arg=starter["id"], timeout=120_000)
    assert ui.notice().startswith(f"now serving {starter['id']}")
    assert stack.served() == starter["id"]
    assert page.is_visible(f"tr[data-version='{starter['id']}'] .served-badge")
    ui.shot("models")

    # a photo of a cat, through the page, answered by the starter
    ui.open("try")
    page.set_input_files("#try-input", files=[{"name": "chelsea.jpg", "mimeType": "image/jpeg",
                                               "buffer": cat_jpeg()}])
    page.fill("#try-labels", "cat, dog, car, airplane")
    page.click("#try-button")
    page.wait_for_selector("#try-version", timeout=60_000)
    assert page.inner_text("#try-version") == starter["id"]
    ranked = page.locator("ol.ranked li").evaluate_all("items => items.map(i => i.dataset.label)")
    assert ranked[0] == "cat", ranked
    ui.shot("try")

    assert page_errors == [] and foreign == []
