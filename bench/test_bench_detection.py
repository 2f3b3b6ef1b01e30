"""The detection experiment as a benchmark: ``pytest bench/test_bench_detection.py --benchmark-only -s``.

Runs ``bench.detection`` (1,000 trials per configuration, 100 in a quick run, every sampling strategy, grinding)
once, writes bench/results/detection.{md,png,json}, and reports the time per trial.
"""

from __future__ import annotations

import pytest

from bench.conftest import quick
from bench.detection import experiment, table, write_report

pytestmark = pytest.mark.bench


def test_detection_experiment(benchmark) -> None:
    rows, grinds = benchmark.pedantic(lambda: experiment(quick(100, 1000)), rounds=1, iterations=1)
    paths = write_report(rows, grinds)
    print("\n" + table(rows))
    trials = sum(r.trials for r in rows)
    benchmark.extra_info.update({"trials": trials, "rows": len(rows), "inside_95": sum(r.inside for r in rows),
                                 "report": str(paths["markdown"])})
    assert all(r.exact_failures == r.trials for r in rows)
    assert all(g.cheats_passed == min(5, g.successes) for g in grinds)  # root-only challenges are ground
