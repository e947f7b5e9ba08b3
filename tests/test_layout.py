"""The house rules that scripts/check_layout.py enforces: imports run downward, no cycles,
small modules and functions. The first test is the check itself; the others show it can fail."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_layout", ROOT / "scripts" / "check_layout.py")
check_layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layout)


def test_the_tree_follows_the_layout_rules():
    assert check_layout.check() == []


def test_an_upward_or_sideways_import_is_reported():
    known = {name: ROOT / "x.py" for name in ("service.app", "worker.tasks", "zscl_core.train",
                                              "records.jobs")}
    graph = {"service.app": {"worker.tasks": 3}, "worker.tasks": {"records.jobs": 1},
             "zscl_core.train": {"records.jobs": 7}, "records.jobs": {}}
    problems = check_layout.layer_violations(graph, known)
    assert problems == ["x.py:3: service must not import worker (worker.tasks)",
                        "x.py:7: zscl_core must not import records (records.jobs)"]


def test_records_may_not_import_the_queue_contract_but_both_edges_may():
    known = {name: ROOT / "x.py" for name in ("records.jobs", "jobqueue", "service.updates",
                                              "worker.tasks")}
    graph = {"records.jobs": {"jobqueue": 4}, "jobqueue": {"records.jobs": 1},
             "service.updates": {"jobqueue": 2}, "worker.tasks": {"jobqueue": 9}}
    assert check_layout.layer_violations(graph, known) == [
        "x.py:4: records must not import jobqueue (jobqueue)"]


def test_a_cycle_through_function_level_imports_is_reported(tmp_path):
    package = tmp_path / "records"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from records.a import f\n")
    (package / "c.py").write_text("from .a import f\n")
    known = {"records": package / "__init__.py", "records.a": package / "a.py",
             "records.b": package / "b.py", "records.c": package / "c.py"}
    graph = {name: dict(check_layout.imported_modules(name, path, known))
             for name, path in known.items()}
    assert graph["records.a"] == {"records.b": 2}
    assert check_layout.cycles(graph) == [["records.a", "records.b"]]


def test_a_loop_between_packages_is_reported_even_where_each_import_is_allowed(monkeypatch):
    # the loop zscl_cli -> zscl_bench -> zscl_cli, with both directions allowed on purpose
    monkeypatch.setitem(check_layout.ALLOWED, "zscl_bench",
                        check_layout.ALLOWED["zscl_bench"] | {"zscl_cli"})
    known = {name: ROOT / "x.py" for name in ("zscl_cli.main", "zscl_cli.jobs", "zscl_bench.cli")}
    graph = {"zscl_cli.main": {"zscl_bench.cli": 5}, "zscl_bench.cli": {"zscl_cli.jobs": 9},
             "zscl_cli.jobs": {}}
    assert check_layout.layer_violations(graph, known) == []
    assert check_layout.cycles(graph) == []  # no loop between modules: only between packages
    assert check_layout.cycles(check_layout.package_graph(graph)) == [["zscl_bench", "zscl_cli"]]


def test_zscl_bench_importing_zscl_cli_is_refused():
    known = {name: ROOT / "x.py" for name in ("zscl_bench.cli", "zscl_cli.jobs")}
    graph = {"zscl_bench.cli": {"zscl_cli.jobs": 9}, "zscl_cli.jobs": {}}
    assert check_layout.layer_violations(graph, known) == [
        "x.py:9: zscl_bench must not import zscl_cli (zscl_cli.jobs)"]


def test_the_size_rule_covers_benchmarks_and_zscl_bench(tmp_path, monkeypatch):
    assert {"benchmarks", "zscl_bench"} <= set(check_layout.SIZED)
    package = tmp_path / "benchmarks"
    package.mkdir()
    # a 61-line function, then blank lines up to 501 lines
    (package / "big.py").write_text("def f():\n" + "    x = 1\n" * 60 + "\n" * 440)
    monkeypatch.setattr(check_layout, "ROOT", tmp_path)
    assert check_layout.size_violations({"benchmarks.big": package / "big.py"}) == [
        "benchmarks/big.py: 501 lines (at most 500)",
        "benchmarks/big.py:1: f() is 61 lines (at most 60)"]


def test_benchmarks_importing_zscl_cli_is_refused():
    known = {name: ROOT / "x.py" for name in ("benchmarks.serve_bench.cli", "zscl_cli.main",
                                              "zscl_bench.cli")}
    graph = {"benchmarks.serve_bench.cli": {"zscl_bench.cli": 4, "zscl_cli.main": 9},
             "zscl_cli.main": {}, "zscl_bench.cli": {}}
    assert check_layout.layer_violations(graph, known) == [
        "x.py:9: benchmarks must not import zscl_cli (zscl_cli.main)"]


def test_a_public_definition_without_a_docstring_is_reported(tmp_path, monkeypatch):
    for package in ("service", "records"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "m.py").write_text(
            "def f():\n    pass\n\n\n"
            "def _private():\n    pass\n\n\n"
            "class C:\n    \"\"\"Documented.\"\"\"\n\n"
            "    def run(self):\n        pass\n\n"
            "    def _helper(self):\n        pass\n\n"
            "    def __init__(self):\n        pass\n")
    known = {"service.m": tmp_path / "service" / "m.py", "records.m": tmp_path / "records" / "m.py"}
    monkeypatch.setattr(check_layout, "ROOT", tmp_path)
    monkeypatch.setattr(check_layout, "DOCUMENTED", ("service",))
    missing = ["m.py:1: f has no docstring", "m.py:12: C.run has no docstring"]
    assert check_layout.missing_docstrings(known) == [f"service/{line}" for line in missing]
    # records is checked once DOCUMENTED names it
    monkeypatch.setattr(check_layout, "DOCUMENTED", ("service", "records"))
    assert check_layout.missing_docstrings(known) == [f"{package}/{line}" for package in
                                                      ("service", "records") for line in missing]
