"""pocv bench: run the benchmark suites under bench/ and write a report (markdown + PNG plots).

Each suite runs as python -m pytest bench/test_bench_SUITE.py ... -p no:cacheprovider -q -rs in
a subprocess from the repository root; its output goes to stderr, so stdout carries only the
result (the report's path, or with --output json a summary). Every suite writes its figures into
a scratch directory of this run (bench/out/run-TIMESTAMP/SUITE, git-ignored); bench/report.py then
turns the JSON into a report.

The committed results (bench/results/*, bench/REPORT.md) are never deleted and are rewritten only
by a complete run (every suite, full size, none failed or skipped) or when --update-report asks
for it; then only the figures of suites that passed are copied over (a suite that could not run
keeps its committed figures). A partial run (--suite, --quick, or any suite skipped or failed)
writes its report into its scratch directory and prints that path. --out DIR puts the results and
the report in DIR instead. --report-only runs nothing and regenerates the report from the JSON
already in --out DIR (default: the committed results).

The suites live in the source tree, not in the wheel: installed without it, pocv bench exits 3
with one line saying so. Exit codes: 0 done (missed targets are marked in the report), 1 a target
missed under --strict, 3 a suite failed or could not run (a missing extra, no GPU: it says which),
the bench/ directory is missing, or the report could not be written.
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

from pocv.cli._common import (
    EXIT_FAIL,
    EXIT_INPUT,
    EXIT_OK,
    REPORT,
    HelpFormatter,
    add_output_option,
    add_verbosity,
    note,
    wrap,
    write_stdout,
)

#: suite name -> (test file under bench/, pytest selection arguments). market has tests that time
#: nothing (costs per transaction), which --benchmark-only would skip: it runs by its marker.
SUITES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "core": ("test_bench_core.py", ("--benchmark-only",)),
    "hashing": ("test_bench_hashing.py", ("--benchmark-only",)),
    "scaling": ("test_bench_scaling.py", ("--benchmark-only",)),
    "merkle": ("test_bench_merkle.py", ("--benchmark-only",)),
    "kernels": ("test_bench_kernels.py", ("--benchmark-only",)),
    "market": ("test_bench_market.py", ("-m", "bench")),
    "detection": ("test_bench_detection.py", ("--benchmark-only",)),
    "gpu": ("test_bench_gpu.py", ("--benchmark-only",)),
    "ezkl": ("test_bench_ezkl.py", ("--benchmark-only",)),
    "startup": ("test_bench_startup.py", ("--benchmark-only",)),
    "net": ("test_bench_net.py", ("--benchmark-only",)),
    "llm": ("test_bench_llm.py", ("--benchmark-only",)),  # hf-causal-lm: costs, detection, vs TOPLOC and token-difr
    "worker": ("test_bench_worker.py", ("--benchmark-only",)),  # the worker's whole cost: run, commit, respond
    "memory": ("test_bench_memory.py", ("--benchmark-only",)),  # peak RSS of answering and checking
    "bytes": ("test_bench_bytes.py", ("--benchmark-only",)),  # bytes per challenged step, chunk samples
}
PYTEST_ARGS: Final = ("-p", "no:cacheprovider", "-q", "-rs")
#: environment variables passed to the suites (read by bench/conftest.py): results directory, quick mode
OUT_ENV: Final = "POCV_BENCH_OUT"
QUICK_ENV: Final = "POCV_BENCH_QUICK"
#: the committed results and report, and the git-ignored scratch directory, under bench/
RESULTS_DIR: Final = "results"
REPORT_NAME: Final = "REPORT.md"
SCRATCH_DIR: Final = "out"


@dataclass(frozen=True)
class SuiteRun:
    suite: str
    file: str
    status: str  # passed | skipped (nothing ran: pytest exit 5) | failed | missing
    returncode: int | None
    seconds: float


def bench_dir() -> Path | None:
    """bench/ next to the pocv package's source folder (a source checkout), or None (installed from a wheel)."""
    here = Path(__file__).resolve().parent.parent.parent / "bench"
    return here if (here / "report.py").is_file() and (here / "conftest.py").is_file() else None


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="run the benchmark suites and write the report (markdown + PNG plots)",
        formatter_class=HelpFormatter,
        description=wrap("Run the pytest-benchmark suites under bench/ (from a source checkout) and write a "
                         "report with PNG plots and the raw JSON, each figure a ratio measured in one run and "
                         "naming the machine it ran on. Peers (pymerkle, TOPLOC, EZKL) come from the bench extra: "
                         "pip install -e '.[bench]'. Prints the report's path.")
        + "\n\n" + (__doc__ or "").split("\n\n", 1)[1])
    add_output_option(p, REPORT)
    add_verbosity(p)
    p.add_argument("--suite", choices=(*SUITES, "all"), default="all",
                   help="suite to run (default all: every suite whose file is present)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes and fewer repeats in every suite: under 5 minutes on 2 cores (the full run: "
                        "under 30); the report marks quick figures")
    p.add_argument("--report-only", action="store_true",
                   help="do not run anything; regenerate the report from the JSON already there")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="results directory: the suites' JSON and plots, and the report too (default: a scratch "
                        "directory bench/out/run-TIMESTAMP; with --report-only, the committed bench/results)")
    p.add_argument("--update-report", action="store_true",
                   help="copy the figures of the suites that passed into bench/results and rewrite bench/REPORT.md "
                        "even after a partial run (a complete run does this by itself)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any figure misses its target (default: missed targets are marked in the "
                        "report, the exit is 0)")
    p.set_defaults(_handler=run_bench)
    return p


