"""The README and the docs it links: every relative link names a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces as -."""
    headings = re.findall(r"^#+\s+(.*)$", _FENCE.sub("", markdown), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _relative_links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_relative_link_resolves(document: Path) -> None:
    """Each relative link points at a file in the repository, and at a heading of it when it
    names one."""
    broken = []
    for target in _relative_links(document):
        file, _, anchor = target.partition("#")
        resolved = (document.parent / file).resolve() if file else document
        if not resolved.exists() or ROOT not in resolved.parents and resolved != ROOT:
            broken.append(target)
        elif anchor and anchor not in _anchors(resolved.read_text(encoding="utf-8")):
            broken.append(target)
    assert broken == []


def test_the_readme_links_the_envelope_reference() -> None:
    """The check above has something to check: the README links docs/envelope.md by anchor."""
    links = _relative_links(ROOT / "README.md")
    assert "docs/envelope.md" in links
    assert any(link.startswith("docs/envelope.md#") for link in links)


def test_every_eventlog_variable_in_the_readmes_examples_is_read() -> None:
    """Each EVENTLOG_* variable the README's code blocks set (shell sessions, the unit file, the
    compose file) is a setting or a variable eventlog reads: a copied example never sets one
    that is ignored. (The prose names a misspelt one on purpose, to show the warning.)"""
    from eventlog.config import unknown_variables

    blocks = "".join(_FENCE.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    named = set(re.findall(r"\bEVENTLOG_[A-Z0-9_]*[A-Z0-9]\b", blocks))
    assert {"EVENTLOG_DSN", "EVENTLOG_PG_POOL_MAX"} <= named  # the deployment examples are read
    assert unknown_variables(dict.fromkeys(named, "")) == []
