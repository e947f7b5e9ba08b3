"""Celery workers that run continual updates (``records.queue``, ``worker.tasks``)."""
