"""Worker entry point: ``celery -A worker.app worker`` (or ``zscl worker``).

Settings are read from the environment here, once, as at every entry point. The app includes
this package's task modules, so that the worker registers the tasks the API sends by name.
"""

from jobqueue import create_celery
from records.settings import Settings
from worker import tasks

TASK_MODULES = (tasks.__name__,)

app = create_celery(Settings(), include=TASK_MODULES)
