"""``pocv bench``: run the benchmark suites under bench/ and write bench/REPORT.md.

Each suite runs as ``python -m pytest bench/test_bench_<suite>.py ... -p no:cacheprovider -q -rs``
in a subprocess from the repository root (its output goes to stderr, so stdout carries only the
result: the report's path, or with ``--output json`` a summary). Each writes its figures to the
results directory (``bench/results``: JSON, and the plots beside it); then ``bench/report.py``
turns every ``*.json`` there into ``bench/REPORT.md``. ``--report-only`` skips the runs;
``--quick`` asks every suite for its small version (``POCV_BENCH_QUICK=1``): under 5 minutes on a
2-core machine, against under 30 for the full run. A peer suite whose library is not installed
(TOPLOC, EZKL: the ``bench`` extra) is skipped with pytest's reason and leaves no figures.

The suites live in the source tree, not in the wheel: installed without it, ``pocv bench``
exits 3 with one line saying so. Exit codes: 0 done (missed targets are marked in the report),
1 a target missed under ``--strict``, 3 a suite failed or could not run, the bench/ directory is
missing, or the report could not be written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from pocv.errors import EXIT_BAD_INPUT, EXIT_FAIL, EXIT_PASS

#: suite name -> (test file under bench/, pytest selection arguments). ``market`` has tests that time
#: nothing (costs per transaction), which ``--benchmark-only`` would skip: it runs by its marker.
SUITES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "core": ("test_bench_core.py", ("--benchmark-only",)),
    "hashing": ("test_bench_hashing.py", ("--benchmark-only",)),
    "scaling": ("test_bench_scaling.py", ("--benchmark-only",)),
    "merkle": ("test_bench_merkle.py", ("--benchmark-only",)),
    "kernels": ("test_bench_kernels.py", ("--benchmark-only",)),
    "market": ("test_bench_market.py", ("-m", "bench")),
    "detection": ("test_bench_detection.py", ("--benchmark-only",)),
    "gpu": ("test_bench_gpu.py", ("--benchmark-only",)),
    "toploc": ("test_bench_toploc.py", ("--benchmark-only",)),
    "ezkl": ("test_bench_ezkl.py", ("--benchmark-only",)),
}
PYTEST_ARGS: Final = ("-p", "no:cacheprovider", "-q", "-rs")
#: environment variables passed to the suites (read by bench/conftest.py): results directory, quick mode
OUT_ENV: Final = "POCV_BENCH_OUT"
QUICK_ENV: Final = "POCV_BENCH_QUICK"


@dataclass(frozen=True)
class SuiteRun:
    suite: str
    file: str
    status: str  # passed | skipped (nothing ran: pytest exit 5) | failed | missing
    returncode: int | None
    seconds: float


def bench_dir() -> Path | None:
    """bench/ next to the verifier package (a source checkout), or None (installed from a wheel)."""
    here = Path(__file__).resolve().parent.parent / "bench"
    return here if (here / "report.py").is_file() and (here / "conftest.py").is_file() else None


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="run the benchmark suites and write the report (markdown + PNG plots)",
        description="Run the pytest-benchmark suites under bench/ (from a source checkout) and write "
                    "bench/REPORT.md with PNG plots and the raw JSON in bench/results/, each figure a ratio "
                    "measured in one run and naming the machine it ran on. Peers (pymerkle, TOPLOC, EZKL) come "
                    "from the bench extra: pip install -e '.[bench]'. Prints the report's path. Exits 3 if a "
                    "suite fails or bench/ is not present.")
    p.add_argument("--suite", choices=(*SUITES, "all"), default="all",
                   help="suite to run (default all: every suite whose file is present)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and fewer repeats in every suite: under 5 minutes on 2 cores (the full run: "
                        "under 30); the report marks quick figures")
    p.add_argument("--report-only", action="store_true",
                   help="do not run anything; regenerate the report from the JSON already there")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="results directory: the suites' JSON and plots, and then the report too (default "
                        "bench/results, with the report at bench/REPORT.md)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any figure misses its target (default: missed targets are marked in the "
                        "report, the exit is 0)")
    p.add_argument("--output", choices=("json", "text"), default="text",
                   help="text: the report's path (default); json: a summary of the runs and targets")
    return p


def _run_suite(root: Path, bench: Path, suite: str, out: Path, *, explicit: bool, quick: bool) -> SuiteRun | None:
    name, selection = SUITES[suite]
    test = bench / name
    if not test.is_file():
        if not explicit:
            sys.stderr.write(f"pocv bench: suite {suite}: {test} not present, skipped\n")
            return None
        sys.stderr.write(f"pocv bench: suite {suite}: {test} not present\n")
        return SuiteRun(suite, str(test), "missing", None, 0.0)
    cmd = [sys.executable, "-m", "pytest", str(test), *selection, *PYTEST_ARGS]
    sys.stderr.write(f"pocv bench: suite {suite}: {' '.join(cmd[1:])}\n")
    sys.stderr.flush()
    env = {**os.environ, OUT_ENV: str(out), QUICK_ENV: "1" if quick else "0"}
    t0 = time.perf_counter()
    try:  # the child's stdout goes to our stderr: stdout is for the result alone
        rc = _run_to_stderr(cmd, root, env)
    except OSError as e:
        sys.stderr.write(f"pocv bench: suite {suite}: cannot start pytest: {e}\n")
        rc = -1
    dt = round(time.perf_counter() - t0, 2)
    if rc == 5:  # pytest: nothing ran -- a module skipped as a whole (a peer not installed), or nothing selected
        sys.stderr.write(f"pocv bench: suite {suite}: skipped, no test ran (pytest exit 5): see the skip reason "
                         f"above; a suite that did not skip must carry `pytestmark = pytest.mark.bench`\n")
    elif rc != 0:
        sys.stderr.write(f"pocv bench: suite {suite} failed (pytest exit {rc})\n")
    status = "passed" if rc == 0 else "skipped" if rc == 5 else "failed"
    return SuiteRun(suite, str(test), status, rc, dt)


def _run_to_stderr(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run ``cmd`` with its output on our stderr (streamed when stderr is a real file)."""
    try:
        sys.stderr.flush()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (captured, a StringIO): collect, then copy
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, errors="replace", check=False)
        sys.stderr.write(done.stdout + done.stderr)
        return done.returncode
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=sys.stderr, stderr=sys.stderr, check=False).returncode


