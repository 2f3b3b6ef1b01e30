"""node_modules for the tests' JavaScript checks (solana-bankrun, @solana/web3.js), installed once
with ``npm ci`` from a committed lock file into a cache outside the checkout, keyed by the lock."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def npm_modules(package_dir: Path, name: str, installed: str) -> Path:
    """The node_modules of ``package_dir`` (its package.json and package-lock.json), under
    ``$XDG_CACHE_HOME/pocv/<name>-<lock hash>``; ``installed`` is the module path that marks a
    finished install. A failed ``npm ci`` fails the test with npm's error."""
    lock = (package_dir / "package-lock.json").read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pocv" / (
        f"{name}-" + hashlib.sha256(lock).hexdigest()[:16])
    modules = cache / "node_modules"
    if not (modules / installed).is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        for f in ("package.json", "package-lock.json"):
            shutil.copy(package_dir / f, cache / f)
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=cache,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.fail(f"npm ci of {installed} failed:\n{r.stderr[-2000:]}")
    return modules
