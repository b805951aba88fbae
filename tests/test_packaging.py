"""The sdist and the wheel build, pass ``twine check``, and hold what they should.

Builds without isolation (``build``, ``twine``, ``setuptools`` and ``wheel`` are in the
test extra) from a copy of the checkout, so the working tree gets no build output.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import leap_sync

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["leap_sync", "docs", "tests", "examples", "setup.cfg", "pyproject.toml", "MANIFEST.in"]
SOURCES += ["README.md", "CHANGELOG.md", "LICENSE", "tox.ini"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("build", "twine", "setuptools", "wheel"):
        pytest.importorskip(tool)
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules", "_build", "*.egg-info")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def only(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


def test_twine_check_passes(dist: Path) -> None:
    files = [str(p) for p in sorted(dist.iterdir())]
    assert len(files) == 2
    done = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_wheel_holds_the_package_the_license_and_no_tests(dist: Path) -> None:
    wheel = only(dist, f"leap_sync-{leap_sync.__version__}-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    info = f"leap_sync-{leap_sync.__version__}.dist-info/"
    assert "leap_sync/py.typed" in names
    assert "leap_sync/testing/pytest_plugin.py" in names
    assert [n for n in names if not n.startswith(("leap_sync/", info))] == []
    assert not [n for n in names if "tests/" in n or n.startswith(("docs/", "examples/"))]
    licenses = [n for n in names if n.startswith(info) and n.endswith("LICENSE")]
    assert len(licenses) == 1
    assert "MIT License" in zipfile.ZipFile(wheel).read(licenses[0]).decode()
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(info + "METADATA"))
    assert metadata["Version"] == leap_sync.__version__  # the version is written once
    assert "MIT" in (metadata["License"] or metadata["License-Expression"] or "")
    classifiers = metadata.get_all("Classifier") or []
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert f"## [{leap_sync.__version__}]" in description  # the changelog, in the long description


def test_the_sdist_holds_the_license_and_the_changelog(dist: Path) -> None:
    sdist = only(dist, f"leap[-_]sync-{leap_sync.__version__}.tar.gz")  # setuptools >= 69.3 says leap_sync
    top = sdist.name.removesuffix(".tar.gz") + "/"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        changelog = tar.extractfile(top + "CHANGELOG.md")
        assert changelog is not None
        assert f"## [{leap_sync.__version__}]" in changelog.read().decode()
    for name in ("LICENSE", "CHANGELOG.md", "README.md", "leap_sync/py.typed", "docs/conf.py"):
        assert top + name in names, name
    assert not [n for n in names if "/_build/" in n or "node_modules" in n]
