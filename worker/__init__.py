"""Celery workers that run continual updates: ``worker.app`` (the entry point) builds the app
with ``jobqueue`` and gives it this package's task modules (``worker.tasks``), which hand a
job to ``worker.pipeline``."""
