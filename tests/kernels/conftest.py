"""Fixtures of the kernel tests: the plugin test package and the digits example, pip-installed
into this environment (editable, no dependencies, no build isolation; once), and an artifact store
with their calibration records."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = {"pocv-plugin-test": ROOT / "tests" / "plugin", "pocv-digits": ROOT / "examples" / "digits"}


def _installed(dist: str, where: Path) -> bool:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return False
    return any(ep.group == "pocv.kernels" for ep in d.entry_points) and where.is_dir()


def install_plugins() -> None:
    """pip install -e each plugin package unless it is installed already (idempotent)."""
    for dist, where in PLUGINS.items():
        if not _installed(dist, where):
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "-e", str(where)], check=True, capture_output=True)
        if str(where) not in sys.path:  # an editable install's .pth is read at start-up only
            sys.path.append(str(where))
    importlib.invalidate_caches()


@pytest.fixture(scope="session")
def plugins() -> None:
    install_plugins()
