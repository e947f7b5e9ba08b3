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
