"""Worker entry point: ``celery -A worker.app worker`` (or ``zscl worker``).

Settings are read from the environment here, once, as at every entry point.
"""

from records.queue import create_celery
from records.settings import Settings

app = create_celery(Settings())
