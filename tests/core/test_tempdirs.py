"""Build directories (zscl_core.tempdirs): one a killed process left is removed whatever its age;
one a live process works in, here or in another process, is kept; a finished one is not touched."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from zscl_core import list_versions, save_version
from zscl_core.tempdirs import locked_temp_dir, remove_unlocked_temp_dirs


def test_a_live_build_dir_is_kept_and_removed_when_its_block_ends(tmp_path):
    with locked_temp_dir(tmp_path) as work:
        (work / "part").write_bytes(b"half")
        assert work.name.startswith(".tmp-")
        assert remove_unlocked_temp_dirs(tmp_path) == []
        assert (work / "part").read_bytes() == b"half"
    assert list(tmp_path.iterdir()) == []


def test_a_dir_renamed_into_place_stays(tmp_path):
    with locked_temp_dir(tmp_path) as work:
        (work / "file").write_bytes(b"whole")
        os.rename(work, tmp_path / "final")
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    assert remove_unlocked_temp_dirs(tmp_path) == []


def test_a_killed_processs_build_dir_is_removed_but_a_live_ones_is_kept(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from zscl_core.tempdirs import locked_temp_dir
        with locked_temp_dir({str(tmp_path)!r}) as work:
            (work / "part").write_bytes(b"half")
            print(work.name, flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        name = process.stdout.readline().strip()
        (tmp_path / ".tmp-of-an-older-crash").mkdir()
        (tmp_path / "kept").mkdir()
        assert remove_unlocked_temp_dirs(tmp_path) == [".tmp-of-an-older-crash"]
        assert (tmp_path / name / "part").read_bytes() == b"half"  # its owner is alive
        process.send_signal(signal.SIGKILL)  # a crash: no finally, no clean-up
        process.wait(timeout=30)
        assert remove_unlocked_temp_dirs(tmp_path) == [name]
        assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_failed_save_leaves_no_build_dir(tmp_path, tiny):
    class Unsaveable(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            raise RuntimeError("disk on fire")

    save_version(tmp_path, tiny.model, tiny.spec, version_id="v-ok")
    with pytest.raises(RuntimeError, match="disk on fire"):
        save_version(tmp_path, Unsaveable(), tiny.spec)
    assert [p.name for p in tmp_path.iterdir()] == ["v-ok"]
    assert [v["version"] for v in list_versions(tmp_path)] == ["v-ok"]
