"""The long fuzz run: ``python -m tests.fuzz.run --parser bundle --count 100000``.

For each parser: mutate valid seeds (structure-aware, see :mod:`tests.fuzz.mutate`), call the
parser, and count every exception that is not a typed ``PocvError`` -- a crash. Each distinct
crash (parser, exception type, place it was raised) is written once to
``tests/fuzz/regressions/<parser>-<ExceptionType>-<where>.bin`` (the regression test replays
every file there), and a per-input time limit catches hangs. Prints inputs/s and counts; exits
1 if anything crashed or hung.

``--engine atheris`` drives one target with atheris's coverage-guided libFuzzer (when the
package imports), seeded with the same corpus; libFuzzer prints its own statistics (exec/s),
writes any crash to ``regressions/<parser>-atheris-crash-<sha1>`` and exits non-zero on one.
``--engine random`` (the default) is the mutation loop above and needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tests.fuzz.mutate import mutate
from tests.fuzz.targets import TARGETS, run_target, seeds

REGRESSIONS = Path(__file__).parent / "regressions"
#: One input taking longer than this is reported as a hang (the largest seed parses in ~1 ms).
HANG_SECONDS = 2.0


def crash_name(parser: str, exc: BaseException) -> str:
    """``<parser>-<ExceptionType>-<module>.<function>``: where the untyped exception was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    frame = next((f for f in reversed(tb) if "/verifier/" in f.filename or "/kernels/" in f.filename),
                 tb[-1] if tb else None)
    where = f"{Path(frame.filename).stem}.{frame.name}" if frame else "unknown"
    kind = "struct.error" if isinstance(exc, struct.error) else type(exc).__name__
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{parser}-{kind}-{where}")


def fuzz(parser: str, count: int, seed: int, *, save: bool = True, quiet: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    pool = [s for items in seeds().values() for s in items]
    corpus = list(seeds()[parser])
    crashes: dict[str, int] = {}
    first: dict[str, str] = {}
    hangs = 0
    slowest = 0.0
    t0 = time.perf_counter()
    for n in range(count):
        data = mutate(parser, rng.choice(corpus), rng, pool)
        t = time.perf_counter()
        exc = run_target(parser, data)
        dt = time.perf_counter() - t
        slowest = max(slowest, dt)
        if dt > HANG_SECONDS:
            hangs += 1
            if save:
                _save(f"{parser}-hang-{len(data)}", data)
        if exc is not None:
            name = crash_name(parser, exc)
            if name not in crashes:
                first[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
                if save:
                    _save(name, data)
                if not quiet:
                    print(f"  crash {name}: {first[name]}", file=sys.stderr)
            crashes[name] = crashes.get(name, 0) + 1
        elif len(corpus) < 64 and n % 97 == 0:
            corpus.append(data)  # keep some valid-ish variety
        if not quiet and n and n % 20000 == 0:
            rate = n / (time.perf_counter() - t0)
            print(f"  {parser}: {n}/{count} inputs, {rate:.0f}/s, {sum(crashes.values())} crashes", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    return {"parser": parser, "engine": "random", "inputs": count, "seconds": round(elapsed, 2),
            "inputs_per_s": round(count / elapsed, 1), "untyped_exceptions": sum(crashes.values()),
            "distinct_crashes": first, "hangs": hangs, "slowest_input_s": round(slowest, 4)}


def _save(name: str, data: bytes) -> None:
    REGRESSIONS.mkdir(exist_ok=True)
    path = REGRESSIONS / f"{name}.bin"
    if not path.exists():
        path.write_bytes(data)


def fuzz_atheris(parser: str, count: int, seed: int) -> dict[str, Any]:  # pragma: no cover - optional
    import tempfile

    import atheris

    corpus_dir = Path(tempfile.mkdtemp(prefix=f"pocv-atheris-{parser}-"))
    for i, s in enumerate(seeds()[parser]):
        (corpus_dir / f"seed{i}").write_bytes(s)
    target = TARGETS[parser]
    from pocv.errors import PocvError

    stats = {"n": 0}

    def one(data: bytes) -> None:
        stats["n"] += 1
        try:
            target(data)
        except PocvError:
            pass

    with atheris.instrument_imports():  # coverage feedback from the parsers under test
        import pocv.bundle
        import pocv.dispute
        import pocv.encoding
        import pocv.jobs
        import pocv.merkle
        import pocv.records  # noqa: F401
    atheris.instrument_all()
    t0 = time.perf_counter()
    atheris.Setup([sys.argv[0], f"-runs={count}", f"-seed={seed + 1}", "-max_len=65536",
                   f"-timeout={int(HANG_SECONDS) + 1}", f"-artifact_prefix={REGRESSIONS}/{parser}-atheris-",
                   str(corpus_dir)], one)
    try:
        atheris.Fuzz()
    except SystemExit:
        pass
    elapsed = time.perf_counter() - t0
    return {"parser": parser, "engine": "atheris", "inputs": stats["n"], "seconds": round(elapsed, 2),
            "inputs_per_s": round(stats["n"] / elapsed, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--parser", action="append", choices=[*sorted(TARGETS), "all"],
                   help="parser to fuzz (repeatable; default all)")
    p.add_argument("--count", type=int, default=100_000, help="inputs per parser (default 100,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=("random", "atheris"), default="random")
    p.add_argument("--no-save", action="store_true", help="do not write regression files")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    parsers = sorted(TARGETS) if not args.parser or "all" in args.parser else args.parser
    if args.engine == "atheris" and len(parsers) != 1:
        p.error("--engine atheris fuzzes one --parser per process (libFuzzer exits when it is done)")
    results = []
    for name in parsers:
        if args.engine == "atheris":
            r = fuzz_atheris(name, args.count, args.seed)
        else:
            r = fuzz(name, args.count, args.seed, save=not args.no_save)
        results.append(r)
        print(f"{name:16s} {r['inputs']:>8d} inputs {r['inputs_per_s']:>9.0f}/s "
              f"untyped={r.get('untyped_exceptions', 0)} distinct={len(r.get('distinct_crashes', {}))} "
              f"hangs={r.get('hangs', 0)} slowest={r.get('slowest_input_s', 0)}s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    bad = sum(r.get("untyped_exceptions", 0) + r.get("hangs", 0) for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
