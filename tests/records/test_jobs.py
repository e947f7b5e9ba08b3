"""Job records under faults: a missing dataset is not-found (never another job), a state change
and its event commit together, and a suite an active job evaluates cannot be deleted.

Faults are real: a SQLite trigger makes every insert into ``job_events`` fail, as a full disk or a
crash between two statements would.
"""

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from records import datasets, jobs
from records.db import create_all, make_engine, make_session_factory
from records.errors import Conflict, NotFound
from records.settings import Settings
from records.tables import Dataset, JobEvent


@pytest.fixture()
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def sessions(engine):
    return make_session_factory(engine)


@pytest.fixture()
def session(sessions):
    with sessions() as s:
        yield s


def _dataset(session, dataset_id: str, *, suite: bool = False) -> Dataset:
    row = Dataset(id=dataset_id, name=dataset_id, sha256="0" * 64, path=f"/nowhere/{dataset_id}",
                  classnames=["a", "b"], n_train=0 if suite else 4, n_test=2, split="auto",
                  is_suite=suite)
    session.add(row)
    session.commit()
    return row


def _job(session, dataset_id: str, key: str | None = None) -> str:
    job, created = jobs.create_job(session, dataset_id=dataset_id, method="zscl",
                                   hparams={"steps": 5}, gate={}, idempotency_key=key)
    assert created
    return job.id


def _break_event_inserts(session) -> None:
    session.execute(text("CREATE TRIGGER no_events BEFORE INSERT ON job_events "
                         "BEGIN SELECT RAISE(ABORT, 'disk full (test fault)'); END"))
    session.commit()


def _events(session, job_id: str) -> list[tuple[str, dict]]:
    return [(e.kind, e.data) for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)
                                                      .order_by(JobEvent.id))]


# --- item 5: a missing dataset is never answered with another job -----------------------------


def test_a_job_on_a_missing_dataset_is_not_found_not_an_unrelated_job(session):
    _dataset(session, "aaaaaaaaaaaaaaaa")
    unrelated = _job(session, "aaaaaaaaaaaaaaaa")  # idempotency_key NULL, like most jobs
    for key in (None, "k-1"):
        with pytest.raises(NotFound, match="dataset 'ffffffffffffffff' does not exist"):
            jobs.create_job(session, dataset_id="ffffffffffffffff", method="zscl",
                            hparams={"steps": 5}, gate={}, idempotency_key=key)
    assert [j.id for j in jobs.list_jobs(session)] == [unrelated]


def test_an_idempotency_key_seen_before_returns_its_job(session):
    _dataset(session, "aaaaaaaaaaaaaaaa")
    first = _job(session, "aaaaaaaaaaaaaaaa", key="k-1")
    again, created = jobs.create_job(session, dataset_id="aaaaaaaaaaaaaaaa", method="zscl",
                                     hparams={"steps": 5}, gate={}, idempotency_key="k-1")
    assert (again.id, created) == (first, False)


# --- item 11: a state and its event are one transaction -----------------------------------------


def test_a_state_change_whose_event_fails_is_not_kept(session, sessions):
    _dataset(session, "aaaaaaaaaaaaaaaa")
    job_id = _job(session, "aaaaaaaaaaaaaaaa")
    _break_event_inserts(session)
    with pytest.raises(DBAPIError, match="disk full"):
        jobs.transition(session, job_id, "running")
    with sessions() as other:  # what every other process reads
        row = jobs.get_job(other, job_id)
        assert (row.state, row.started_at) == ("queued", None)
        assert _events(other, job_id) == [("state", {"state": "queued"})]
    assert jobs.get_job(session, job_id).state == "queued"  # the session was rolled back, usable


def test_a_job_whose_queued_event_fails_is_not_kept(session, sessions):
    _dataset(session, "aaaaaaaaaaaaaaaa")
    _break_event_inserts(session)
    with pytest.raises(DBAPIError, match="disk full"):
        jobs.create_job(session, dataset_id="aaaaaaaaaaaaaaaa", method="zscl", hparams={"steps": 5},
                        gate={}, idempotency_key="k-2")
    with sessions() as other:
        assert jobs.list_jobs(other) == []


def test_a_cancel_whose_event_fails_changes_nothing(session, sessions):
    _dataset(session, "aaaaaaaaaaaaaaaa")
    queued, running = _job(session, "aaaaaaaaaaaaaaaa"), _job(session, "aaaaaaaaaaaaaaaa")
    assert jobs.transition(session, running, "running")
    _break_event_inserts(session)
    for job_id, state in ((queued, "queued"), (running, "running")):
        with pytest.raises(DBAPIError, match="disk full"):
            jobs.request_cancel(session, job_id)
        with sessions() as other:
            row = jobs.get_job(other, job_id)
            assert (row.state, row.cancel_requested, row.finished_at) == (state, False, None)


