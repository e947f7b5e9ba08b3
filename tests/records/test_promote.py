"""records.registry.promote: a job's candidate is registered, served, its task's label set
written and the job succeeded, all in one transaction.

Issue 20: the pointer used to move in one commit and the job to succeed in a later one; a worker
killed between the two left the new version served and the job unfinished, so the restart's
reaper retried it, and the retry trained on its own promoted version. Here, on SQLite and on
PostgreSQL: a step of the promotion that fails (monkeypatched, or a database trigger as a full
disk would) leaves every record as it was; a process SIGKILLed inside the promotion leaves the
old state, which the reaper retries from, or the new one; every commit that moves the pointer
also finishes the job.
"""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

from records import jobs, label_sets, registry
from records.db import create_all, make_engine, make_session_factory
from records.label_sets import LabelSetUpdate
from records.tables import Dataset, JobEvent
from tests.helpers.postgres import fresh_database

METRICS = {"new_task_after": 90.0}
REPORT = {"passed": True, "rows": []}
LABELS = LabelSetUpdate("stripes", ["h", "v"], ["a {}"], source="dataset:d")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """A fresh database: a SQLite file (embedded mode), or a PostgreSQL database (distributed
    mode; at ZSCL_TEST_POSTGRES_URL, skipped where no server answers)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
        create_all(engine)
        yield engine
        engine.dispose()
        return
    with fresh_database() as url:
        engine = make_engine(url)
        try:
            create_all(engine)
            yield engine
        finally:
            engine.dispose()


@pytest.fixture()
def sessions(engine):
    return make_session_factory(engine)


@pytest.fixture()
def job_id(sessions):
    """An evaluating job trained from v0, the served version; v1 is its saved candidate."""
    with sessions() as session:
        session.add(Dataset(id="d", name="stripes", sha256="0" * 64, path="/nowhere/d",
                            classnames=["h", "v"], n_train=4, n_test=2, split="auto"))
        session.commit()
        registry.register_version(session, "v0", "/versions/v0")
        assert registry.activate(session, "v0")
        job, _ = jobs.create_job(session, dataset_id="d", method="zscl", hparams={}, gate={})
        assert jobs.transition(session, job.id, "running", base_version="v0")
        assert jobs.transition(session, job.id, "evaluating")
        return job.id


def _promote(sessions, job_id: str, label_set: LabelSetUpdate | None = LABELS):
    with sessions() as session:
        return registry.promote(session, job_id, "v1", "/versions/v1", parent="v0",
                                metrics=METRICS, report=REPORT, label_set=label_set)


def _snapshot(sessions, job_id: str) -> dict:
    """Every record a promotion may write, as another process reads them."""
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        return {"serving": registry.get_serving(session),
                "versions": [(v.id, v.parent) for v in registry.list_registered(session)],
                "job": (job.state, job.candidate_version, job.metrics, job.report,
                        job.finished_at),
                "events": [(e.kind, e.data) for e in jobs.list_events(session, job_id)],
                "label_sets": [(s.name, s.classnames) for s in label_sets.list_label_sets(session)]}


def test_promote_serves_the_candidate_and_succeeds_the_job(sessions, job_id):
    promotion = _promote(sessions, job_id)
    assert promotion == registry.Promotion(promoted=True, job_state="succeeded", served="v1",
                                           generation=2)
    now = _snapshot(sessions, job_id)
    assert now["serving"] == ("v1", 2)
    assert now["versions"] == [("v0", None), ("v1", "v0")]
    assert now["job"][:4] == ("succeeded", "v1", METRICS, REPORT) and now["job"][4] is not None
    assert now["events"][-1] == ("state", {"state": "succeeded"})
    assert now["label_sets"] == [("stripes", ["h", "v"])]
    with sessions() as session:
        version = registry.get_version(session, "v1")
        assert (version.source, version.method, version.metrics, version.report) == (
            f"job:{job_id}", "zscl", METRICS, REPORT)


def _fault(*_args, **_kwargs):
    raise OSError("disk full (test fault)")


def _fail_after(real):
    """``real``, whose writes are issued, then a fault before anything commits."""
    def broken(*args, **kwargs):
        real(*args, **kwargs)
        _fault()
    return broken


# the promotion's writes in order; each case lets the writes up to its own be issued, then fails
STEPS = {"version row": lambda: (registry, "_swap", _fault),
         "pointer": lambda: (registry, "_swap", _fail_after(registry._swap)),
         "label set": lambda: (registry, "stage_label_set",
                               _fail_after(registry.stage_label_set)),
         "job state": lambda: (jobs, "stage_transition", _fail_after(jobs.stage_transition))}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_step_that_fails_leaves_every_record_as_it_was(sessions, job_id, monkeypatch, step):
    before = _snapshot(sessions, job_id)
    monkeypatch.setattr(*STEPS[step]())
    with pytest.raises(OSError, match="test fault"):
        _promote(sessions, job_id)
    assert _snapshot(sessions, job_id) == before
    monkeypatch.undo()  # the session was rolled back: promoting again works
    assert _promote(sessions, job_id).promoted


def test_a_job_event_that_cannot_be_written_leaves_every_record_as_it_was(engine, sessions,
                                                                         job_id):
    before = _snapshot(sessions, job_id)
    with sessions() as session:  # the last write of the promotion fails, as on a full disk
        if engine.dialect.name == "sqlite":
            session.execute(text("CREATE TRIGGER no_events BEFORE INSERT ON job_events "
                                 "BEGIN SELECT RAISE(ABORT, 'disk full (test fault)'); END"))
        else:
            session.execute(text("CREATE FUNCTION no_events() RETURNS trigger LANGUAGE plpgsql "
                                 "AS $$ BEGIN RAISE EXCEPTION 'disk full (test fault)'; END $$"))
            session.execute(text("CREATE TRIGGER no_events BEFORE INSERT ON job_events "
                                 "FOR EACH ROW EXECUTE FUNCTION no_events()"))
        session.commit()
    with pytest.raises(DBAPIError, match="disk full"):
        _promote(sessions, job_id)
    assert _snapshot(sessions, job_id) == before


def test_the_job_succeeds_in_the_commit_that_moves_the_pointer(engine, sessions, job_id):
    """Every commit, as another connection sees it just after: the pointer and the job's state
    change together, in one commit, with the job's event."""
    seen = []

    def read_after_commit(_session):
        with engine.connect() as other:
            pointer = other.execute(text("SELECT version_id FROM serving_pointer")).scalar_one()
            state = other.execute(text("SELECT state FROM jobs WHERE id = :j"),
                                  {"j": job_id}).scalar_one()
            last_event = other.execute(select(JobEvent.data).where(JobEvent.job_id == job_id)
                                       .order_by(JobEvent.id.desc()).limit(1)).scalar_one()
        seen.append((pointer, state, last_event["state"]))

    event.listen(sessions, "after_commit", read_after_commit)
    assert _promote(sessions, job_id).promoted
    event.remove(sessions, "after_commit", read_after_commit)
    assert seen == [("v1", "succeeded", "succeeded")]


