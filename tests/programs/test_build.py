"""The committed verifier/market/pocv_job.so is what its source builds to, byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.programs.conftest import PROGRAM_SO, REPO

BUILD = REPO / "programs" / "build.py"


def test_committed_program_is_a_reproducible_build(tmp_path) -> None:
    rebuilt = tmp_path / "pocv_job.so"
    r = subprocess.run([sys.executable, str(BUILD), "--out", str(rebuilt)], capture_output=True, text=True)
    if r.returncode == 2:
        pytest.skip(f"clang is not installed, the program cannot be rebuilt here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert rebuilt.read_bytes() == PROGRAM_SO.read_bytes(), (
        "verifier/market/pocv_job.so is not what programs/job/job.c builds to: run python programs/build.py and commit")


def test_linker_refuses_what_the_v0_loader_would(tmp_path) -> None:
    sys.path.insert(0, str(BUILD.parent))
    try:
        from sbf_link import LinkError, link
    finally:
        sys.path.remove(str(BUILD.parent))
    with pytest.raises(LinkError, match="not a 64-bit"):
        link(b"not an elf")
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (apt-get install -y clang llvm)")
    src = tmp_path / "w.c"
    src.write_text("int counter; unsigned long entrypoint(const unsigned char *in) { return counter++; }\n")
    r = subprocess.run(["clang", "-O2", "-target", "bpfel", "-mcpu=v2", "-c", str(src), "-o", str(tmp_path / "w.o")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"clang cannot build BPF objects here: {r.stderr.strip()[:200]}")
    with pytest.raises(LinkError, match="writable"):
        link((tmp_path / "w.o").read_bytes())
