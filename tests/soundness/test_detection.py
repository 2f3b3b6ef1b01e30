"""Measured detection against theory: the CI-sized version (100 trials a configuration, asserted
inside a 99.9% Wilson interval, so a correct verifier does not flake), and the full 1,000-trial
experiment (slow-marked; ``python -m bench.detection`` writes its table and plot)."""

from __future__ import annotations

import math

import pytest

from bench.detection import (
    GRID,
    SHORT_GRID,
    STRATEGIES,
    hypergeometric,
    run_configs,
    wilson,
)

Z_999 = 3.2905  # two-sided 99.9%


def test_statistics_helpers() -> None:
    assert hypergeometric(200, 20, 10) == pytest.approx(1 - math.comb(180, 10) / math.comb(200, 10))
    assert hypergeometric(200, 20, 10) > 1 - 0.9**10  # without replacement beats the design's bound
    assert hypergeometric(10, 1, 10) == 1.0
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 100)[0] == 0.0 and wilson(100, 100)[1] == 1.0


@pytest.mark.parametrize(("strategy", "f", "k"), [("fabricate", 0.1, 10), ("skip", 0.2, 5),
                                                   ("stop-early", 0.05, 10), ("downgrade-bf16", 0.1, 10)])
def test_detection_matches_theory_ci(tmp_path, strategy: str, f: float, k: int) -> None:
    (row,) = run_configs(strategy, f, [k], 100, workdir=tmp_path, z=Z_999)
    assert row.exact_failures == row.trials  # every FAIL named exactly the challenged faked steps
    assert row.inside, row


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_detection_1000_trials(tmp_path, strategy: str, capsys) -> None:
    grid = SHORT_GRID if STRATEGIES[strategy] == "mlp-sgd" else GRID
    wd = tmp_path
    rows = []
    for f in sorted({f for f, _ in grid}):
        rows += run_configs(strategy, f, [k for f2, k in grid if f2 == f], 1000, workdir=wd, z=Z_999)
    with capsys.disabled():
        for r in rows:
            lo95, hi95 = wilson(r.detected, r.trials)
            print(f"\n{r.strategy} f={r.f} k={r.k}: {r.detected}/{r.trials} = {r.rate:.4f} "
                  f"95% [{lo95:.4f}, {hi95:.4f}] hypergeometric {r.hypergeometric:.4f} "
                  f"1-(1-f)^k {r.binomial:.4f}", end="")
    for r in rows:
        assert r.exact_failures == r.trials
        assert r.inside, r  # inside the 99.9% interval (95% misses 1 row in 20 by chance alone)
