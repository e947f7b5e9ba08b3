"""The worker's Celery app (``worker.app``, what ``zscl worker`` and the embedded worker run)
registers the task that the API sends by name (``jobqueue.TASK_RUN_JOB``)."""

from jobqueue import TASK_RUN_JOB


def test_the_worker_app_includes_its_task_modules_and_registers_run_job():
    from worker.app import app

    assert list(app.conf.include) == ["worker.tasks"]
    app.loader.import_default_modules()  # what a starting worker does with ``include``
    assert app.tasks[TASK_RUN_JOB].name == TASK_RUN_JOB
