import threading
import time

import httpx
import pytest
import uvicorn

from service import cli
from service.app import create_app
from tests.service.conftest import ADMIN_KEY, make_settings, png_bytes
from tests.service.test_distributed import free_port


@pytest.fixture()
def live_url(data_dir):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(make_settings(data_dir)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_subcommands_are_registered():
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert {"serve", "classify", "models", "bench"} <= set(choices)


def test_classify_and_models_against_a_live_server(live_url, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ZSCL_ADMIN_KEY", raising=False)
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes("red"))
    assert cli.main(["classify", str(image), "--labels", "red,green,blue", "--url", live_url]) == 0
    out = capsys.readouterr().out
    assert "model version v-colour" in out and "red.png: red 1.000" in out
    assert cli.main(["models", "activate", "v-swapped", "--url", live_url, "--key", ADMIN_KEY]) == 0
    assert "serving v-swapped (was v-colour, generation 2)" in capsys.readouterr().out
    assert cli.main(["models", "list", "--url", live_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("* v-swapped") for line in lines)
    with pytest.raises(SystemExit, match="HTTP 401"):
        cli.main(["models", "activate", "v-colour", "--url", live_url])


def test_client_commands_say_when_no_server_answers(tmp_path):
    with pytest.raises(SystemExit, match="zscl serve"):
        cli.main(["models", "list", "--url", f"http://127.0.0.1:{free_port()}"])
