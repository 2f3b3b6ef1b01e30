"""EZKL peer: proving a tiny MLP's inference (zk-SNARK) against pocv verifying the same inference.

Time, peak memory and bytes of both sides, each a ratio EZKL / pocv measured in one run, written
to <out>/ezkl.json and rendered by bench/peer_ezkl.py (see its docstring for what is measured).

    pip install -e '.[bench]'          # brings ezkl and onnx
    pytest bench/test_bench_ezkl.py --benchmark-only -s             # three sizes, about 2-3 min
    POCV_BENCH_QUICK=1 pytest bench/test_bench_ezkl.py --benchmark-only -s    # one tiny model
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.bench

# ImportError, not only ModuleNotFoundError: an ezkl wheel that does not load here also skips, with the reason
pytest.importorskip("ezkl", reason="EZKL peer skipped: ezkl is not installed or does not import here "
                                   "(pip install -e '.[bench]')", exc_type=ImportError)
pytest.importorskip("onnx", reason="EZKL peer skipped: onnx (needed to export the torch model for ezkl) is not "
                                   "installed or does not import here (pip install -e '.[bench]')", exc_type=ImportError)

from bench.conftest import QUICK, write_result  # noqa: E402
from bench.peer_ezkl import FULL_CONFIGS, QUICK_CONFIGS, Config, measure  # noqa: E402

CONFIGS = QUICK_CONFIGS if QUICK else FULL_CONFIGS
RESULTS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ezkl-peer")


@pytest.fixture(scope="module")
def srs_cache() -> dict[int, tuple[Path, float]]:
    """logrows -> (SRS file, seconds to generate it): one SRS per circuit size per run."""
    return {}


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.label.replace(" ", "-") for c in CONFIGS])
def test_ezkl_vs_pocv(benchmark, workdir: Path, srs_cache: dict[int, tuple[Path, float]], cfg: Config) -> None:
    entry = benchmark.pedantic(measure, args=(cfg, workdir), kwargs={"quick": QUICK, "srs_cache": srs_cache},
                               rounds=1, iterations=1)
    assert entry["ezkl"]["verified"]
    assert entry["pocv"]["passed"]
    r = entry["ratios"]
    benchmark.extra_info.update({k: v for k, v in r.items() if v is not None})
    RESULTS[cfg.label] = entry
    write_result("ezkl", {"quick": QUICK, "configs": dict(RESULTS)})
    et, pt = entry["ezkl"]["times_s"], entry["pocv"]["times_s"]
    print(f"\n{cfg.label}: EZKL setup {et['setup']:.2f} s, witness+prove {et['prove_total']:.2f} s, verify "
          f"{et['verify'] * 1e3:.1f} ms, proof {entry['ezkl']['bytes']['proof']} B (logrows "
          f"{entry['ezkl']['settings']['logrows']}, max dev {entry['ezkl']['max_abs_dev']:.2e}); pocv worker "
          f"{pt['worker'] * 1e3:.2f} ms, verifier {pt['verifier'] * 1e3:.2f} ms, response "
          f"{entry['pocv']['bytes']['response']} B; ratios EZKL/pocv: prove {r['prove_over_worker']:.0f}x, "
          f"verify {r['verify_over_verifier']:.2f}x, bytes {r['bytes_over_bytes']:.2f}x, peak RSS "
          f"{r['peak_prove_over_worker']:.2f}x")