def _run_suite(root: Path, bench: Path, suite: str, out: Path, *, explicit: bool, quick: bool) -> SuiteRun | None:
    name, selection = SUITES[suite]
    test = bench / name
    if not test.is_file():
        if not explicit:
            note(f"pocv bench: suite {suite}: {test} not present, skipped")
            return None
        note(f"pocv bench: suite {suite}: {test} not present")
        return SuiteRun(suite, str(test), "missing", None, 0.0)
    cmd = [sys.executable, "-m", "pytest", str(test), *selection, *PYTEST_ARGS]
    note(f"pocv bench: suite {suite}: {' '.join(cmd[1:])}")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, OUT_ENV: str(out), QUICK_ENV: "1" if quick else "0"}
    t0 = time.perf_counter()
    try:  # the child's stdout goes to our stderr: stdout is for the result alone
        rc = _run_to_stderr(cmd, root, env)
    except OSError as e:
        note(f"pocv bench: suite {suite}: cannot start pytest: {e}")
        rc = -1
    dt = round(time.perf_counter() - t0, 2)
    if rc == 5:  # pytest: nothing ran -- a module skipped as a whole (a peer not installed, no GPU)
        note(f"pocv bench: suite {suite} could not run: skipped as a whole, no test ran (pytest exit 5); "
             f"what is missing is in pytest's skip reason above (a peer library: pip install -e '.[bench]'; "
             f"or no GPU)")
    elif rc != 0:
        note(f"pocv bench: suite {suite} failed (pytest exit {rc})")
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
    """bench/report.py of this checkout, loaded from its file; the checkout's root goes first on
    sys.path so the peer suites' renderers (bench/peer_*.py) can import bench.report."""
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


def _merge(src: Path, dest: Path) -> list[str]:
    """Copy every file a suite wrote in ``src`` into ``dest`` (atomically each); nothing in ``dest``
    is deleted."""
    from pocv.store import atomic_write  # each copied file appears whole or not at all

    copied = []
    for f in sorted(src.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            rel = f.relative_to(src)
            atomic_write(dest / rel, f.read_bytes(), durable=False)
            copied.append(str(rel))
    return copied


def _write_report(bench: Path, out: Path, report: Path) -> Any:
    module = _load_report_module(bench)
    return module.generate(out, report=report)


def run_bench(args: argparse.Namespace) -> int:
    bench = bench_dir()
    if bench is None:
        note("pocv bench: error: bench/ not found next to the pocv sources; run from a source checkout "
             "(git clone ... && pip install -e '.[bench]')")
        return EXIT_INPUT
    root = bench.parent
    committed, committed_report = bench / RESULTS_DIR, bench / REPORT_NAME
    runs: list[SuiteRun] = []
    t0 = time.perf_counter()
    if args.report_only:
        out = Path(args.out).resolve() if args.out else committed
        targets = [(out, committed_report if out == committed.resolve() or out == committed else out / REPORT_NAME)]
    else:
        base = Path(args.out).resolve() if args.out else (
            bench / SCRATCH_DIR / time.strftime("run-%Y%m%d-%H%M%S", time.gmtime()))
        suite_root = base / ".suites"
        selected = list(SUITES) if args.suite == "all" else [args.suite]
        for n, suite in enumerate(selected, 1):
            note(f"pocv bench: [{n}/{len(selected)}] {suite}{' (quick)' if args.quick else ''}, "
                 f"{time.perf_counter() - t0:.0f} s so far")
            r = _run_suite(root, bench, suite, suite_root / suite, explicit=args.suite != "all", quick=args.quick)
            if r is not None:
                runs.append(r)
        note(f"pocv bench: suites done in {time.perf_counter() - t0:.0f} s")
        passed = [r for r in runs if r.status == "passed"]
        for r in passed:  # this run's results, together, for its own report
            if (suite_root / r.suite).is_dir():
                _merge(suite_root / r.suite, base)
        targets = [(base, base / REPORT_NAME)]
        complete = args.suite == "all" and not args.quick and len(passed) == len(runs)
        if args.out is None and (complete or args.update_report) and passed:
            for r in passed:
                if (suite_root / r.suite).is_dir():
                    copied = _merge(suite_root / r.suite, committed)
                    note(f"pocv bench: suite {r.suite}: {len(copied)} file(s) copied into {committed}")
            targets.append((committed, committed_report))
        elif args.out is None:
            why = "--quick" if args.quick else f"--suite {args.suite}" if args.suite != "all" else \
                "not every suite ran"
            note(f"pocv bench: partial run ({why}): bench/results and bench/REPORT.md are left as they were; "
                 f"--update-report copies this run's figures there")
    report: Any = None
    for out, path in targets:
        try:
            report = _write_report(bench, out, path)
        except Exception as e:
            note(f"pocv bench: error: cannot write the report in {out}: {type(e).__name__}: {e}")
            return EXIT_INPUT
    failed = [r for r in runs if r.status != "passed"]
    summary: dict[str, Any] = report.summary()
    if args.output == "json":
        write_stdout(json.dumps({"suites": [asdict(r) for r in runs], **summary, "ok": not failed}, indent=2))
    else:
        for s in summary["skipped"]:
            note(f"pocv bench: skipped {s['source']}: {s['why']}")
        note(f"pocv bench: {len(summary['sections'])} section(s), targets met {summary['met']}, "
             f"missed {summary['missed']}")
        write_stdout(str(report.path))
    if failed:
        note(f"pocv bench: error: {', '.join(f'{r.suite} ({r.status})' for r in failed)}; "
             f"a skipped suite could not run here (see its reason above)")
        return EXIT_INPUT
    if args.strict and summary["missed"]:
        note(f"pocv bench: {summary['missed']} target(s) missed (--strict)")
        return EXIT_FAIL
    return EXIT_OK


__all__ = ["SUITES", "add_bench_parser", "bench_dir", "run_bench"]
