"""The records on PostgreSQL (distributed mode): compare-and-swap promotion, idempotent jobs,
conditional state changes. Uses the PostgreSQL server at ZSCL_TEST_POSTGRES_URL (default the
local one, trust auth); skipped where none answers."""

from __future__ import annotations

import pytest

from records import db, jobs, registry
from records.tables import Dataset
from tests.helpers.postgres import fresh_database


@pytest.fixture()
def pg_sessions():
    with fresh_database() as url:
        engine = db.make_engine(url)
        try:
            db.create_all(engine)
            yield db.make_session_factory(engine)
        finally:
            engine.dispose()


def test_promotion_is_a_compare_and_swap_on_postgres(pg_sessions, tmp_path):
    with pg_sessions() as session:
        for vid, parent in (("v1", None), ("v2", "v1"), ("v3", "v1")):
            registry.register_version(session, vid, tmp_path / vid, parent)
        assert registry.activate(session, "v1", expected_current=None)
        assert registry.activate(session, "v2", expected_current="v1")
        # v3 was trained from v1 too: it must not replace v2
        assert not registry.activate(session, "v3", expected_current="v1")
        assert registry.get_serving(session) == ("v2", 2)


def test_jobs_are_idempotent_and_transitions_conditional_on_postgres(pg_sessions):
    with pg_sessions() as session:
        session.add(Dataset(id="d1", name="pets", sha256="0" * 64, path="/x", classnames=["a", "b"],
                            n_train=4, n_test=2, split="auto"))
        session.commit()
        job, created = jobs.create_job(session, dataset_id="d1", method="zscl", hparams={"steps": 3},
                                       gate={}, idempotency_key="k1")
        again, created_again = jobs.create_job(session, dataset_id="d1", method="zscl",
                                               hparams={"steps": 3}, gate={}, idempotency_key="k1")
        assert created and not created_again and again.id == job.id
        assert jobs.transition(session, job.id, "running")
        assert not jobs.transition(session, job.id, "running")  # a second worker loses
        assert jobs.request_cancel(session, job.id).state == "cancelling"
        assert jobs.transition(session, job.id, "cancelled")
        states = [e.data["state"] for e in jobs.list_events(session, job.id) if e.kind == "state"]
        assert states == ["queued", "running", "cancelling", "cancelled"]


def test_feedback_records_and_their_aggregates_on_postgres(pg_sessions, tmp_path):
    """The feedback queries (SUM over CASE of a boolean, NOT IN a subquery, GROUP BY) as
    PostgreSQL runs them: live accuracy, the summary and the purge give the hand-counted values."""
    from datetime import timedelta

    from records import feedback
    from records.label_sets import put_label_set
    from tests.helpers.colour import png_bytes

    store = feedback.ImageStore(tmp_path / "feedback")
    with pg_sessions() as session:
        put_label_set(session, "colours", ["red", "green", "blue"], keep_images=True)
        images = [feedback.KeptImage(f"{c}.png", png_bytes(c, size=8 + i), c, 0.9)
                  for i, c in enumerate(["red", "green", "blue", "red"])]
        ids = feedback.keep_predictions(session, store, images, version_id="v1",
                                        label_set="colours", labels=None,
                                        retention=timedelta(days=1), max_bytes=10**9)
        for prediction_id, label in zip(ids[:3], ["red", "blue", "blue"]):  # 2 of 3 right
            feedback.record_feedback(session, prediction_id, label)
        summary = feedback.summarise(session, "colours")
        assert summary["versions"] == {"v1": {"items": 3, "correct": 2, "accuracy": 2 / 3}}
        assert summary["per_label"]["blue"] == {"confirmed": 1, "corrected": 1, "new": 2}
        assert feedback.new_feedback_counts(session, "colours") == {"red": 1, "blue": 2}
        later = feedback.utcnow() + timedelta(days=2)
        assert feedback.purge_expired(session, store, now=later) == 1  # the unanswered one
        assert len(feedback.list_feedback(session, label_set="colours")) == 3
