"""Check the house rules a reviewer would otherwise check by eye, from the source alone (``ast``).

- Imports run downward: ``zscl_core`` (the library) imports no project package; ``records``
  imports only ``zscl_core``; ``jobqueue`` (the Celery contract) only those two; ``service``
  (web) and ``worker`` (Celery) import those three but never each other; the entry points
  (``zscl_cli``, ``zscl_bench``) sit on top, and ``benchmarks`` (scripts that measure the
  product) beside ``zscl_cli``.
- No import cycle between modules, counting imports inside functions too, nor between packages
  (``zscl_cli`` runs ``zscl bench``, so ``zscl_bench`` must not import ``zscl_cli``).
- No module over 500 lines, no function over 60 lines (tests excepted).
- Every public function and class (and public method of a public class) of a package in
  ``DOCUMENTED`` has a docstring.

Run ``python scripts/check_layout.py``; it prints each violation and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zscl_core", "records", "jobqueue", "service", "worker", "zscl_cli", "zscl_bench",
            "benchmarks")
# what each package may import, besides itself
ALLOWED = {
    "zscl_core": set(),
    "records": {"zscl_core"},
    "jobqueue": {"zscl_core", "records"},
    "service": {"zscl_core", "records", "jobqueue"},
    "worker": {"zscl_core", "records", "jobqueue"},
    "zscl_bench": {"zscl_core", "records", "jobqueue", "service", "worker"},
    "zscl_cli": {"zscl_core", "records", "jobqueue", "service", "worker", "zscl_bench"},
    "benchmarks": {"zscl_core", "records", "jobqueue", "service", "worker", "zscl_bench"},
}
SIZED = PACKAGES  # every package; tests are not sized
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
# packages whose public functions and classes need a docstring
DOCUMENTED = ("service", "zscl_cli", "records", "jobqueue")
# modules of a DOCUMENTED package let off (none now; a name here needs a reason beside it)
NOT_YET_DOCUMENTED: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_modules(name: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """The project modules ``name`` imports (anywhere in the file), with line numbers."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when that is a module, else a name in pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def layer_violations(graph: dict[str, dict[str, int]], known: dict[str, Path]) -> list[str]:
    out = []
    for name, deps in graph.items():
        top = name.split(".")[0]
        for dep, line in deps.items():
            dep_top = dep.split(".")[0]
            if dep_top != top and dep_top not in ALLOWED[top]:
                out.append(f"{known[name].relative_to(ROOT)}:{line}: {top} must not import {dep_top} "
                           f"({dep})")
    return out


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def package_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The module graph folded onto top-level packages (a package's own imports dropped)."""
    folded: dict[str, dict[str, int]] = {}
    for name, deps in graph.items():
        top = name.split(".")[0]
        edges = folded.setdefault(top, {})
        for dep, line in deps.items():
            if dep.split(".")[0] != top:
                edges.setdefault(dep.split(".")[0], line)
    for edges in list(folded.values()):
        for dep in edges:
            folded.setdefault(dep, {})
    return folded


def size_violations(known: dict[str, Path]) -> list[str]:
    out = []
    for name, path in known.items():
        if name.split(".")[0] not in SIZED:
            continue
        source = path.read_text()
        where = path.relative_to(ROOT)
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            out.append(f"{where}: {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    out.append(f"{where}:{node.lineno}: {node.name}() is {length} lines "
                               f"(at most {MAX_FUNCTION_LINES})")
    return out


_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def public_definitions(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    """Module-level functions and classes whose name does not start with ``_``, and the public
    methods of those classes (dunders and property setters or deleters excepted), with names."""
    for node in tree.body:
        if not isinstance(node, _DEFINITIONS) or node.name.startswith("_"):
            continue
        yield node, node.name
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and not item.name.startswith("_") and not _is_setter(item)):
                    yield item, f"{node.name}.{item.name}"


def _is_setter(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``@x.setter`` or ``@x.deleter``: the property's getter carries the docstring."""
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter")
               for d in node.decorator_list)


def missing_docstrings(known: dict[str, Path]) -> list[str]:
    """The public functions and classes of the ``DOCUMENTED`` packages that have no docstring."""
    out = []
    for name, path in known.items():
        if name.split(".")[0] not in DOCUMENTED or name in NOT_YET_DOCUMENTED:
            continue
        where = path.relative_to(ROOT)
        for node, qualname in public_definitions(ast.parse(path.read_text(), str(path))):
            if not (ast.get_docstring(node) or "").strip():
                out.append(f"{where}:{node.lineno}: {qualname} has no docstring")
    return out


def check() -> list[str]:
    known = project_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        graph[name] = {}
        for dep, line in imported_modules(name, path, known):
            graph[name].setdefault(dep, line)
    problems = layer_violations(graph, known)
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    problems += [f"package loop: {' <-> '.join(c)}" for c in cycles(package_graph(graph))]
    problems += size_violations(known)
    problems += missing_docstrings(known)
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    print(f"{len(problems)} layout problem(s)" if problems else "layout ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
