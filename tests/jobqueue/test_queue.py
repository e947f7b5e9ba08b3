"""The shared Celery app (jobqueue): it names no worker module, and sends jobs by task name;
the jobs an embedded worker sends again when it starts (queued_jobs): those still queued, oldest
first; not one that runs or ended."""

from records import jobs
from records.db import create_all, make_engine, make_session_factory
from jobqueue import QUEUE, TASK_RUN_JOB, create_celery, queued_jobs, send_job
from records.settings import Settings
from records.tables import Dataset


def test_the_app_of_a_sender_includes_no_task_module_and_sends_by_task_name(tmp_path):
    app = create_celery(Settings(data_dir=tmp_path, broker_url="memory://"))
    assert app.conf.include == []  # the API's app: records never names the worker's modules
    send_job(app, "job-1")
    with app.connection_for_read() as connection:
        message = connection.SimpleQueue(QUEUE).get(timeout=5)
    assert message.headers["task"] == TASK_RUN_JOB
    assert message.payload[0] == ["job-1"]


def test_a_worker_app_gets_the_task_modules_it_is_given(tmp_path):
    app = create_celery(Settings(data_dir=tmp_path, broker_url="memory://"),
                        include=["some.tasks"])
    assert app.conf.include == ["some.tasks"]


def test_queued_jobs_are_the_ones_still_waiting_oldest_first(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'r.sqlite'}")
    create_all(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        session.add(Dataset(id="d", name="d", sha256="0" * 64, path="/nowhere/d",
                            classnames=["a", "b"], n_train=4, n_test=2, split="auto"))
        session.commit()
        ids = [jobs.create_job(session, dataset_id="d", method="zscl", hparams={}, gate={})[0].id
               for _ in range(4)]
        assert jobs.transition(session, ids[1], "running", base_version="v1")
        jobs.request_cancel(session, ids[2])
    assert queued_jobs(sessions) == [ids[0], ids[3]]
    engine.dispose()
