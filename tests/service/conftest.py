"""Service fixtures: a started app on the colour CLIP (tests/helpers/colour.py)."""

import pytest

from tests.helpers.colour import make_settings, running_client


@pytest.fixture()
def client(data_dir):
    with running_client(make_settings(data_dir)) as c:
        yield c
