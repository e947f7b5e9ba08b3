"""Worker entry point: ``celery -A worker.app worker`` (or ``zscl worker``).

Settings are read from the environment here, once, as at every entry point.
"""

from records.settings import Settings

from records.queue import create_celery

app = create_celery(Settings())
