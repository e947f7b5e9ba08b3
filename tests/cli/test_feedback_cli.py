"""``zscl classify --keep`` and ``zscl feedback send|list|dataset`` against a live colour app."""

import re

import pytest

from tests.helpers import ADMIN_KEY
from tests.helpers.colour import png_bytes
from zscl_cli import main as cli


def test_feedback_commands_close_the_loop(live_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ZSCL_ADMIN_KEY", ADMIN_KEY)
    server = ["--url", live_url]
    assert cli.main(["feedback", "list", *server]) == 0
    assert "no feedback yet" in capsys.readouterr().out
    assert cli.main(["label-set", "put", "colours", "--labels", "red,green,blue", *server]) == 0
    ids = {}
    for colour in ("red", "blue"):
        for i in range(4):  # distinct images: kept images are stored by content
            image = tmp_path / f"{colour}{i}.png"
            image.write_bytes(png_bytes(colour, size=20 + i))
            assert cli.main(["classify", str(image), "--label-set", "colours", "--keep",
                             *server]) == 0
            out = capsys.readouterr().out
            ids[(colour, i)] = re.search(r"\[prediction ([0-9a-f]+)\]", out).group(1)
    assert cli.main(["feedback", "send", ids[("red", 0)], "green", *server]) == 0
    assert "'green' corrected (it said 'red')" in capsys.readouterr().out
    for (colour, i), prediction in ids.items():
        if (colour, i) != ("red", 0):
            assert cli.main(["feedback", "send", prediction, colour, *server]) == 0
    capsys.readouterr()
    assert cli.main(["feedback", "list", *server]) == 0
    out = capsys.readouterr().out
    assert "8 answers: 7 confirmed, 1 corrected, 8 not yet in a dataset" in out
    assert re.search(r"v-colour\s+8\s+87\.5%", out), out
    with pytest.raises(SystemExit, match="HTTP 422"):
        cli.main(["feedback", "send", ids[("red", 1)], "purple", *server])
    with pytest.raises(SystemExit, match="HTTP 404: label set 'nope' does not exist"):
        cli.main(["feedback", "dataset", "nope", *server])
    assert cli.main(["feedback", "dataset", "colours", "--min-per-class", "3", *server]) == 0
    out = capsys.readouterr().out
    # red: 3 confirmed; blue: 4; green: 1 (left out, under 3)
    assert re.search(r"dataset [0-9a-f]+ \(colours.feedback\) built: 7 images, 2 classes", out), out
