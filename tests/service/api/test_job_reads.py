"""A slow read behind one request never holds the others: the event loop runs no database or
file work. A job's event stream reads the job and its events, a dataset upload writes its spool,
a scrape reads the metric files; each is held here (as a busy disk or database would hold it)
until other requests have answered, so a read on the event loop shows as requests that cannot
answer until the hold gives up."""

from __future__ import annotations

import contextlib
import threading
from types import SimpleNamespace

import pytest

from records import jobs as job_records
from records.ingest import upload_spool
from service.api.routes import datasets as dataset_routes
from tests.helpers import ADMIN
from tests.helpers.archives import colour_files, zip_bytes
from tests.helpers.processes import REQUEST_TIMEOUT_S


class _Hold:
    """Makes the first call of the functions it wraps wait until :meth:`release` (or, if the
    event loop it blocks never lets the test release it, until ``REQUEST_TIMEOUT_S`` passed)."""

    def __init__(self) -> None:
        self.entered, self._released = threading.Event(), threading.Event()
        self.gave_up = False
        self._lock = threading.Lock()
        self._used = False

    def wrap(self, fn):
        def held(*args, **kwargs):
            with self._lock:
                first, self._used = not self._used, True
            if first:
                self.entered.set()
                self.gave_up = not self._released.wait(REQUEST_TIMEOUT_S)
            return fn(*args, **kwargs)
        return held

    def release(self) -> None:
        self._released.set()


def _in_thread(call) -> tuple[threading.Thread, dict]:
    """Run ``call`` (a blocking request) in a thread; its answer lands in the dict."""
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(response=call()), daemon=True)
    thread.start()
    return thread, answer


def _others_answer_while_held(client, hold: _Hold, what: str) -> None:
    assert hold.entered.wait(REQUEST_TIMEOUT_S), f"{what} never reached the held call"
    answers = {path: client.get(path).status_code for path in ("/livez", "/v1/jobs")}
    hold.release()
    assert not hold.gave_up, (f"{what} held the event loop: other requests answered only once the "
                              f"held call gave up ({answers})")
    assert answers == {"/livez": 200, "/v1/jobs": 200}


def _queued_job(client) -> dict:
    dataset = client.post("/v1/datasets", content=zip_bytes(colour_files(4)), params={"name": "colours"},
                          headers={**ADMIN, "Content-Type": "application/zip"})
    assert dataset.status_code == 201, dataset.text
    job = client.post("/v1/jobs", json={"dataset_id": dataset.json()["id"], "hparams": {"steps": 5}},
                      headers=ADMIN)
    assert job.status_code == 202, job.text
    return job.json()


# the stream's first read (is there such a job?) and each page's read of the events
@pytest.mark.parametrize("read", ["get_job", "list_events"])
def test_a_slow_read_behind_an_event_stream_leaves_other_requests_answering(client, monkeypatch, read):
    job = _queued_job(client)
    hold = _Hold()
    monkeypatch.setattr(job_records, read, hold.wrap(getattr(job_records, read)))
    reader, streamed = _in_thread(lambda: client.get(f"/v1/jobs/{job['id']}/events/stream",
                                                     params={"poll_s": 0.05}))
    _others_answer_while_held(client, hold, f"the event stream's {read}")
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=ADMIN).status_code == 200
    reader.join(REQUEST_TIMEOUT_S)
    text = streamed["response"].text
    assert '"state": "queued"' in text and 'event: end\ndata: {"state": "cancelled"}' in text


def test_a_slow_spool_write_behind_an_upload_leaves_other_requests_answering(client, monkeypatch):
    hold = _Hold()

    @contextlib.contextmanager
    def spool_with_slow_writes(store_root):
        with upload_spool(store_root) as (path, fh):
            yield path, SimpleNamespace(write=hold.wrap(fh.write), flush=fh.flush)

    monkeypatch.setattr(dataset_routes, "upload_spool", spool_with_slow_writes)
    uploader, uploaded = _in_thread(lambda: client.post(
        "/v1/datasets", content=zip_bytes(colour_files(4)), params={"name": "colours"},
        headers={**ADMIN, "Content-Type": "application/zip"}))
    _others_answer_while_held(client, hold, "the upload's spool write")
    uploader.join(REQUEST_TIMEOUT_S)
    assert uploaded["response"].status_code == 201, uploaded["response"].text
    assert [d["name"] for d in client.get("/v1/datasets").json()] == ["colours"]


def test_a_slow_metrics_scrape_leaves_other_requests_answering(client, monkeypatch):
    metrics = client.app.state.services.metrics
    hold = _Hold()
    monkeypatch.setattr(metrics, "render", hold.wrap(metrics.render))
    scraper, scraped = _in_thread(lambda: client.get("/metrics"))
    _others_answer_while_held(client, hold, "the metrics scrape")
    scraper.join(REQUEST_TIMEOUT_S)
    assert scraped["response"].status_code == 200
    assert "zscl_http_requests_total" in scraped["response"].text
