"""The update pipeline in-process (no broker): train, evaluate, gate, promote or not."""


from records import jobs, registry
from records.label_sets import get_label_set
from tests.helpers.archives import colours_zip, stripes_zip, upload
from tests.helpers.synthetic import FAST_HPARAMS
from worker import pipeline
from worker.pipeline import JobRunner
from zscl_core import list_versions

# short jobs behind an open gate, for tests about what gets measured, not the verdict
SHORT = {**FAST_HPARAMS, "steps": 4, "warmup_steps": 1, "ensemble_every": 2}
OPEN_GATE = {"min_new_task_gain": -100.0, "max_mean_drop": 100.0, "max_dataset_drop": 100.0}


def _job(sessions, dataset_id, method="zscl", hparams=FAST_HPARAMS, gate=None):
    with sessions() as session:
        job, created = jobs.create_job(session, dataset_id=dataset_id, method=method,
                                       hparams=dict(hparams), gate=gate or {})
        assert created
        return job.id


def test_zscl_job_is_promoted_and_registers_its_label_set(job_env, tmp_path):
    settings, sessions, served = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    upload(settings, sessions, colours_zip(), "colours", tmp_path, suite=True)
    # the toy's 16-image test split is too small for a significant gain: point estimates decide
    # here (the noise margin has its own tests in tests/core/test_gate.py)
    job_id = _job(sessions, stripes.id, gate={"confidence": 0.5})
    state = JobRunner(settings, sessions).run(job_id)
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert state == "succeeded", (job.error, job.report)
        new_version, generation = registry.get_serving(session)
        assert new_version == job.candidate_version != served
        assert registry.get_version(session, new_version).parent == served
        assert job.metrics["new_task_after"] > job.metrics["new_task_before"]
        rows = {r["dataset"]: r for r in job.report["rows"]}
        assert rows["colours"]["kind"] == "suite"
        assert rows["colours"]["after"] >= rows["colours"]["before"] - 3
        assert job.step == job.total_steps == FAST_HPARAMS["steps"]
        assert get_label_set(session, "stripes").classnames == stripes.classnames
        kinds = [e.kind for e in jobs.list_events(session, job_id, limit=1000)]
        assert kinds[0] == "state" and "progress" in kinds


def test_later_jobs_reuse_served_scores_and_teacher_text_features(job_env, tmp_path,
                                                                   monkeypatch):
    settings, sessions, _ = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    upload(settings, sessions, colours_zip(), "colours", tmp_path, suite=True)
    more = upload(settings, sessions, stripes_zip(seed=11), "stripes-2", tmp_path)
    encoded, served_evals = [], []
    real_encode = pipeline.encode_texts
    monkeypatch.setattr(pipeline, "encode_texts",
                        lambda *a, **k: encoded.append(1) or real_encode(*a, **k))

    class CountingRunner(JobRunner):
        def score(self, base, model, evaluation):
            if model is base.model:
                served_evals.append(evaluation.name)
            return super().score(base, model, evaluation)

    runner = CountingRunner(settings, sessions)
    first = _job(sessions, stripes.id, hparams=SHORT, gate=OPEN_GATE)
    second = _job(sessions, more.id, hparams=SHORT, gate=OPEN_GATE)
    assert runner.run(first) == "succeeded"
    assert sorted(served_evals) == ["colours", "stripes"]
    served_evals.clear()
    assert runner.run(second) == "succeeded"
    # The promoted candidate's own scores stand in for the served model's on the learned task
    # and the suite: only the new dataset is evaluated on the served model.
    assert served_evals == ["stripes-2"]
    assert encoded == [1]  # the teacher (the root version) encoded the reference texts once
    with sessions() as session:
        one, two = jobs.get_job(session, first), jobs.get_job(session, second)
        rows_one = {r["dataset"]: r for r in one.report["rows"]}
        rows_two = {r["dataset"]: r for r in two.report["rows"]}
        assert rows_two["stripes"]["before"] == one.metrics["new_task_after"]
        assert rows_two["colours"]["before"] == rows_one["colours"]["after"]


def test_job_that_drops_a_suite_is_rejected_and_nothing_is_written(job_env, tmp_path):
    settings, sessions, served = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    upload(settings, sessions, colours_zip(), "colours", tmp_path, suite=True)
    before = [v["version"] for v in list_versions(settings.versions_dir)]
    # Continual-FT of both towers at a high rate wrecks the colour suite
    hparams = {**FAST_HPARAMS, "trainable": "all", "lr": 5e-3, "steps": 40}
    job_id = _job(sessions, stripes.id, method="continual_ft", hparams=hparams,
                  gate={"max_dataset_drop": 3.0, "max_mean_drop": 1.0})
    assert JobRunner(settings, sessions).run(job_id) == "rejected"
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert any("suite 'colours' dropped" in r for r in job.report["reasons"])
        assert registry.get_serving(session)[0] == served
    assert [v["version"] for v in list_versions(settings.versions_dir)] == before