def _promote_and_die(url, job_id: str, point: str) -> None:
    """In a child process: promote, SIGKILLed at ``point``, as a power loss stops a worker."""
    def kill(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    try:
        # its own connections: the parent's, inherited, are never used here
        sessions = make_session_factory(make_engine(url.render_as_string(hide_password=False)))
        if point == "after the pointer moved":
            real_swap = registry._swap
            registry._swap = lambda *a: real_swap(*a) and kill()
        elif point == "after the job was marked":
            real_mark = jobs.stage_transition
            jobs.stage_transition = lambda *a, **k: real_mark(*a, **k) and kill()
        else:
            event.listen(sessions, "after_commit", kill)
        _promote(sessions, job_id, label_set=None)
    finally:
        os._exit(1)  # never reached when killed; never back into pytest in any case


@pytest.mark.parametrize("point", ["after the pointer moved", "after the job was marked",
                                   "after the commit"])
def test_a_worker_killed_inside_the_promotion_leaves_the_old_state_or_the_new(
        engine, sessions, job_id, point):
    pid = os.fork()
    if pid == 0:
        _promote_and_die(engine.url, job_id, point)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    with sessions() as session:
        reaped = jobs.reap_stale(session, timeout_s=0, max_retries=1)  # what a restart does
        state = jobs.get_job(session, job_id).state
        served = registry.get_serving(session)
        versions = [v.id for v in registry.list_registered(session)]
    if point == "after the commit":  # the new state: nothing to retry
        assert (served, state, versions, reaped.requeued) == (("v1", 2), "succeeded",
                                                              ["v0", "v1"], [])
    else:  # the old state: the retry trains from v0 again, never from its own candidate
        assert (served, state, versions, reaped.requeued) == (("v0", 1), "queued", ["v0"],
                                                              [job_id])


def test_a_candidate_whose_parent_is_no_longer_served_is_registered_not_served(sessions, job_id):
    with sessions() as session:
        registry.register_version(session, "v-rollback", "/versions/v-rollback")
        assert registry.activate(session, "v-rollback")  # an operator, while the job evaluated
    promotion = _promote(sessions, job_id)
    assert promotion == registry.Promotion(promoted=False, job_state="rejected",
                                           served="v-rollback", generation=2)
    now = _snapshot(sessions, job_id)
    assert now["serving"] == ("v-rollback", 2)
    assert ("v1", "v0") in now["versions"]
    state, candidate, _, report, _ = now["job"]
    assert (state, candidate) == ("rejected", "v1")
    assert "changed from v0 to v-rollback" in report["superseded"]
    assert now["label_sets"] == []  # the task is not served: its label set is not written


def test_a_job_no_longer_evaluating_is_left_alone_and_nothing_is_served(sessions, job_id):
    with sessions() as session:  # its worker was taken for lost: the job was requeued
        assert jobs.reap_stale(session, timeout_s=0, max_retries=1).requeued == [job_id]
    before = _snapshot(sessions, job_id)
    promotion = _promote(sessions, job_id)
    assert promotion == registry.Promotion(promoted=False, job_state="queued", served="v0",
                                           generation=1)
    now = _snapshot(sessions, job_id)
    assert now["versions"] == [("v0", None), ("v1", "v0")]  # its files exist: it is registered
    assert {k: v for k, v in now.items() if k != "versions"} == \
        {k: v for k, v in before.items() if k != "versions"}
