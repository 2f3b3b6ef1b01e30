"""pocv.kernels.calibrate: the report's numbers, the histogram's percentiles, the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocv.kernels import kernel_for, resolve_spec
from pocv.kernels.calibrate import _Histogram, calibrate, calibrate_main

SMALL_MLP = {"width": 32, "depth": 2, "batch": 32}


def test_histogram_percentiles_match_numpy_within_a_bin() -> None:
    rng = np.random.default_rng(1)
    data = np.concatenate([np.zeros(5000), rng.lognormal(0, 2, 100_000)])
    h = _Histogram()
    for chunk in np.array_split(data, 7):
        h.add(chunk)
    assert h.total == data.size
    assert h.zeros == 5000
    assert h.max == data.max()
    for q in (10.0, 50.0, 90.0, 99.0, 99.9):
        want = np.percentile(data, q)
        got = h.percentile(q)
        assert want * 0.999 <= got <= want * 1.05, (q, want, got)  # upper edge of a 4.4% bin
    assert h.percentile(1.0) == 0.0


def test_calibrate_tolerance_kernel_report() -> None:
    r = calibrate("mlp-sgd", trials=3, params=SMALL_MLP, max_walk=2, seed=7)
    assert r["kernel"] == "mlp-sgd@1"
    assert r["mode"] == "tolerance"
    nv = len(r["variants"])
    # every honest variant's step is judged by Kernel.judge, the verifier's and the referee's rule
    assert r["checks"] == 3 * nv
    assert r["checked_by"].startswith("Kernel.judge")
    assert r["false_fails"] == 0
    hr = r["honest_ratio"]
    assert 0 < hr["max"] < r["tau"]
    assert hr["p50"] <= hr["p90"] <= hr["p99"] <= hr["max"]
    assert r["suggested_tau"] >= 4 * hr["max"]
    for d in r["downgrades"].values():
        assert d["caught"] == d["of"] == 3
        assert d["min_needed_tau"] > r["tau"]
    json.dumps(r)


def test_calibrate_reports_freivalds_for_gemm() -> None:
    r = calibrate("gemm-fp32", trials=2, params={"n": 48}, max_walk=1)
    fr = r["freivalds"]
    assert fr["false_fails"] == 0
    assert max(fr["honest_needed_max_by_variant"].values()) < fr["tau_freivalds"]
    assert min(fr["downgrade_min_needed"].values()) > fr["tau_freivalds"]


def test_calibrate_main_prints_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    rc = calibrate_main(["mlp-sgd", "--trials", "2", "--max-walk", "1", "--param", "width=16",
                         "--param", "depth=1", "--param", "batch=8"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "mlp-sgd@1" in out
    assert "0 false FAIL" in out
    rc = calibrate_main(["heat2d", "--trials", "2", "--param", "n=9", "--param", "substeps=2", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["digest_mismatches"]


def test_calibrate_main_flags_a_bound_that_is_too_tight(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from pocv.kernels.mlp_sgd import MlpSgd

    monkeypatch.setattr(MlpSgd, "tau", 1e-3)
    rc = calibrate_main(["mlp-sgd", "--trials", "2", "--param", "width=16", "--param", "batch=8"])
    assert rc == 1
    assert "false FAIL" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "match"), [(["mlp-sgd", "--param", "width"], "NAME=INT")])
def test_calibrate_main_bad_arguments(argv: list[str], match: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        calibrate_main(argv)
    assert match in capsys.readouterr().err


def test_calibrate_rejects_bad_trials() -> None:
    with pytest.raises(ValueError, match="trials"):
        calibrate("mlp-sgd", trials=0)


def test_device_variant_is_the_kernels_own_step_brought_to_the_host() -> None:
    """A device variant runs kernel.step on that device and returns host tensors; on the CPU it is
    bit for bit the plain step (on a GPU machine, see the gpu test below)."""
    import torch

    from pocv.encoding import state_digest
    from pocv.jobs import JobSpec
    from pocv.kernels.calibrate import available_devices, device_variants

    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=4, seed=3, params={"n": 64, "layers": 1}))
    k = kernel_for(spec)
    s = k.init_state(spec)
    variants = device_variants(k, ["cpu"])
    assert list(variants) == ["device cpu"]
    out = variants["device cpu"](s, 1, spec)
    assert state_digest(out) == state_digest(k.step(s, 1, spec))
    assert all(t.device.type == "cpu" for t in out.values() if isinstance(t, torch.Tensor))
    assert available_devices(k) == ([f"cuda:{i}" for i in range(torch.cuda.device_count())]
                                    if torch.cuda.is_available() else [])


@pytest.mark.gpu
def test_calibrate_includes_the_gpu_and_finds_no_false_fail() -> None:
    """On a CUDA machine the GPU is one more honest implementation: 0 false FAILs, exact kernels equal."""
    r = calibrate("mlp-sgd", trials=3, params=SMALL_MLP, max_walk=2, seed=7)
    assert "device cuda:0" in r["variants"] and "cuda:0" in r["devices"]
    assert r["false_fails"] == 0
    e = calibrate("gemm-fp32-exact", trials=2, params={"n": 64}, max_walk=2, seed=7)
    assert "device cuda:0" in e["variants"]
    assert all(v == 0 for v in e["digest_mismatches"].values()), e


def test_calibrate_reports_progress_per_trial() -> None:
    seen: list[tuple[int, int]] = []
    calibrate("gemm-int8", trials=3, params={"n": 16, "layers": 1}, max_walk=1, seed=1,
              progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
