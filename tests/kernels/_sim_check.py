"""Run numba-cuda kernels under the simulator and print digests (a subprocess of the tests).

Usage: NUMBA_ENABLE_CUDASIM=1 python tests/kernels/_sim_check.py JOB [JOB ...]
with JOB = gemm:N:SEED or heat:N:M:SEED:STEPS. Prints one JSON line mapping each JOB to
{"sim": <digest of the simulated result>, "cpu": <digest of the CPU reference>, "equal": bool}.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np


def digest(a: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(a, np.float32).tobytes(), digest_size=16).hexdigest()


def run(job: str) -> dict:
    from pocv.kernels import _cuda

    kind, *args = job.split(":")
    if kind == "gemm":
        from pocv.kernels.gemm_fp32_exact import gemm_f32_reference, softsign_reference

        n, seed = int(args[0]), int(args[1])
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal((n, n)) * 2).astype(np.float32)
        w = (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
        out = np.zeros((n, n), np.float32)
        _cuda.gemm_softsign(x, w, out)
        ref = gemm_f32_reference(softsign_reference(x), w)
    elif kind == "heat":
        from pocv.kernels.heat2d import heat_reference

        n, m, seed, steps = (int(a) for a in args)
        rng = np.random.default_rng(seed)
        u = rng.standard_normal((n, m)).astype(np.float32)
        a, b = u.copy(), np.empty_like(u)
        for _ in range(steps):
            _cuda.heat(a, b, 0.125)
            a, b = b, a
        out = a
        ref = heat_reference(u, steps)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return {"sim": digest(out), "cpu": digest(ref), "equal": bool(np.array_equal(out, ref))}


def main() -> None:
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run under the simulator"
    from pocv.kernels import _cuda

    assert _cuda.SIM
    print(json.dumps({job: run(job) for job in sys.argv[1:]}))


if __name__ == "__main__":
    main()
