"""The README's quick tour runs as written: its second terminal's commands, parsed from README.md,
run in order in one bash (so that the ids they capture carry over), against a real `zscl serve`
on the REAL starter model with its embedded worker; each exits 0, the job is promoted, and the
rollback serves the starter again.

The test stands in for the tour's first terminal only (`make serve`): a free port instead of
8000 (the tour reads ``ZSCL_PORT``), a temporary data dir, the admin key the tour exports. The
commands run in a temporary folder holding a link to this virtualenv as ``.venv``, as in a
clone. Run with ``-s`` to see each command's output and duration.

Runs in CI: .ci/run installs Debian's dataset-fashion-mnist (its absence there is an error).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.fashion import needs_fashion
from tests.helpers.processes import REPO, REQUEST_TIMEOUT_S

pytestmark = [pytest.mark.slow, needs_fashion]

TOUR_MARK = "<!-- tour: tests/e2e/test_readme_tour.py runs the next block -->"
# the whole tour takes a few minutes on 2 idle CPU cores, but many times that on a loaded machine
# (the job's steps); a deadline is only paid by a hang
TOUR_TIMEOUT_S = 1500
_FENCE = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_STEP = re.compile(r"^@@tour-end (\d+) (\d+) ([\d.]+)$", re.MULTILINE)


def tour_commands(markdown: str) -> list[str]:
    """The shell commands of every fenced block that follows :data:`TOUR_MARK`: one per line
    (a trailing ``\\`` continues it), blank and comment-only lines left out."""
    commands = []
    for start in [m.end() for m in re.finditer(re.escape(TOUR_MARK), markdown)]:
        block = _FENCE.search(markdown, start)
        assert block and not markdown[start:block.start()].strip(), \
            "the tour mark must stand right above a ```sh block"
        for line in block.group(1).replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def test_tour_commands_are_parsed_from_marked_blocks_only():
    text = f"""```sh
make serve
```
{TOUR_MARK}
```sh
# a comment
zscl demo   # trailing comment
pets=$(zscl dataset upload clothes.zip \\
       --name pets | cut -d' ' -f2)

```
"""
    assert tour_commands(text) == ["zscl demo   # trailing comment",
                                   "pets=$(zscl dataset upload clothes.zip         --name pets | cut -d' ' -f2)"]


def _script(commands: list[str]) -> str:
    """``commands`` in one bash, each between marker lines with the time it began and ended
    and its exit status; the first that fails ends it."""
    lines = ["set -o pipefail"]
    for i, command in enumerate(commands):
        lines += [f"printf '@@tour-begin {i} %s\\n' $EPOCHREALTIME", command,
                  f"__rc=$?; printf '\\n@@tour-end {i} %d %s\\n' $__rc $EPOCHREALTIME",
                  '[ "$__rc" -eq 0 ] || exit "$__rc"']
    return "\n".join(lines) + "\n"


def _run_tour(commands: list[str], cwd: Path, port: int) -> list[tuple[str, int, float, str]]:
    """(command, exit status, seconds, output) for each command that ran; the environment is
    this one's less every ``ZSCL_`` variable, plus ``ZSCL_PORT``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZSCL_")}
    env["ZSCL_PORT"] = str(port)
    done = subprocess.run(["bash", "-c", _script(commands)], check=False, cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=TOUR_TIMEOUT_S, stdin=subprocess.DEVNULL)
    steps = []
    for chunk in done.stdout.split("@@tour-begin ")[1:]:
        head, _, rest = chunk.partition("\n")
        index, began = head.split()
        end = _STEP.search(rest)
        if end is None:  # it ended mid-command
            steps.append((commands[int(index)], -1, float("nan"), rest))
            break
        steps.append((commands[int(index)], int(end.group(2)),
                      float(end.group(3)) - float(began), rest[:end.start()].strip()))
    return steps


def _step(steps, prefix: str, last: bool = False) -> str:
    """The output of the first (or last) command that starts with ``prefix``."""
    matching = [output for command, _, _, output in steps if command.startswith(prefix)]
    assert matching, f"no tour command starts with {prefix!r}"
    return matching[-1 if last else 0]


@pytest.mark.timeout(TOUR_TIMEOUT_S + 300)  # past pyproject's 900 s: the starter's build too
def test_the_readme_tour_runs_as_written(stack_factory, starter_dir, tmp_path):
    commands = tour_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert commands and commands[0].startswith("export ZSCL_ADMIN_KEY="), commands[:1]
    key = re.match(r"export ZSCL_ADMIN_KEY=(\S+)", commands[0]).group(1)
    assert any(c.startswith("zscl demo") for c in commands)

    stack = stack_factory(ZSCL_MODEL=str(starter_dir), ZSCL_START_WORKER="true",
                          ZSCL_ADMIN_KEY=key)
    for name in ("ZSCL_REFERENCE_DIR", "ZSCL_TORCH_THREADS"):  # as `make serve` runs
        stack.env.pop(name)
    stack.api()
    starter = stack.served()
    work = tmp_path / "clone"
    work.mkdir()
    (work / ".venv").symlink_to(sys.prefix)  # the tour puts $PWD/.venv/bin on its PATH

    started = time.monotonic()
    steps = _run_tour(commands, work, stack.port)
    total = time.monotonic() - started
    for command, rc, seconds, output in steps:
        print(f"\n$ {command}\n{output}\n[exit {rc}, {seconds:.1f} s]")
    print(f"\nthe tour: {len(steps)} commands in {total:.0f} s")
    for command, rc, _, output in steps:
        assert rc == 0, f"`{command}` exited {rc}:\n{output}\n{stack.log_tail()}"
    assert len(steps) == len(commands)

    demo = _step(steps, "zscl demo")
    assert all(f"  {name}:" in demo for name in ("cat.jpg", "clothes.zip", "suite.zip")), demo
    watched = _step(steps, "zscl job create")
    assert ": succeeded" in watched and "now serving" in watched, watched
    promoted = re.search(r"now serving (\S+)", watched).group(1)
    assert promoted != starter
    first = _step(steps, "zscl classify")
    assert f"model version {promoted}" in first and re.search(r"^cat\.jpg: cat ", first, re.MULTILINE), first
    rollback = _step(steps, "zscl models activate")
    assert rollback.startswith(f"serving {starter} (was {promoted},"), rollback
    final = _step(steps, "zscl classify", last=True)
    assert f"model version {starter}" in final and re.search(r"^cat\.jpg: cat ", final, re.MULTILINE), final
    assert httpx.get(f"{stack.url}/livez", timeout=REQUEST_TIMEOUT_S).headers["X-Model-Version"] \
        == starter