def test_candidate_from_a_version_no_longer_served_is_not_promoted(job_env, tmp_path):
    settings, sessions, served = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    job_id = _job(sessions, stripes.id, hparams={**FAST_HPARAMS, "steps": 4, "warmup_steps": 1},
                  gate=OPEN_GATE)

    class RollbackMeanwhile(JobRunner):
        def decide(self, *args, **kwargs):
            # an operator activates another version while the job evaluates
            from zscl_core import load_version, save_version
            loaded = load_version(settings.versions_dir / served)
            other = save_version(settings.versions_dir, loaded.model, loaded.spec, parent=served)
            with sessions() as session:
                registry.register_version(session, other, settings.versions_dir / other, served)
                assert registry.activate(session, other)
            return super().decide(*args, **kwargs)

    runner = RollbackMeanwhile(settings, sessions)
    assert runner.run(job_id) == "rejected"
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        served_now, _ = registry.get_serving(session)
        assert served_now != job.candidate_version
        assert "changed from" in job.report["superseded"]


def test_cancel_during_training_stops_within_bounded_steps(job_env, tmp_path):
    settings, sessions, served = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    job_id = _job(sessions, stripes.id, hparams={**FAST_HPARAMS, "steps": 500})

    def cancel_at_step_3(job, info):
        if info.step == 3:
            with sessions() as session:
                jobs.request_cancel(session, job)

    assert JobRunner(settings, sessions, on_step=cancel_at_step_3).run(job_id) == "cancelled"
    with sessions() as session:
        job = jobs.get_job(session, job_id)
        assert job.metrics["cancelled_at_step"] <= 3 + FAST_HPARAMS["cancel_check_every"]
        assert registry.get_serving(session)[0] == served



def _rows(sessions, job_id):
    with sessions() as session:
        return jobs.get_job(session, job_id).report["rows"]


def test_gate_rows_are_keyed_by_dataset_id_when_names_repeat(job_env, tmp_path):
    settings, sessions, _ = job_env
    first = upload(settings, sessions, stripes_zip(), "pets", tmp_path)
    (tmp_path / "b").mkdir()
    second = upload(settings, sessions, stripes_zip(seed=11), "pets", tmp_path / "b")
    assert first.id != second.id
    runner = JobRunner(settings, sessions)
    assert runner.run(_job(sessions, first.id, hparams=SHORT, gate=OPEN_GATE)) == "succeeded"
    job_id = _job(sessions, second.id, hparams=SHORT, gate=OPEN_GATE)
    assert runner.run(job_id) == "succeeded"
    rows = _rows(sessions, job_id)
    assert [(r["dataset_id"], r["dataset"], r["kind"]) for r in rows] == [
        (second.id, "pets", "new_task"), (first.id, "pets", "learned")]
    assert all(r["n"] > 0 and "margin" in r for r in rows)


def test_tasks_learned_only_on_an_abandoned_branch_are_not_learned_after_a_rollback(job_env,
                                                                                  tmp_path):
    settings, sessions, original = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    more = upload(settings, sessions, stripes_zip(seed=11), "stripes-2", tmp_path)
    runner = JobRunner(settings, sessions)
    assert runner.run(_job(sessions, stripes.id, hparams=SHORT, gate=OPEN_GATE)) == "succeeded"
    with sessions() as session:
        assert registry.activate(session, original)  # roll back past the stripes version
    job_id = _job(sessions, more.id, hparams=SHORT, gate=OPEN_GATE)
    assert runner.run(job_id) == "succeeded"
    assert [r["kind"] for r in _rows(sessions, job_id)] == ["new_task"]


def test_a_suite_is_scored_on_all_its_images(job_env, tmp_path):
    settings, sessions, _ = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    colours = upload(settings, sessions, colours_zip(), "colours", tmp_path, suite=True)
    job_id = _job(sessions, stripes.id, hparams=SHORT, gate=OPEN_GATE)
    assert JobRunner(settings, sessions).run(job_id) == "succeeded"
    rows = {r["kind"]: r for r in _rows(sessions, job_id)}
    assert rows["suite"]["n"] == colours.n_train + colours.n_test == 80
    assert rows["new_task"]["n"] == stripes.n_test


def test_cancel_of_a_job_with_slow_steps_takes_effect_within_seconds(job_env, tmp_path):
    import time

    settings, sessions, served = job_env
    stripes = upload(settings, sessions, stripes_zip(), "stripes", tmp_path)
    hparams = {k: v for k, v in FAST_HPARAMS.items() if k != "cancel_check_every"}  # the default
    job_id = _job(sessions, stripes.id, hparams={**hparams, "steps": 100})
    asked = {}

    def slow_step(job, info):  # a 2-second step, as on a big model
        time.sleep(2.0)
        if info.step == 1:
            with sessions() as session:
                jobs.request_cancel(session, job)
            asked["at"] = time.monotonic()

    assert JobRunner(settings, sessions, on_step=slow_step).run(job_id) == "cancelled"
    # the cancel is seen at the next step boundary (about 0.01 s here, at worst one 2-second
    # step), not after the rest of the 100 (about 200 s); 10 s is a generous bound
    assert time.monotonic() - asked["at"] < 10.0
    with sessions() as session:
        assert jobs.get_job(session, job_id).metrics["cancelled_at_step"] <= 2
        assert registry.get_serving(session)[0] == served
