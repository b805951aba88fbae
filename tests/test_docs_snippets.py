"""Every ```python block of the documentation runs, against the embedded servers.

The blocks of one page run in order in one namespace, like a session at the prompt (a
page starts its own embedded server when it needs one), then each ``test_*`` function
the page defines runs with the fixtures it names. A block that needs a real endpoint is
preceded by a ``<!-- snippet: skip (why) -->`` line (it must still compile), a signature
shown with Python highlighting by ``<!-- snippet: signature -->``. Pages: README.md and
docs/**/*.md (not the build output).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from leap_sync.testing import ElstatServer, LeapEdgeServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MARK = re.compile(r"<!--\s*snippet:\s*(skip|signature)\b[^>]*-->\s*$")


def pages() -> list[Path]:
    found = [ROOT / "README.md"]
    for page in sorted(DOCS.rglob("*.md")):
        parts = page.relative_to(DOCS).parts
        if parts[0] != "_build":
            found.append(page)
    return found


def blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line number, code, mark: "", "skip" or "signature") of each python block of ``page``."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.search(before)
        found.append((line, match.group(1), mark.group(1) if mark else ""))
    return found


@contextlib.contextmanager
def fixture(name: str) -> Iterator[Any]:
    """The pytest fixtures a test function in the docs may take."""
    if name == "leap_edge_server":
        with LeapEdgeServer() as server:
            yield server
    elif name == "elstat_server":
        with ElstatServer() as elstat:
            yield elstat
    else:
        raise AssertionError(f"a test in the docs takes {name!r}, which this runner does not provide")


def run_tests(namespace: dict[str, Any], where: str) -> int:
    """Call each ``test_*`` function the page defined, with the fixtures it names."""
    ran = 0
    for name, value in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(value) and value.__code__.co_filename.startswith(where):
            test: Callable[..., None] = value
            with contextlib.ExitStack() as stack:
                test(*(stack.enter_context(fixture(p)) for p in inspect.signature(test).parameters))
            ran += 1
    return ran


PAGES = [page for page in pages() if blocks(page)]


def test_the_docs_have_runnable_snippets() -> None:
    runnable = [code for page in PAGES for _, code, mark in blocks(page) if not mark]
    assert len(runnable) >= 20
    assert any("leap_sync.elstat" in code for code in runnable)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_snippets_run(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    out = io.StringIO()
    for line, code, mark in blocks(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        if mark == "signature":
            continue
        compiled = compile(code, where, "exec")
        if mark == "skip":
            continue
        with contextlib.redirect_stdout(out):
            try:
                exec(compiled, namespace)
            except BaseException as exc:
                raise AssertionError(f"the block at {where} raised {exc!r}; it printed:\n{out.getvalue()}") from exc
    run_tests(namespace, str(page.relative_to(ROOT)))


def test_a_test_function_in_the_docs_is_run() -> None:
    page = DOCS / "howto" / "testing.md"
    namespace: dict[str, Any] = {"__name__": "docs_testing"}
    where = str(page.relative_to(ROOT))
    code = next(code for _, code, mark in blocks(page) if "def test_" in code and not mark)
    exec(compile(code, f"{where}:1", "exec"), namespace)
    assert run_tests(namespace, where) == 1


def test_the_readme_links_point_at_files_that_exist() -> None:
    """README.md is not part of the site (whose links Sphinx checks): its own links into
    docs/ and the repository are checked here."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert len(local) >= 20
    assert [t for t in local if not (ROOT / t).is_file()] == []
