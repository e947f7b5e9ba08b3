"""Upload spools (``datasets/.upload-*``, the request body on disk) left by a crashed process are
removed at start-up; the spool of an upload still in progress, in this process or another live
one, is kept (it holds a lock for as long as it exists)."""

import os
import signal
import subprocess
import sys
import textwrap

from records.ingest import remove_stale_temp_dirs


def test_a_spool_left_by_a_crash_is_removed_at_start_up(tmp_path):
    left = tmp_path / ".upload-k2j4h1"  # what tempfile.mkstemp(prefix=".upload-") left behind
    left.write_bytes(b"PK\x03\x04" + b"\0" * 1000)
    old = tmp_path / ".upload-old"
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    dataset = tmp_path / "0123456789abcdef"
    dataset.mkdir()
    assert remove_stale_temp_dirs(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0123456789abcdef"]


def test_the_spool_of_an_upload_in_progress_is_kept(tmp_path):
    from records.ingest import upload_spool

    with upload_spool(tmp_path) as (path, fh):
        fh.write(b"PK\x03\x04")
        fh.flush()
        os.utime(path, (0, 0))  # even an old-looking one: a live upload holds its lock
        assert remove_stale_temp_dirs(tmp_path) == 0
        assert path.read_bytes() == b"PK\x03\x04"
    assert list(tmp_path.iterdir()) == []  # the upload removes its own spool


def test_a_killed_uploaders_spool_is_removed_but_a_live_ones_is_kept(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from records.ingest import upload_spool
        with upload_spool({str(tmp_path)!r}) as (path, fh):
            fh.write(b"body"); fh.flush()
            print(path.name, flush=True)
            time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               cwd=os.getcwd())
    try:
        name = process.stdout.readline().strip()
        assert name.startswith(".upload-")
        assert remove_stale_temp_dirs(tmp_path) == 0  # its owner is alive
        assert (tmp_path / name).read_bytes() == b"body"
        process.send_signal(signal.SIGKILL)  # a crash: no finally, no unlink
        process.wait(timeout=30)
        assert (tmp_path / name).exists()
        assert remove_stale_temp_dirs(tmp_path) == 1
        assert list(tmp_path.iterdir()) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
