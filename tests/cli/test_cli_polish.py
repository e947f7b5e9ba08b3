"""The command line as a new user meets it (issue 22): help on every argument, plain-text bench
help, a header or an empty-state hint on every list, and `job watch` output fit for a file."""

from __future__ import annotations

import argparse
import re
import sys
import types

import pytest

from zscl_bench import cli as bench_cli
from zscl_cli import http, jobs
from zscl_cli import main as cli
from zscl_cli.jobs import METHOD_NAMES
from zscl_cli.progress import ProgressLines
from zscl_cli.tables import format_table

# -- help --------------------------------------------------------------------------------------

def _walk(parser: argparse.ArgumentParser, path: str):
    """(command path, parser, action) for every action of ``parser`` and its subcommands."""
    for action in parser._actions:
        yield path, parser, action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


PARSERS = {"zscl": cli.build_parser, "zscl bench": bench_cli.build_parser}


@pytest.mark.parametrize("prog", PARSERS)
def test_every_argument_and_subcommand_has_help(prog):
    missing = []
    for path, _, action in _walk(PARSERS[prog](), prog):
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):  # each subcommand's line in the list
            helped = {choice.dest for choice in action._choices_actions if (choice.help or "").strip()}
            missing += [f"{path} {name} (subcommand)" for name in action.choices if name not in helped]
            continue
        if not (action.help or "").strip():
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "arguments without help (add help=...): " + ", ".join(missing)


def test_the_walk_sees_nested_options():
    """The walk reaches the arguments of sub-subcommands (it would pass vacuously otherwise)."""
    seen = {(path, tuple(a.option_strings) or a.dest) for path, _, a in _walk(cli.build_parser(), "zscl")}
    assert ("zscl job create", ("--method",)) in seen
    assert ("zscl dataset upload", ("--test-fraction",)) in seen
    assert ("zscl worker", ("--log-level",)) in seen
    assert ("zscl label-set show", "name") in seen


@pytest.mark.parametrize("prog", PARSERS)
def test_help_is_plain_text(prog):
    """No reStructuredText (``code``) in any help or description: argparse prints it as it is."""
    texts = [(path, p.description or "") for path, p, _ in _walk(PARSERS[prog](), prog)]
    texts += [(path, a.help or "") for path, _, a in _walk(PARSERS[prog](), prog)]
    assert not [(path, text) for path, text in texts if "``" in text or ":func:" in text]


