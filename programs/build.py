"""Build the pocv job program: Debian's clang (BPF backend) compiles job/job.c, sbf_link.py links it.

    python programs/build.py            # writes verifier/market/pocv_job.so (shipped as pocv.market data)
    python programs/build.py --check    # rebuilds into a temporary file; exit 1 if the bytes differ
    python programs/build.py --out PATH # writes PATH instead

The build is reproducible: the same clang and the same sources give the same bytes (CI runs
--check against the committed .so). Exit codes: 0 built/identical, 1 differs, 2 no clang.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "job" / "job.c"
OUTPUT = HERE.parent / "verifier" / "market" / "pocv_job.so"
CLANG_CANDIDATES = ("clang", "clang-14", "clang-15", "clang-16")
# -mcpu=v2: v3 emits JMP32 (opcode 0x26), which the SBPFv0 loader rejects. No -fPIC (it turns
# constant pointer tables into 32-bit relative ones), no -ffunction-sections (one .text only).
CFLAGS = ("-O2", "-fno-builtin", "-ffreestanding", "-std=c17", "-target", "bpfel", "-mcpu=v2", "-Wall", "-Wextra",
          "-Werror", "-fno-ident", "-fdebug-prefix-map=/=/")

sys.path.insert(0, str(HERE))
from sbf_link import link  # noqa: E402  (a sibling file, not an installed package)


def find_clang() -> str | None:
    for name in CLANG_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def build(clang: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "job.o"
        # compile from inside the source folder with a relative path, so no absolute path
        # of this checkout can reach the object
        subprocess.run([clang, *CFLAGS, "-c", SOURCE.name, "-o", str(obj)], cwd=SOURCE.parent, check=True,
                       env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
        return link(obj.read_bytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="rebuild and compare with the committed .so")
    ap.add_argument("--out", type=Path, default=OUTPUT)
    args = ap.parse_args(argv)
    clang = find_clang()
    if clang is None:
        print("build.py: clang not found (apt-get install -y clang llvm)", file=sys.stderr)
        return 2
    so = build(clang)
    digest = hashlib.sha256(so).hexdigest()
    if args.check:
        committed = args.out.read_bytes()
        if committed != so:
            print(f"build.py: {args.out} differs from a rebuild (committed sha256 "
                  f"{hashlib.sha256(committed).hexdigest()}, rebuilt {digest})", file=sys.stderr)
            return 1
        print(f"{args.out}: identical to a rebuild ({len(so)} bytes, sha256 {digest})")
        return 0
    args.out.write_bytes(so)
    print(f"{args.out}: {len(so)} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
