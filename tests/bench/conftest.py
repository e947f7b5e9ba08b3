import pytest

from tests.helpers.archives import write_task_folder
from tests.helpers.synthetic import colour_task, stripe_task


@pytest.fixture(scope="session")
def task_folders(tmp_path_factory):
    """Two tiny synthetic tasks as image folders: colours (4 classes), stripes (2 classes)."""
    base = tmp_path_factory.mktemp("bench-tasks")
    return (write_task_folder(base / "colours", colour_task, 12, 6, seed=1),
            write_task_folder(base / "stripes", stripe_task, 12, 6, seed=2))
