"""Nothing in the project points at a document it does not contain."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = re.compile(r"\b((?:[\w.-]+/)*[A-Z][A-Z0-9_-]+\.md)\b")
"""A document named in capitals, as README.md is, with its folder if given."""
SOURCES = ("harness", "tests", "bench", "examples", "docs")


def project_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "Makefile", REPO / ".ci" / "run"]
    for folder in SOURCES:
        files += [
            p
            for p in (REPO / folder).rglob("*")
            if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".yml", ".sh", ".html")
        ]
    return files


def test_every_document_the_project_names_is_in_it() -> None:
    missing = []
    for path in project_files():
        for name in DOCUMENT.findall(path.read_text(errors="replace")):
            here, anywhere = path.parent / name, REPO / name
            if not (here.exists() or anywhere.exists() or list(REPO.glob(f"*/{name}"))):
                missing.append(f"{path.relative_to(REPO)}: {name}")
    assert not missing, missing


def test_the_documented_pytest_example_is_the_one_the_suite_runs() -> None:
    """docs/pytest.md's first example is ``examples/test_my_server.py``'s test, word for
    word (its docstring aside): the suite runs that file on the local backend and against
    a server known to be broken (tests/integration/test_pytest_plugin.py)."""
    import ast

    page = (REPO / "docs" / "pytest.md").read_text()
    section = page[page.index("# Writing your own resilience tests") :]
    block = section[section.index("```python\n") + len("```python\n") :]
    block = block[: block.index("```")]
    example = (REPO / "examples" / "test_my_server.py").read_text()
    name = re.match(r"def (\w+)", block)
    assert name, block
    (function,) = [
        node
        for node in ast.parse(example).body
        if isinstance(node, ast.FunctionDef) and node.name == name.group(1)
    ]
    lines = example.splitlines()[function.lineno - 1 : function.end_lineno]
    docstring = function.body[0]
    assert isinstance(docstring, ast.Expr)
    del lines[docstring.lineno - function.lineno : docstring.end_lineno - function.lineno + 1]
    assert "\n".join(lines) + "\n" == block
