"""Records state the fact ("job 'x' does not exist"); the API adds the route that helps, in one
place (service/api/errors.py)."""

import ast
from pathlib import Path

import pytest

from records.errors import NotFound, UnknownVersion
from service.api.errors import response_for

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path, detail", [
    ("/v1/jobs/abc", "job 'abc' does not exist; GET /v1/jobs lists the jobs"),
    ("/v1/datasets/abc", "dataset 'abc' does not exist; GET /v1/datasets lists them"),
    ("/v1/label-sets/nope", "label set 'nope' does not exist; create it with PUT /v1/label-sets/nope"),
    ("/v1/models/nope", "model version 'nope' is not registered; GET /v1/models lists the known versions"),
])
def test_a_missing_record_is_a_404_that_names_the_route_to_find_one(client, path, detail):
    answer = client.get(path)
    assert answer.status_code == 404 and answer.json()["detail"] == detail


def test_the_records_errors_carry_the_kind_and_key_not_the_route():
    error = NotFound.of("job", "j1")
    assert (str(error), error.kind, error.key) == ("job 'j1' does not exist", "job", "j1")
    assert (UnknownVersion("v9").kind, UnknownVersion("v9").key) == ("model version", "v9")
    assert response_for(NotFound("no such thing")).body == b'{"detail":"no such thing"}'


def test_no_message_written_in_records_or_worker_names_an_api_route():
    for package in ("records", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                # strings in code (messages), not docstrings or settings descriptions
                if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                                       and isinstance(node.value, str)):
                    text = ast.unparse(node) if isinstance(node, ast.JoinedStr) else node.value
                    if any(verb in text for verb in ("GET /v1", "POST /v1", "PUT /v1", "DELETE /v1")):
                        assert "description=" in path.read_text().splitlines()[node.lineno - 1] \
                            or path.name == "settings.py", f"{path.relative_to(ROOT)}:{node.lineno}: {text[:80]}"