def test_progress_and_its_event_are_one_transaction(session, sessions):
    _dataset(session, "aaaaaaaaaaaaaaaa")
    job_id = _job(session, "aaaaaaaaaaaaaaaa")
    assert jobs.transition(session, job_id, "running")
    _break_event_inserts(session)
    with pytest.raises(DBAPIError, match="disk full"):
        jobs.record_progress(session, job_id, step=3, total=5, losses={"ce": 1.0}, eta_s=2.0, event=True)
    with sessions() as other:
        assert (jobs.get_job(other, job_id).step, jobs.get_job(other, job_id).losses) == (0, {})


def test_state_changes_still_write_their_events(session):
    _dataset(session, "aaaaaaaaaaaaaaaa")
    job_id = _job(session, "aaaaaaaaaaaaaaaa")
    assert jobs.transition(session, job_id, "running")
    assert not jobs.transition(session, job_id, "succeeded")  # running -> succeeded is not allowed
    jobs.request_cancel(session, job_id)
    assert jobs.transition(session, job_id, "failed", error={"type": "X", "message": "m"})
    assert _events(session, job_id) == [
        ("state", {"state": "queued"}), ("state", {"state": "running"}),
        ("state", {"state": "cancelling"}),
        ("state", {"state": "failed", "error": {"type": "X", "message": "m"}})]
    row = jobs.get_job(session, job_id)
    assert (row.state, row.cancel_requested) == ("failed", True)


# --- item 6: a suite that an active job evaluates is kept -----------------------------------------


@pytest.mark.parametrize("state", ["queued", "running", "evaluating", "cancelling"])
def test_a_suite_is_not_deleted_while_a_job_may_evaluate_it(session, tmp_path, state):
    settings = Settings(data_dir=tmp_path)
    _dataset(session, "aaaaaaaaaaaaaaaa")
    _dataset(session, "5555555555555555", suite=True)
    job_id = _job(session, "aaaaaaaaaaaaaaaa")
    for step in {"queued": [], "running": ["running"], "evaluating": ["running", "evaluating"],
                 "cancelling": ["running", "cancelling"]}[state]:
        assert jobs.transition(session, job_id, step)
    with pytest.raises(Conflict) as caught:
        datasets.delete(session, settings, "5555555555555555")
    assert f"job '{job_id}' ({state})" in str(caught.value)
    assert "retry once it has ended" in str(caught.value)
    assert datasets.get_dataset(session, "5555555555555555").is_suite
    jobs.transition(session, job_id, "failed")
    datasets.delete(session, settings, "5555555555555555")
    with pytest.raises(NotFound):
        datasets.get_dataset(session, "5555555555555555")


def test_a_dataset_that_is_not_a_suite_is_deleted_while_other_jobs_run(session, tmp_path):
    settings = Settings(data_dir=tmp_path)
    _dataset(session, "aaaaaaaaaaaaaaaa")
    _dataset(session, "bbbbbbbbbbbbbbbb")
    assert jobs.transition(session, _job(session, "aaaaaaaaaaaaaaaa"), "running")
    datasets.delete(session, settings, "bbbbbbbbbbbbbbbb")
    assert [d.id for d in datasets.list_datasets(session)] == ["aaaaaaaaaaaaaaaa"]


# --- what a job reads of the datasets (records.datasets, for worker.pipeline) ---------------------


def test_learned_in_names_the_datasets_trained_into_the_given_versions_oldest_first(session):
    for dataset_id in ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"):
        _dataset(session, dataset_id)
    _dataset(session, "5555555555555555", suite=True)
    for dataset_id, candidate in (("bbbbbbbbbbbbbbbb", "v1"), ("aaaaaaaaaaaaaaaa", "v2"),
                                  ("bbbbbbbbbbbbbbbb", "v3"), ("cccccccccccccccc", "v-other")):
        job_id = _job(session, dataset_id)
        for state in ("running", "evaluating"):
            assert jobs.transition(session, job_id, state)
        assert jobs.transition(session, job_id, "succeeded", candidate_version=candidate)
    learned = datasets.learned_in(session, ["v3", "v2", "v1"])
    assert [d.id for d in learned] == ["bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa"]
    assert learned[0] == datasets.dataset_info(session, "bbbbbbbbbbbbbbbb")
    assert (learned[0].name, learned[0].classnames, learned[0].is_suite) == (
        "bbbbbbbbbbbbbbbb", ("a", "b"), False)
    assert [d.id for d in datasets.list_suites(session)] == ["5555555555555555"]
