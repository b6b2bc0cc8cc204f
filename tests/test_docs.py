"""The reviewers' documents must point at tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


@pytest.mark.parametrize("doc", ["docs/threat-model.md"])
def test_every_referenced_test_exists(doc: str) -> None:
    text = (REPO / doc).read_text()
    refs = REF.findall(text)
    assert len(refs) >= 20, "the threat model should cite its tests"
    missing = [f"{f}::{t}" for f, t in refs if t not in _tests_in(REPO / f)]
    assert not missing, missing


def test_every_threat_names_a_test() -> None:
    text = (REPO / "docs/threat-model.md").read_text()
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    assert len(sections) >= 7
    for section in sections:
        assert REF.search(section), f"threat without a test: {section.splitlines()[0]}"


MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|tmp|root|home)/")


@pytest.mark.parametrize(
    "doc", ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
)
def test_docs_name_no_machine_path(doc: str) -> None:
    # A reader's machine has none of this one's folders: commands run from the checkout's root.
    lines = (REPO / doc).read_text().splitlines()
    found = [
        f"{doc}:{n}: {line.strip()}" for n, line in enumerate(lines, 1) if MACHINE_PATH.search(line)
    ]
    assert not found, found


def test_test_module_names_are_unique() -> None:
    """pytest imports test modules by basename (rootdir-relative, no packages): two files
    with one name in different folders stop collection on a clean checkout."""
    names = [p.name for p in REPO.joinpath("tests").rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})
