"""Celery workers that run continual updates (``worker.celery_app``, ``worker.tasks``)."""
