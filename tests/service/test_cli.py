import pytest

from zscl_cli import main as cli
from tests.service.conftest import ADMIN_KEY, free_port, png_bytes


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
