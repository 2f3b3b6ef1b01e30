"""Packaging: the wheel installs one import name, ``pocv``, and the ``pocv`` command.

pyproject.toml maps ``pocv`` <- verifier/ and ``pocv.kernels`` <- kernels/; nothing named
``verifier`` or ``kernels`` may land at the top level of site-packages (PyPI's ``kernels``
package owns that name). The wheel is built from a copy of the project's packaging inputs in a
temporary directory, so the build neither writes into the checkout (build/, *.egg-info) nor
picks up stale files from an earlier in-tree build.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
#: what setuptools reads to build the wheel (the rest of the checkout is not packaged)
BUILD_INPUTS = ("pyproject.toml", "README.md", "verifier", "kernels", "MANIFEST.in", "setup.cfg", "setup.py",
                "LICENSE", "LICENSE.txt", "NOTICE")


def _setuptools_is_new_enough() -> bool:
    """The build backend pyproject.toml asks for (setuptools>=68) is importable here."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    major = version.split(".")[0]
    return major.isdigit() and int(major) >= 68


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    tmp = tmp_path_factory.mktemp("wheel")
    src, out = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in BUILD_INPUTS:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.is_file():
            shutil.copy2(p, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
           "-q", "-w", str(out), str(src)]
    if _setuptools_is_new_enough():
        # offline: build with this environment's setuptools; otherwise pip fetches the build
        # requirements into an isolated environment (as `pip install -e .` itself does)
        cmd.insert(cmd.index("-q"), "--no-build-isolation")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"wheel build failed ({' '.join(cmd)}):\n{result.stdout}\n{result.stderr}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, got {[w.name for w in wheels]}"
    assert wheels[0].name == f"pocv-{VERSION}-py3-none-any.whl"
    zf = zipfile.ZipFile(wheels[0])
    yield zf
    zf.close()


def test_wheel_has_only_the_pocv_import_name(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert top == {"pocv", f"pocv-{VERSION}.dist-info"}, f"unexpected top-level names in the wheel: {sorted(top)}"
    assert not top & {"verifier", "kernels", "tests", "bench"}


@pytest.mark.parametrize("path", ["pocv/__init__.py", "pocv/py.typed", "pocv/kernels/__init__.py",
                                  "pocv/market/__init__.py"])
def test_wheel_contains(wheel: zipfile.ZipFile, path: str) -> None:
    assert path in wheel.namelist(), f"{path} is missing from the wheel"


def test_wheel_packages_every_source_module(wheel: zipfile.ZipFile) -> None:
    """Every .py file under verifier/ and kernels/ is in the wheel under its pocv name."""
    names = set(wheel.namelist())
    expected = {f"pocv/{p.relative_to(ROOT / 'verifier').as_posix()}" for p in (ROOT / "verifier").rglob("*.py")}
    expected |= {f"pocv/kernels/{p.relative_to(ROOT / 'kernels').as_posix()}" for p in (ROOT / "kernels").rglob("*.py")}
    assert expected - names == set(), f"source modules missing from the wheel: {sorted(expected - names)}"


def test_wheel_declares_the_pocv_command(wheel: zipfile.ZipFile) -> None:
    text = wheel.read(f"pocv-{VERSION}.dist-info/entry_points.txt").decode()
    lines = [line.replace(" ", "") for line in text.splitlines()]
    assert "[console_scripts]" in lines
    section = lines[lines.index("[console_scripts]") + 1:]
    section = section[: next((i for i, s in enumerate(section) if s.startswith("[")), len(section))]
    assert "pocv=pocv.cli:main" in section, f"entry_points.txt:\n{text}"
    names = set(wheel.namelist())
    assert {"pocv/cli.py", "pocv/cli/__init__.py"} & names, "the module of the pocv command, pocv.cli, is not in the wheel"


def test_installed_distribution_has_the_pocv_command() -> None:
    """Cheap: the installed (editable) distribution declares the console script."""
    dist = importlib.metadata.distribution("pocv")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("pocv") == "pocv.cli:main", f"console scripts of the installed pocv: {scripts}"
