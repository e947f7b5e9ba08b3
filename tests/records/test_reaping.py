"""The reaper on a real SQLite file: a job whose worker stopped sending heartbeats is requeued
from its start while it has retries left (its events say so), then failed; a job whose cancel was
requested, or with no retries, fails at once; a live job is left alone."""

from datetime import timedelta

import pytest
from sqlalchemy import update

from records import jobs
from records.db import create_all, make_engine, make_session_factory
from records.tables import Dataset, Job, utcnow

TIMEOUT_S = 60.0


@pytest.fixture()
def session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    create_all(engine)
    with make_session_factory(engine)() as s:
        s.add(Dataset(id="d", name="d", sha256="0" * 64, path="/nowhere/d", classnames=["a", "b"],
                      n_train=4, n_test=2, split="auto"))
        s.commit()
        yield s
    engine.dispose()


def _running(session, *, beat_age_s: float, step: int = 7) -> str:
    """A job that a worker started and reported step ``step`` of, last heard of ``beat_age_s`` ago."""
    job, _ = jobs.create_job(session, dataset_id="d", method="zscl", hparams={"steps": 10}, gate={})
    assert jobs.transition(session, job.id, "running", base_version="v1")
    session.execute(update(Job).where(Job.id == job.id).values(
        step=step, losses={"ce": 0.5}, heartbeat_at=utcnow() - timedelta(seconds=beat_age_s)))
    session.commit()
    return job.id


def _states(session, job_id: str) -> list[dict]:
    return [e.data for e in jobs.list_events(session, job_id) if e.kind == "state"]


def test_a_lost_job_is_requeued_from_its_start_then_failed_when_its_retries_are_spent(session):
    job_id = _running(session, beat_age_s=2 * TIMEOUT_S)
    reaped = jobs.reap_stale(session, TIMEOUT_S, max_retries=1)
    assert reaped == jobs.Reaped(requeued=[job_id], failed=[])
    job = jobs.get_job(session, job_id)
    assert (job.state, job.step, job.losses, job.started_at, job.heartbeat_at, job.base_version) == \
        ("queued", 0, {}, None, None, None)
    lost = f"no heartbeat from the worker for {TIMEOUT_S:.0f} s (killed or lost)"
    assert _states(session, job_id) == [
        {"state": "queued"}, {"state": "running"},
        {"state": "queued", "retry": 1, "max_retries": 1, "reason": lost}]
    assert jobs.retries_of(session, job_id) == 1

    # the retry runs, and its worker is lost too: no retries left
    assert jobs.transition(session, job_id, "running", base_version="v1")
    session.execute(update(Job).where(Job.id == job_id).values(
        heartbeat_at=utcnow() - timedelta(seconds=2 * TIMEOUT_S)))
    session.commit()
    assert jobs.reap_stale(session, TIMEOUT_S, max_retries=1) == jobs.Reaped(requeued=[], failed=[job_id])
    job = jobs.get_job(session, job_id)
    assert job.state == "failed"
    assert job.error == {"type": "WorkerLost", "message": f"{lost} after 1 retry; the served model "
                         "is unchanged; resubmit the job"}


def test_no_retries_a_cancel_requested_or_a_live_job(session):
    no_retries = _running(session, beat_age_s=2 * TIMEOUT_S)
    assert jobs.reap_stale(session, TIMEOUT_S, max_retries=0) == jobs.Reaped(failed=[no_retries])

    cancelling = _running(session, beat_age_s=2 * TIMEOUT_S)
    assert jobs.request_cancel(session, cancelling).state == "cancelling"
    live = _running(session, beat_age_s=TIMEOUT_S / 2)
    assert jobs.reap_stale(session, TIMEOUT_S, max_retries=3) == jobs.Reaped(failed=[cancelling])
    assert jobs.get_job(session, cancelling).error["type"] == "WorkerLost"
    assert (jobs.get_job(session, live).state, jobs.get_job(session, live).step) == ("running", 7)


def test_a_reaper_that_read_a_job_stale_leaves_it_once_a_worker_started_it_again(session):
    # two reapers (the API's and a starting worker's) read the job stale; the first requeues it
    # and a worker starts it again before the second writes: the second must not touch it
    job_id = _running(session, beat_age_s=2 * TIMEOUT_S)
    stale_beat = jobs.get_job(session, job_id).heartbeat_at
    assert jobs.reap_stale(session, TIMEOUT_S, max_retries=2).requeued == [job_id]
    assert jobs.transition(session, job_id, "running", base_version="v1")
    assert not jobs._reap(session, job_id, "queued", {}, {"retry": 2}, stale_beat)
    assert jobs.get_job(session, job_id).state == "running"
    assert jobs.retries_of(session, job_id) == 1