def test_bench_help_describes_every_benchmark(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out
    benchmarks = set(bench_cli.build_parser()._subparsers._group_actions[0].choices)
    assert benchmarks == {"mtil", "updates"}
    for name in benchmarks:
        assert f"\n  {name} " in out, f"the description does not describe {name}:\n{out}"
        assert f"zscl bench {name} --help" in out


def test_main_help_names_both_benchmarks():
    commands = cli.build_parser()._subparsers._group_actions[0]._choices_actions
    bench_help = next(action.help for action in commands if action.dest == "bench")
    assert "mtil" in bench_help and "updates" in bench_help


def test_method_help_names_every_method():
    from zscl_core import METHODS
    assert set(METHOD_NAMES) == set(METHODS)
    create = cli.build_parser().parse_args(["job", "create", "d"])
    assert create.method == "zscl"


def test_watch_every_takes_a_whole_percent():
    parser = cli.build_parser()
    assert parser.parse_args(["job", "watch", "j", "--every", "25"]).every == 25
    for bad in ("0", "101"):
        with pytest.raises(SystemExit):
            parser.parse_args(["job", "watch", "j", "--every", bad])


# -- lists -------------------------------------------------------------------------------------

class _Answer:
    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


@pytest.fixture()
def server_answers(monkeypatch):
    """``http.call`` answering from a dict of path -> body (no server)."""
    answers: dict[str, object] = {}

    def call(args, method, path, **kwargs):
        return _Answer(answers[path])

    monkeypatch.setattr(http, "call", call)
    monkeypatch.setattr(cli, "call", call)
    return answers


EMPTY = {"/v1/datasets": [], "/v1/jobs": [], "/v1/label-sets": [],
         "/v1/models": {"serving": None, "generation": 0, "loaded": None, "versions": []},
         "/v1/feedback": {"summary": {"items": 0, "confirmed": 0, "corrected": 0, "new": 0,
                                      "versions": {}, "per_label": {}}, "items": []}}


@pytest.mark.parametrize("command, says", [
    (["dataset", "list"], "no datasets yet: add one with `zscl dataset upload"),
    (["job", "list"], "no jobs yet: start one with `zscl job create <dataset id>`"),
    (["label-set", "list"], "no label sets yet: create one with `zscl label-set put"),
    (["models", "list"], "no model versions yet: `zscl serve` registers ZSCL_MODEL"),
    (["feedback", "list"], "no feedback yet: classify with `zscl classify --keep`"),
])
def test_an_empty_list_says_how_to_add_the_first(server_answers, capsys, command, says):
    server_answers.update(EMPTY)
    assert cli.main([*command, "--url", "http://x"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(says) and out.count("\n") == 1, out


def test_lists_have_a_header_row(server_answers, capsys):
    server_answers.update({
        "/v1/datasets": [{"id": "d1", "name": "colours", "classnames": ["red", "blue"],
                          "n_train": 6, "n_test": 2, "n_eval": 2, "is_suite": False}],
        "/v1/jobs": [{"id": "j1", "state": "running", "progress": 0.25, "eta_s": 40.0,
                      "method": "zscl", "dataset_id": "d1", "created_at": "2025-01-01T00:00:00"}],
        "/v1/label-sets": [{"name": "colours", "classnames": ["red", "blue"], "source": None,
                            "keep_images": True, "auto_update": None}],
        "/v1/models": {"serving": "v2", "generation": 1, "loaded": "v2", "versions": [
            {"id": "v1", "parent": None, "method": None, "serving": False, "created_at": "t1"},
            {"id": "v2", "parent": "v1", "method": "zscl", "serving": True, "created_at": "t2"}]},
    })
    expected = {
        "dataset": ["ID  NAME     CLASSES  TRAIN  TEST  EVAL  SUITE",
                    "d1  colours        2      6     2     2  no"],
        "job": ["ID  STATE    PROGRESS  ETA  METHOD  DATASET  CREATED",
                "j1  running       25%  40s  zscl    d1       2025-01-01T00:00:00"],
        "label-set": ["NAME     LABELS  KEEPS IMAGES  AUTO-UPDATE  SOURCE",
                      "colours       2  yes           off          -"],
        "models": ["  VERSION (* served)  PARENT  METHOD  CREATED",
                   "  v1                  -       -       t1",
                   "* v2                  v1      zscl    t2"],
    }
    for command, lines in expected.items():
        assert cli.main([command, "list", "--url", "http://x"]) == 0
        assert capsys.readouterr().out.splitlines() == lines


def test_format_table_pads_columns_and_refuses_ragged_rows():
    assert format_table(("A", "NUMBER"), [("long cell", 3), ("b", None)], empty="none",
                        right={"NUMBER"}) == ["A          NUMBER", "long cell       3",
                                              "b               -"]
    assert format_table(("A",), [], empty="nothing yet") == ["nothing yet"]
    with pytest.raises(ValueError, match="2 cells under 1 columns"):
        format_table(("A",), [("x", "y")], empty="")


# -- job watch ---------------------------------------------------------------------------------

def _job(state: str, step: int, total: int = 200, **extra) -> dict:
    return {"id": "j1", "state": state, "step": step, "total_steps": total,
            "progress": round(step / total, 4) if total else 0.0, "losses": {}, "eta_s": None,
            "report": {}, "error": None, "candidate_version": None, "method": "zscl",
            "dataset_id": "d1", "base_version": "v1", **extra}


def _run(job_snapshots: list[dict], every: int = 10) -> list[str]:
    lines = ProgressLines(every)
    return [line for job in job_snapshots if (line := lines.update(job)) is not None]


_SAID = re.compile(r"^job j1: (\w+)\s+(\d+)%  step ")


def _said(lines: list[str]) -> list[tuple[str, int]]:
    """(state, percent) of each progress line."""
    return [(m.group(1), int(m.group(2))) for line in lines if (m := _SAID.match(line))]


def test_progress_lines_print_state_changes_and_every_ten_percent():
    snapshots = ([_job("queued", 0)] * 5 + [_job("running", step) for step in range(201)]
                 + [_job("running", 200)] * 3 + [_job("succeeded", 200)])
    lines = _run(snapshots)
    assert _said(lines) == ([("queued", 0), ("running", 0)]
                            + [("running", p) for p in range(10, 101, 10)] + [("succeeded", 100)])
    assert len(_said(lines)) == len(lines)


def test_progress_lines_one_line_per_jump_and_quiet_when_nothing_changes():
    snapshots = [_job("running", 10), _job("running", 70), _job("running", 72),
                 _job("running", 70), _job("running", 100)]  # 5%, 35%, 36%, 35%, 50%
    assert _said(_run(snapshots)) == [("running", 5), ("running", 35), ("running", 50)]
    assert _run([_job("running", 1)] * 1000) == [_run([_job("running", 1)])[0]]


def test_progress_lines_follow_a_requeued_job_from_its_start():
    snapshots = [_job("running", 150), _job("queued", 0, retry=1), _job("running", 10),
                 _job("running", 30), _job("running", 50)]  # 75%, 0%, 5%, 15%, 25%
    assert _said(_run(snapshots)) == [("running", 75), ("queued", 0), ("running", 5),
                                      ("running", 15), ("running", 25)]


def test_progress_lines_name_losses_and_eta():
    line = ProgressLines().update(_job("running", 50, losses={"ce": 0.12345, "kd": 1}, eta_s=42.4))
    assert line == "job j1: running   25%  step 50/200  ce=0.123  kd=1.000  eta 42s"
    with pytest.raises(ValueError, match="1..100"):
        ProgressLines(0)


@pytest.fixture()
def watched(monkeypatch):
    """``job watch`` over a job polled 1000 times: 2000 steps, then succeeded."""
    snapshots = iter([_job("queued", 0, 2000)] + [_job("running", s, 2000) for s in range(1000)]
                     + [_job("succeeded", 2000, 2000, candidate_version="v2")])
    polls = []

    def call(args, method, path, **kwargs):
        if path == "/livez":  # the API answers from the promoted version
            return types.SimpleNamespace(headers={"X-Model-Version": "v2"})
        polls.append(path)
        return _Answer(next(snapshots))

    monkeypatch.setattr(http, "call", call)
    return polls


def test_watch_to_a_file_prints_state_changes_and_tenths_only(watched, capsys):
    assert cli.main(["job", "watch", "j1", "--interval", "0", "--url", "http://x"]) == 0
    assert len(watched) == 1002
    lines = capsys.readouterr().out.splitlines()
    assert _said(lines) == ([("queued", 0), ("running", 0)]
                            + [("running", p) for p in range(10, 50, 10)]  # 999 of 2000 steps
                            + [("succeeded", 100)])
    assert len(lines) == len(_said(lines)) + 3  # print_job's summary, then the swap seen
    assert lines[-2:] == ["  promoted: v2", "  now serving v2"]
    assert sum(len(line) + 1 for line in lines) < 1_000


def test_watch_on_a_terminal_keeps_the_live_bar(watched, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert cli.main(["job", "watch", "j1", "--interval", "0", "--url", "http://x"]) == 0
    out = capsys.readouterr().out
    assert "\r" in out and "2000/2000" in out  # tqdm's redrawn line
    assert not _said(out.splitlines())  # no ProgressLines on a terminal
    assert out.splitlines()[-1] == "  now serving v2"


def test_watch_says_so_when_the_api_has_not_switched_yet(monkeypatch, capsys):
    snapshots = iter([_job("succeeded", 10, 10, candidate_version="v2")])

    def call(args, method, path, **kwargs):
        if path == "/livez":  # still loading the promoted version
            return types.SimpleNamespace(headers={"X-Model-Version": "v1"})
        return _Answer(next(snapshots))

    monkeypatch.setattr(http, "call", call)
    monkeypatch.setattr(jobs, "SWAP_PATIENCE_S", 0.2)
    assert cli.main(["job", "watch", "j1", "--interval", "0", "--url", "http://x"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "still answered from v1" in last and "switches to v2" in last
