import pytest

from zscl_cli import main as cli
from tests.helpers import ADMIN_KEY
from tests.helpers.colour import png_bytes
from tests.helpers.processes import free_port


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
    assert lines[0].split() == ["VERSION", "(*", "served)", "PARENT", "METHOD", "CREATED"]
    assert any(line.startswith("* v-swapped") for line in lines)
    assert any(line.startswith("  v-colour") for line in lines)
    with pytest.raises(SystemExit, match="HTTP 401"):
        cli.main(["models", "activate", "v-colour", "--url", live_url])


def test_client_commands_say_when_no_server_answers(tmp_path):
    with pytest.raises(SystemExit, match="zscl serve"):
        cli.main(["models", "list", "--url", f"http://127.0.0.1:{free_port()}"])


def _colour_zip(path, per_class=4):
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        for colour in ("red", "blue"):
            for i in range(per_class):
                zf.writestr(f"{colour}/{i}.png", png_bytes(colour, size=32 + i))
    return path


def test_monitoring_commands_match_the_api(live_url, tmp_path, capsys, monkeypatch):
    """dataset upload/list/show/delete, job create/list/show, label-set put/list/show/delete."""
    monkeypatch.setenv("ZSCL_ADMIN_KEY", ADMIN_KEY)
    server = ["--url", live_url]
    for noun, hint in (("dataset", "zscl dataset upload"), ("job", "zscl job create"),
                       ("label-set", "zscl label-set put")):  # a fresh server: say what to do
        assert cli.main([noun, "list", *server]) == 0
        out = capsys.readouterr().out
        assert out.startswith("no ") and hint in out and out.count("\n") == 1, out
    assert cli.main(["label-set", "put", "warm", "--labels", "red,blue", *server]) == 0
    assert "label set warm: 2 labels" in capsys.readouterr().out
    assert cli.main(["label-set", "list", *server]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "LABELS", "KEEPS", "IMAGES", "AUTO-UPDATE", "SOURCE"]
    assert row.split() == ["warm", "2", "no", "off", "-"]
    assert cli.main(["label-set", "show", "warm", *server]) == 0
    assert '"red"' in capsys.readouterr().out
    assert cli.main(["label-set", "delete", "warm", *server]) == 0
    assert "label set warm deleted" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="HTTP 404"):
        cli.main(["label-set", "show", "warm", *server])

    archive = _colour_zip(tmp_path / "colours.zip")
    assert cli.main(["dataset", "upload", str(archive), "--name", "colours", *server]) == 0
    dataset_id = capsys.readouterr().out.split()[1]
    assert cli.main(["dataset", "list", *server]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == [dataset_id, "colours", "2", "6",
                                                               "2", "2", "no"]
    assert cli.main(["dataset", "show", dataset_id, *server]) == 0
    shown = capsys.readouterr().out
    assert dataset_id in shown and "classes: blue, red" in shown
    assert cli.main(["job", "create", dataset_id, "--set", "steps=3", *server]) == 0
    job_id = capsys.readouterr().out.split()[1]
    assert cli.main(["job", "list", *server]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATE", "PROGRESS", "ETA", "METHOD", "DATASET", "CREATED"]
    assert row.split()[:6] == [job_id, "queued", "0%", "-", "zscl", dataset_id]
    assert cli.main(["job", "show", job_id, *server]) == 0
    assert f"job {job_id}: queued" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="HTTP 409"):  # a job uses it
        cli.main(["dataset", "delete", dataset_id, *server])
    assert cli.main(["job", "cancel", job_id, *server]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit, match="HTTP 404"):
        cli.main(["job", "show", "0" * 32, *server])
