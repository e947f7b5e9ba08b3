"""``zscl embed`` against a live colour-model server (features known by construction: a red
image is (0.5590, -0.5863, -0.5863, 0, ...), the word "red" is (1, -1, -1, 0, ...) / sqrt(3))."""

import json

import pytest

from tests.helpers.colour import png_bytes
from zscl_cli import main as cli


def test_embed_is_registered():
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert "embed" in choices


def test_embed_images_and_texts_against_a_live_server(live_url, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ZSCL_ADMIN_KEY", raising=False)
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes("red"))
    server = ["--url", live_url]

    assert cli.main(["embed", str(image), "--text", "red", "--text", "blue", *server]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model version v-colour (") and lines[0].endswith("dim 32")
    assert lines[1:] == ["red.png: dim 32 [0.5590, -0.5863, -0.5863, 0.0000, ...]",
                         "text 'red': dim 32 [0.5774, -0.5774, -0.5774, 0.0000, ...]",
                         "text 'blue': dim 32 [-0.5774, -0.5774, 0.5774, 0.0000, ...]"]

    assert cli.main(["embed", str(image), "--json", *server]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["model_version"] == "v-colour" and body["texts"] == []
    assert body["images"][0]["name"] == "red.png"
    assert body["images"][0]["embedding"][:3] == pytest.approx([0.5590, -0.5863, -0.5863], abs=1e-4)

    # texts only (sent as JSON), float16: 0.57735 is 0.5771484375 in float16
    assert cli.main(["embed", "--text", "red", "--encoding", "base64", *server]) == 0
    assert capsys.readouterr().out.splitlines()[1] == \
        "text 'red': dim 32 [0.5771, -0.5771, -0.5771, 0.0000, ...]"
    assert cli.main(["embed", "--text", "red", "--encoding", "base64", "--json", *server]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["texts"][0]["embedding"], str)


def test_embed_needs_an_input_and_reports_the_servers_refusal(live_url):
    with pytest.raises(SystemExit, match="at least one image file or one --text"):
        cli.main(["embed", "--url", live_url])
    with pytest.raises(SystemExit, match="HTTP 422: text 0 .*context of 16 tokens"):
        cli.main(["embed", "--text", " ".join(["red"] * 20), "--url", live_url])
