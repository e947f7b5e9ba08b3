"""Every relative link in the README and docs/*.md points at a file that exists.

Links are markdown's ``[text](target)`` and ``![alt](target)``; a target with a URL scheme
(``https:``, ``mailto:``) or a bare ``#anchor`` is not checked, and ``#fragment`` is cut off. A
target resolves relative to the file that links it, as GitHub renders it. Fenced code blocks and
inline code are skipped: ``a[i](x)`` in an example is code, not a link.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
# [text](target) or ![alt](target), target optionally in <...> and followed by a "title"
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def relative_links(markdown: str) -> list[str]:
    """The link targets in ``markdown`` that name a local path, fragments removed."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    targets = []
    for match in _LINK.finditer(text):
        target = match.group(1).strip("<>")
        if not target or target.startswith("#") or _SCHEME.match(target):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_relative_links_finds_local_targets_only():
    text = """[a](docs/a.md) ![img](bench/x.png "title") [web](https://example.org/x)
[anchor](#layout) [frag](serving.md#settings) [mail](mailto:x@y.z) [nested [x]](<b c.md>)
`[code](not/a/link.md)`
```
[fenced](not/a/link/either.md)
```
"""
    assert relative_links(text) == ["docs/a.md", "bench/x.png", "serving.md", "b c.md"]


def test_the_docs_exist():
    assert (REPO / "README.md").is_file()
    assert len(DOCS) > 1, "docs/*.md is empty"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path):
    broken = [target for target in relative_links(doc.read_text(encoding="utf-8"))
              if not (doc.parent / target).exists()]
    assert not broken, f"{doc.relative_to(REPO)} links to missing paths: {broken}"
