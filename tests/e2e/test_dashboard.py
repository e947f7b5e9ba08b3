"""The dashboard in a real headless browser against a real `zscl serve` (embedded worker).

One walk through every page, as a user would: bad input first (a wrong admin key, a corrupt
archive: the API's message on screen, nothing stored), then two uploads, a job watched live to
its gate report, a rollback to an older version, and a photo of a cat classified by it. A second
test serves a read key (ZSCL_INFERENCE_KEY): the page asks for it once and sends it. A third
walks the feedback loop on the colour CLIP: a prediction corrected from Try it, the Feedback
page's counts and live accuracy, a dataset made of the answers, the auto-update policy saved
and the job it starts, an answer deleted.

The store holds two versions at start: the colour-pretrained tiny CLIP (served; jobs on it take
seconds) and the offline starter (older; the one that knows a cat, built once per test session
by the ``starter_dir`` fixture). Screenshots of each page go to ``$ZSCL_SCREENSHOTS`` when set,
else to the test's tmp_path, named as in docs/img: ``dashboard-<page>.png`` (the README shows
dashboard-job, -models, -try and -feedback).

Layout is checked where a user saw it break: no id wraps onto a second line, every axis label
of a loss chart lies inside its chart (an l2 term of 7e-5 once showed as "000070"), the
settings are tables with the defaults marked, and an action the API would refuse (a dataset a
job trained on marked as a suite) is disabled with the reason as its tooltip.
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

from tests.helpers import ADMIN, ADMIN_KEY, INFERENCE_KEY
from tests.helpers.archives import colours_zip, stripes_zip
from tests.helpers.colour import SOLID, live_server, make_settings, png_bytes
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

    def open(self, route: str, ready: str | None = None) -> None:
        """Load ``route`` (e.g. "feedback/colours") and wait for its page (``ready``: "feedback")."""
        self.page.goto("about:blank")  # a full load each time, as a user opening a link
        self.page.goto(f"{self.url}/ui/#/{route}")
        self.wait_ready(ready or route)

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
        self.page.screenshot(path=str(self.folder / f"dashboard-{name}.png"), full_page=True)

    def wrapped_ids(self) -> list[str]:
        """Ids (``code``, the header's served version) drawn on more than one line."""
        return self.page.evaluate("""() => [...document.querySelectorAll("main code, #served")]
            .filter((el) => el.offsetParent !== null && el.textContent.trim())
            .filter((el) => el.getBoundingClientRect().height >
                            1.6 * parseFloat(getComputedStyle(el).fontSize))
            .map((el) => el.textContent)""")

    def axis_labels_outside(self, selector: str) -> list[str]:
        """Axis labels of the charts under ``selector`` that stick out of their chart."""
        return self.page.evaluate("""(selector) => [...document.querySelectorAll(
                `${selector} svg.chart text.axis`)].filter((text) => {
            const box = text.getBoundingClientRect();
            const frame = text.ownerSVGElement.getBoundingClientRect();
            return box.left < frame.left || box.right > frame.right ||
                   box.top < frame.top || box.bottom > frame.bottom;
        }).map((text) => text.textContent)""", selector)

    def settings(self, table: str) -> dict[str, tuple[str, bool]]:
        """A settings table (``#hparams-table``): field -> (value shown, marked as default)."""
        cells = self.page.evaluate("""(table) => [...document.querySelectorAll(`${table} td[data-field]`)]
            .map((td) => [td.dataset.field, td.querySelector(".value").textContent,
                          td.dataset.default === "true"])""", table)
        return {field: (shown, default) for field, shown, default in cells}


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
    stripes = next(d for d in datasets(stack) if d["name"] == "stripes")
    assert page.is_enabled(f"button[data-suite='{stripes['id']}']")  # no job trained on it yet
    assert ui.wrapped_ids() == []
    ui.shot("datasets")

    # start a job on stripes and watch it: progress advances, losses draw, the gate reports;
    # a tiny weight constraint: its l2 term stays near 1e-4 (progress rounds losses to 1e-5), a
    # value an axis must label in a few characters
    page.click(f"button[data-new-job='{stripes['id']}']")
    page.fill("#job-hparams", json.dumps({**FAST_HPARAMS, "steps": 120, "l2_weight": 2e-6}))
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

    # the loss axes fit their labels, in a compact number format
    labels = page.locator("#loss-chart text.axis").all_text_contents()
    l2 = page.locator("figure:has(polyline[data-loss='l2']) text.axis").all_text_contents()
    assert any("e-" in t for t in l2), l2  # a mantissa and an exponent, not "0.0000012"
    assert max(map(len, labels)) <= 7, labels
    assert ui.axis_labels_outside("main") == []
    compact = page.evaluate("""() => import("./assets/charts.js").then((charts) => {
        const axis = charts.niceTicks(6.5e-5, 7.3e-5, 3);
        return [[7e-5, 0.33, 22.64, 123.4, 0, 1.5e6].map(charts.fmtCompact),
                axis.ticks.map(charts.tickFormat(axis.ticks, axis.step))];
    })""")
    assert compact == [["7.0e-5", "0.33", "22.6", "123", "0", "1.5e6"],
                       ["6.4e-5", "6.6e-5", "6.8e-5", "7.0e-5", "7.2e-5", "7.4e-5"]]

    # the settings, as tables: every hyper-parameter the job runs with, the defaults marked;
    # the gate policy the gate applied (the report's), the fields not sent marked as defaults
    hparams = ui.settings("#hparams-table")
    assert set(hparams) == set(job["hparams"]) and len(hparams) >= 15
    assert hparams["steps"] == ("120", False) and hparams["l2_weight"] == ("0.000002", False)
    assert hparams["warmup_steps"] == ("4", False)  # sent; 120 // 10 = 12 is the default
    assert hparams["label_smoothing"] == ("0.2", True) and hparams["seed"] == ("0", True)
    assert job["report"]["policy"]["confidence"] == 0.5
    assert page.get_attribute("#gate-policy-table", "data-applied") == "true"
    assert ui.settings("#gate-policy-table") == {
        "min_new_task_gain": ("0", True), "max_mean_drop": ("1", True),
        "max_dataset_drop": ("3", True), "max_drift": ("off (not checked)", True),
        "confidence": ("0.5", False)}
    assert "{" not in page.inner_text("#job-settings")  # no JSON blob
    assert ui.wrapped_ids() == []
    ui.shot("job")

    # a dataset a job trained on cannot become a suite: the button says why, disabled
    ui.open("datasets")
    mark = page.locator(f"button[data-suite='{stripes['id']}']")
    assert mark.inner_text() == "Mark as suite" and mark.is_disabled()
    assert page.get_attribute("tr[data-name='stripes'] span.why", "title").startswith(
        "a job trained on this dataset: a zero-shot suite must never be trained on")
    colours = next(d for d in datasets(stack) if d["name"] == "colours")
    assert page.is_enabled(f"button[data-suite='{colours['id']}']")  # "Unmark suite"
    refused = httpx.put(f"{stack.url}/v1/datasets/{stripes['id']}/suite", json={"suite": True},
                        headers={"X-API-Key": ADMIN_KEY})
    assert refused.status_code == 409, refused.text  # what the disabled button spares the user

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
    # while it runs, a suite stays one: "Unmark suite" is disabled and says which job holds it
    ui.open("datasets")
    assert page.is_disabled(f"button[data-suite='{colours['id']}']")
    assert page.get_attribute("tr[data-name='colours'] span.why", "title").startswith(
        f"job {long_id[:12]} (running) may evaluate this suite")
    ui.open(f"jobs/{long_id}", "job")
    page.click("#cancel-job")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    assert stack.get_job(long_id)["state"] == "cancelled"

    ui.open("jobs")
    assert page.get_attribute(f"tr[data-job='{job_id}']", "data-state") == job["state"]
    assert page.get_attribute(f"tr[data-job='{long_id}']", "data-state") == "cancelled"
    assert ui.wrapped_ids() == []
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
    assert ui.wrapped_ids() == []
    ui.dismiss()
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


# user data that would run as markup if a page inserted it as HTML
MARKUP_IMAGE = "<img src=x onerror=window.pwned=1>red.png"
MARKUP_LABEL = "<i>yellow"


def _shade(colour: str, i: int) -> bytes:
    """A distinct image of ``colour`` (answers count once per image content)."""
    return png_bytes(tuple(max(0, c - i) if c > 100 else c + i for c in SOLID[colour]))


def _answer(api: httpx.Client, colour: str, i: int, label: str) -> dict:
    """Classify an image of ``colour`` with the label set, kept, and send its true label."""
    kept = api.post("/v1/classify", data={"label_set": "colours", "keep": "true"},
                    files=[("images", (f"{colour}-{i}.png", _shade(colour, i), "image/png"))])
    assert kept.status_code == 200, kept.text
    sent = api.post("/v1/feedback", json={"prediction_id": kept.json()["results"][0]["prediction_id"],
                                          "label": label})
    assert sent.status_code == 201, sent.text
    return sent.json()


def _classify_on_try_it(ui: Dashboard, name: str, image: bytes):
    """Classify one image on the open Try it page; returns its result's "Correct it" form."""
    ui.page.set_input_files("#try-input", files=[{"name": name, "mimeType": "image/png",
                                                  "buffer": image}])
    ui.page.click("#try-button")
    form = ui.page.locator("form.correct")
    form.wait_for(timeout=60_000)
    return form


def datasets_of(api: httpx.Client) -> list[dict]:
    return api.get("/v1/datasets").json()


def _cells(page, selector: str) -> list[str]:
    return page.locator(f"{selector} td").all_inner_texts()


def test_the_feedback_page_and_a_correction_from_try_it(data_dir, browser, screenshots):
    with live_server(make_settings(data_dir)) as url, httpx.Client(base_url=url, timeout=60) as api:
        put = api.put("/v1/label-sets/colours", headers=ADMIN,
                      json={"classnames": ["red", "green", "blue", MARKUP_LABEL]})
        assert put.status_code == 200, put.text
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page_errors, urls = [], []
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        page.on("console", lambda m: m.type == "error" and "Failed to load resource" not in m.text
                and page_errors.append(m.text))
        page.on("request", lambda request: urls.append(request.url))
        ui = Dashboard(page, url, screenshots)

        # Try it: a red image, kept for feedback (the set does not keep by default), is "red";
        # the user says it is blue: a correction
        ui.open("try")
        page.select_option("#try-label-set", "colours")
        assert not page.is_checked("#try-keep")
        page.check("#try-keep")
        correct = _classify_on_try_it(ui, MARKUP_IMAGE, png_bytes("red"))
        assert page.locator("ol.ranked li").first.get_attribute("data-label") == "red"
        choices = correct.locator("select option")
        assert choices.all_inner_texts() == ["red", "green", "blue", MARKUP_LABEL]
        assert correct.locator("select").input_value() == "red"
        correct.locator("select").select_option("blue")
        correct.locator("button").click()
        status = correct.locator(".correct-status")
        expect(status).to_have_attribute("data-outcome", "corrected", timeout=30_000)
        assert status.inner_text() == "corrected: red → blue · feedback"
        [item] = api.get("/v1/feedback").json()["items"]
        assert (item["predicted"], item["label"], item["image"]) == ("red", "blue", MARKUP_IMAGE)
        ui.shot("try-feedback")

        # the Feedback page: one answer, a correction, v-colour (served) 0% live accuracy
        ui.open("feedback/colours", ready="feedback")
        counts = {k: page.inner_text(f"#feedback-{k}") for k in ("items", "confirmed", "corrected", "new")}
        assert counts == {"items": "1", "confirmed": "0", "corrected": "1", "new": "1"}
        assert _cells(page, "#feedback-versions tr[data-version='v-colour']")[:4] == ["v-colour", "1", "0", "0.0%"]
        assert page.is_visible("#feedback-versions tr[data-version='v-colour'] .served-badge")
        assert _cells(page, "#feedback-labels tr[data-label='blue']") == ["blue", "0", "1", "1"]
        row = f"#feedback-table tr[data-prediction='{item['prediction_id']}']"
        assert MARKUP_IMAGE in page.inner_text(f"{row} .image-cell")
        assert page.inner_text(f"{row} .true-label") == "blue"
        # the kept image, fetched with the key header into an object URL
        page.wait_for_function(f"document.querySelector(\"{row} img\").naturalWidth > 0",
                               timeout=30_000)
        assert page.get_attribute(f"{row} img", "src").startswith("blob:")

        # making a dataset of one answer: the API's 422, verbatim
        ui.enter_admin_key(ADMIN_KEY)
        page.fill("#fd-min-per-class", "3")
        page.fill("#fd-test-fraction", "0.3")
        page.click("#fd-submit")
        refused = page.locator("#fd-error")
        refused.wait_for(timeout=30_000)
        body = {"label_set": "colours", "min_per_class": 3, "test_fraction": 0.3}
        direct = api.post("/v1/datasets/from-feedback", headers=ADMIN, json=body)
        assert direct.status_code == 422 and refused.inner_text() == direct.json()["detail"]
        assert datasets_of(api) == []

        # five more answers through the API, all confirmations: 5 of 6 right, 83.3%
        for i in range(3):
            assert _answer(api, "green", i, "green")["correct"]
        for i in range(2):
            assert _answer(api, "blue", i, "blue")["correct"]
        ui.open("feedback/colours", ready="feedback")
        assert page.inner_text("#feedback-items") == "6" and page.inner_text("#feedback-confirmed") == "5"
        assert _cells(page, "#feedback-versions tr[data-version='v-colour']")[:4] == ["v-colour", "6", "5", "83.3%"]
        assert _cells(page, "#feedback-labels tr[data-label='blue']") == ["blue", "2", "1", "3"]
        assert _cells(page, "#feedback-labels tr[data-label='green']") == ["green", "3", "0", "3"]

        # now two classes have three answers each: a dataset, and the job form on it
        page.fill("#fd-min-per-class", "3")
        page.fill("#fd-test-fraction", "0.3")
        page.click("#fd-submit")
        page.wait_for_selector("#fd-dataset-id", timeout=60_000)
        [made] = datasets_of(api)
        assert made["classnames"] == ["blue", "green"] and made["origin"]["kind"] == "feedback"
        assert page.get_attribute("#fd-dataset-id", "data-id") == made["id"]
        assert "6 images (blue 3, green 3); 4 train / 2 test" in page.inner_text("#fd-result")
        expect(page.locator("#feedback-new")).to_have_text("0")  # its answers are used now
        page.click("#fd-new-job")
        page.wait_for_selector("#new-job", state="visible")
        assert page.input_value("#job-dataset") == made["id"]

        # the auto-update policy: saved, stored as sent, read back by a fresh page
        page.check("#policy-keep")
        page.check("#policy-auto")
        page.fill("#policy-min-per-class", "3")
        page.fill("#policy-min-classes", "2")
        page.fill("#policy-steps", "5")
        page.click("#policy-save")
        assert ui.notice() == "saved the feedback policy of colours"
        stored = api.get("/v1/label-sets/colours").json()
        assert stored["classnames"] == ["red", "green", "blue", MARKUP_LABEL]
        assert stored["keep_images"] is True
        policy = stored["auto_update"]
        assert (policy["min_per_class"], policy["min_classes"], policy["hparams"]) == (3, 2, {"steps": 5})
        ui.open("feedback/colours", ready="feedback")
        assert page.is_checked("#policy-keep") and page.is_checked("#policy-auto")
        assert [page.input_value(f"#policy-{k}") for k in ("min-per-class", "min-classes", "steps")] \
            == ["3", "2", "5"]
        assert "once 2 classes each have 3 new answers" in page.inner_text("#policy-summary")

        # three new green answers and two red ones; the third red, confirmed from Try it,
        # completes the policy: its job is linked from the answer, and says what started it
        assert not any(_answer(api, "green", i, "green")["auto_update_job"] for i in range(10, 13))
        assert not any(_answer(api, "red", i, "red")["auto_update_job"] for i in (1, 2))
        ui.open("try")
        page.select_option("#try-label-set", "colours")
        assert page.is_checked("#try-keep")  # the set keeps its images now
        correct = _classify_on_try_it(ui, "red-3.png", _shade("red", 3))
        correct.locator("button").click()
        status = correct.locator(".correct-status")
        expect(status).to_have_attribute("data-outcome", "confirmed", timeout=30_000)
        assert status.inner_text().startswith("confirmed: red · feedback · started auto-update job")
        link = status.locator("a.auto-update-job")
        job_id = link.get_attribute("data-job")
        job = api.get(f"/v1/jobs/{job_id}").json()
        assert job["trigger"]["kind"] == "auto-update" and job["trigger"]["label_set"] == "colours"
        link.click()
        ui.wait_ready("job")
        assert "label set colours's feedback" in page.inner_text("dl.summary")
        ui.open("jobs")
        assert "started by label set colours's feedback" in page.inner_text(
            f"tr[data-job='{job_id}'] .started-by")

        # 12 answers; the newest deleted from the Feedback page (after a confirm): 11
        ui.open("feedback/colours", ready="feedback")
        assert page.inner_text("#feedback-items") == "12"
        ui.shot("feedback")
        newest = api.get("/v1/feedback", params={"limit": 1}).json()["items"][0]["prediction_id"]
        page.click(f"button[data-delete='{newest}']")
        page.click("#confirm-yes")
        expect(page.locator("#feedback-items")).to_have_text("11", timeout=30_000)
        assert ui.notice() == "deleted the answer to red-3.png"
        assert page.locator(f"tr[data-prediction='{newest}']").count() == 0
        assert api.get(f"/v1/feedback/{newest}/image").status_code == 404

        # every label set: the same answers, no per-set forms
        page.select_option("#feedback-label-set", "")
        expect(page.locator("#feedback-pick-hint")).to_be_visible()
        assert page.inner_text("#feedback-items") == "11"

        assert page.evaluate("window.pwned") is None
        assert page.locator("main i, main img[src='x']").count() == 0
        assert page_errors == []
        assert not [u for u in urls if ADMIN_KEY in u]