def _load_report_module(bench: Path) -> Any:
    """``bench/report.py`` of this checkout, loaded from its file; the checkout's root goes first on
    sys.path so the peer suites' renderers (``bench/peer_*.py``) can import ``bench.report``."""
    root = str(bench.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location("_pocv_bench_report", bench / "report.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {bench / 'report.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def run_bench(args: argparse.Namespace) -> int:
    bench = bench_dir()
    if bench is None:
        sys.stderr.write("pocv bench: error: bench/ not found next to the verifier package; run from a source "
                         "checkout (git clone ... && pip install -e '.[bench]')\n")
        return EXIT_BAD_INPUT
    root = bench.parent
    out = Path(args.out).resolve() if args.out else bench / "results"
    runs: list[SuiteRun] = []
    t0 = time.perf_counter()
    if not args.report_only:
        selected = list(SUITES) if args.suite == "all" else [args.suite]
        for n, suite in enumerate(selected, 1):
            sys.stderr.write(f"pocv bench: [{n}/{len(selected)}] {suite}{' (quick)' if args.quick else ''}, "
                             f"{time.perf_counter() - t0:.0f} s so far\n")
            r = _run_suite(root, bench, suite, out, explicit=args.suite != "all", quick=args.quick)
            if r is not None:
                runs.append(r)
        sys.stderr.write(f"pocv bench: suites done in {time.perf_counter() - t0:.0f} s\n")
    try:
        module = _load_report_module(bench)
        report = module.generate(out, report=module.default_report(out))
    except Exception as e:  # the report is ours, but bench/report.py is outside the package: one line, no traceback
        sys.stderr.write(f"pocv bench: error: cannot write the report in {out}: {type(e).__name__}: {e}\n")
        return EXIT_BAD_INPUT
    failed = [r for r in runs if r.status in ("failed", "missing")]
    summary: dict[str, Any] = report.summary()
    if args.output == "json":
        print(json.dumps({"suites": [asdict(r) for r in runs], **summary, "ok": not failed}, indent=2))
    else:
        for s in summary["skipped"]:
            sys.stderr.write(f"pocv bench: skipped {s['source']}: {s['why']}\n")
        sys.stderr.write(f"pocv bench: {len(summary['sections'])} section(s), targets met {summary['met']}, "
                         f"missed {summary['missed']}\n")
        print(report.path)
    if failed:
        sys.stderr.write(f"pocv bench: error: {', '.join(f'{r.suite} ({r.status})' for r in failed)}\n")
        return EXIT_BAD_INPUT
    if args.strict and summary["missed"]:
        sys.stderr.write(f"pocv bench: {summary['missed']} target(s) missed (--strict)\n")
        return EXIT_FAIL
    return EXIT_PASS
