"""``pocv bench``: run the benchmark suites under bench/ and write bench/out/REPORT.md.

Each suite runs as ``python -m pytest bench/test_bench_<suite>.py ... -p no:cacheprovider -q`` in
a subprocess from the repository root (its output goes to stderr, so stdout carries only the
result: the report's path, or with ``--output json`` a summary). Then ``bench/report.py`` turns
every ``bench/out/*.json`` into ``REPORT.md`` with PNG plots. ``--report-only`` skips the runs.

The suites live in the source tree, not in the wheel: installed without it, ``pocv bench``
exits 3 with one line saying so. Exit codes: 0 done, 3 a suite failed or could not run, the
bench/ directory is missing, or the report could not be written.
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

from verifier.errors import EXIT_BAD_INPUT, EXIT_PASS

#: suite name -> (test file under bench/, pytest selection arguments). ``market`` has tests that time
#: nothing (costs per transaction), which ``--benchmark-only`` would skip: it runs by its marker.
SUITES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "core": ("test_bench_core.py", ("--benchmark-only",)),
    "merkle": ("test_bench_merkle.py", ("--benchmark-only",)),
    "kernels": ("test_bench_kernels.py", ("--benchmark-only",)),
    "market": ("test_bench_market.py", ("-m", "bench")),
    "detection": ("test_bench_detection.py", ("--benchmark-only",)),
}
PYTEST_ARGS: Final = ("-p", "no:cacheprovider", "-q")
#: environment variable naming the results directory, passed to the suites (bench/conftest.py may honour it)
OUT_ENV: Final = "POCV_BENCH_OUT"


@dataclass(frozen=True)
class SuiteRun:
    suite: str
    file: str
    status: str  # passed | failed | missing
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
                    "bench/out/REPORT.md with PNG plots, each figure naming the machine it ran on. "
                    "Prints the report's path. Exits 3 if a suite fails or bench/ is not present.")
    p.add_argument("--suite", choices=(*SUITES, "all"), default="all",
                   help="suite to run (default all: every suite whose file is present)")
    p.add_argument("--report-only", action="store_true",
                   help="do not run anything; regenerate the report from the JSON already there")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="results directory: the suites' JSON and the report (default bench/out)")
    p.add_argument("--output", choices=("json", "text"), default="text",
                   help="text: the report's path (default); json: a summary of the runs and targets")
    return p


def _run_suite(root: Path, bench: Path, suite: str, out: Path, *, explicit: bool) -> SuiteRun | None:
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
    env = {**os.environ, OUT_ENV: str(out)}
    t0 = time.perf_counter()
    try:  # the child's stdout goes to our stderr: stdout is for the result alone
        rc = _run_to_stderr(cmd, root, env)
    except OSError as e:
        sys.stderr.write(f"pocv bench: suite {suite}: cannot start pytest: {e}\n")
        rc = -1
    dt = round(time.perf_counter() - t0, 2)
    if rc == 5:  # pytest: nothing collected or everything deselected
        sys.stderr.write(f"pocv bench: suite {suite}: no test selected by {' '.join(selection)} (pytest exit 5); "
                         "bench tests carry `pytestmark = pytest.mark.bench`\n")
    elif rc != 0:
        sys.stderr.write(f"pocv bench: suite {suite} failed (pytest exit {rc})\n")
    return SuiteRun(suite, str(test), "passed" if rc == 0 else "failed", rc, dt)


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
    out = Path(args.out).resolve() if args.out else bench / "out"
    runs: list[SuiteRun] = []
    if not args.report_only:
        selected = list(SUITES) if args.suite == "all" else [args.suite]
        for suite in selected:
            r = _run_suite(root, bench, suite, out, explicit=args.suite != "all")
            if r is not None:
                runs.append(r)
    try:
        report = _load_report_module(bench).generate(out)
    except Exception as e:  # the report is ours, but bench/report.py is outside the package: one line, no traceback
        sys.stderr.write(f"pocv bench: error: cannot write the report in {out}: {type(e).__name__}: {e}\n")
        return EXIT_BAD_INPUT
    failed = [r for r in runs if r.status != "passed"]
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
    return EXIT_PASS
