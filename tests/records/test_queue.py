"""The jobs an embedded worker sends again when it starts (records.queue.queued_jobs): those still
queued, oldest first; not one that runs or ended."""

from records import jobs
from records.db import create_all, make_engine, make_session_factory
from records.queue import queued_jobs
from records.tables import Dataset


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
