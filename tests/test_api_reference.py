"""The API reference (docs/reference/) documents every public name, and the version is one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import leap_sync
import leap_sync.elstat
import leap_sync.testing
from leap_sync.testing import pytest_plugin

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"
DIRECTIVE = re.compile(
    r"^\.\. (currentmodule|module|autoclass|autoexception|autofunction|autodata):: (\S+)", re.MULTILINE
)


def documented() -> set[str]:
    """Every ``module.name`` an autodoc directive of the reference names."""
    names = set()
    for page in sorted(REFERENCE.glob("*.md")):
        module = ""
        for kind, target in DIRECTIVE.findall(page.read_text()):
            if kind in ("currentmodule", "module"):
                module = target
            else:
                names.add(target if "." in target else f"{module}.{target}")
    return names


@pytest.mark.parametrize("package", [leap_sync, leap_sync.elstat, leap_sync.testing], ids=lambda p: p.__name__)
def test_every_public_name_is_in_the_reference(package: object) -> None:
    public = {f"{package.__name__}.{name}" for name in package.__all__}  # type: ignore[attr-defined]
    assert public - documented() == set()


def test_every_pytest_fixture_is_in_the_reference() -> None:
    fixtures = {name for name in vars(pytest_plugin) if name.endswith(("_server", "_server_factory"))}
    assert fixtures == {"leap_edge_server", "leap_edge_server_factory", "elstat_server", "elstat_server_factory"}
    assert {f"leap_sync.testing.pytest_plugin.{name}" for name in fixtures} <= documented()


def test_the_reference_names_nothing_that_does_not_exist() -> None:
    for dotted in documented():
        module, _, name = dotted.rpartition(".")
        assert hasattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name), dotted


def test_cli_version_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "leap_sync", "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == f"leap-sync {leap_sync.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", leap_sync.__version__)
