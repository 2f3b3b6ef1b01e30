"""The detection experiment: how often does a spot check catch each kind of cheater?

``python -m bench.detection`` (about 6 minutes on 2 cores; ``--trials 100 --short`` for a
quick look) writes ``bench/results/detection.md``
(a table), ``bench/results/detection.png`` (a plot) and ``bench/results/detection.json``.

For each sampling-based strategy of the lying-prover simulator (pocv.testing.liar)
and several (f, k): the liar commits ONCE to a trace in which a fixed set F of round(f n) steps
is faked; then every trial draws a fresh beacon, derives k challenged steps, lets the liar
answer and checks the answer with the real :class:`~pocv.check.Verifier`. Detected = FAIL.
Because the k steps are distinct (sampling without replacement), the exact detection
probability is hypergeometric::

    P(detect) = 1 - C(n - |F|, k) / C(n, k)   >=   1 - (1 - f)^k   (the design's bound)

Both are reported, with the measured rate's Wilson 95% interval; a row is "inside" when the
hypergeometric value lies in that interval (expect about 1 row in 20 outside by chance alone).
Each trial also checks that the verdict failed *exactly* the steps the protocol says
(:func:`pocv.testing.expected_failures`: the challenged faked steps, and for an exact kernel the
steps after the first faked one in a run of consecutive challenged steps, which go unjudged).

The grinding section shows why a beacon is required: against challenges derived from the root
alone, a cheater re-rolls its commitment (new garbage at its faked steps) until the challenges
miss every faked step; each roll succeeds with probability C(n-|F|, k)/C(n, k) ~ (1-f)^k.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from blake3 import blake3
from solders.keypair import Keypair

from bench.conftest import OUT
from pocv.kernels import kernel_for, resolve_spec

#: (strategy, kernel) pairs of the experiment; n steps of a tiny job keep 1,000 trials cheap
SPECS: dict[str, dict[str, Any]] = {
    "gemm-int8": {"kernel": "gemm-int8", "steps": 200, "seed": 21, "params": {"n": 16}},
    "mlp-sgd": {"kernel": "mlp-sgd", "steps": 200, "seed": 21, "params": {"width": 16, "depth": 2, "batch": 16}},
}
STRATEGIES: dict[str, str] = {  # strategy -> kernel it runs on
    "fabricate": "gemm-int8",
    "skip": "gemm-int8",
    "replay-earlier": "gemm-int8",
    "stop-early": "gemm-int8",
    "downgrade-bf16": "mlp-sgd",
    "noise-above": "mlp-sgd",
}
#: (f, k) grid: detection spread over 0.3 .. 0.999 so the comparison has teeth
GRID: tuple[tuple[float, int], ...] = ((0.05, 10), (0.05, 30), (0.1, 10), (0.1, 20), (0.2, 5), (0.1, 66))
SHORT_GRID: tuple[tuple[float, int], ...] = ((0.05, 10), (0.1, 10), (0.2, 5))


def hypergeometric(n: int, faked: int, k: int) -> float:
    """P(at least one of k distinct uniform draws from n lands in a set of ``faked``)."""
    if k > n:
        k = n
    return float(1 - Fraction(math.comb(n - faked, k), math.comb(n, k)))


def binomial(f: float, k: int) -> float:
    return 1.0 - (1.0 - f) ** k


def wilson(x: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for x successes in n trials."""
    if n == 0:
        return 0.0, 1.0
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Row:
    strategy: str
    kernel: str
    n: int
    f: float
    faked: int
    k: int
    trials: int
    detected: int
    rate: float
    ci_low: float
    ci_high: float
    binomial: float
    hypergeometric: float
    inside: bool
    #: trials whose FAIL set was exactly the one the protocol gives (pocv.testing.expected_failures:
    #: the faked steps challenged, and for an exact kernel the rest of each run of consecutive
    #: challenged steps after its first faked one, unjudged)
    exact_failures: int
    seconds: float


def run_configs(strategy: str, f: float, ks: Sequence[int], trials: int, *, workdir: Path, seed: int = 0,
                z: float = 1.959964) -> list[Row]:
    """Commit ONCE with a fixed faked set, then for each k, ``trials`` fresh beacons ->
    challenge -> respond -> check (one row per k)."""
    from pocv import JobSpec, Verifier
    from pocv.testing import SAMPLED, expected_failures, make_liar

    spec = resolve_spec(JobSpec(**SPECS[STRATEGIES[strategy]]))
    liar = make_liar(SAMPLED[strategy](f).with_seed(seed), trace_dir=workdir / f"{strategy}-{f}-{seed}",
                     key=Keypair.from_seed(bytes([11]) * 32))
    commitment = liar.run(spec)
    faked = set(liar.faked)
    mode = kernel_for(spec).mode
    verifier = Verifier(key=Keypair.from_seed(bytes([12]) * 32))
    rows = []
    for k in ks:
        detected = exact = 0
        t0 = time.perf_counter()
        for t in range(trials):
            beacon = blake3(f"pocv detection {strategy} {f} {k} {seed} {t}".encode()).digest()
            ch = verifier.challenge(commitment, beacon=beacon, k=k, cheat_fraction=f)
            verdict = verifier.check(commitment, ch, liar.respond(ch))
            failed = {o.index for o in verdict.failures}
            detected += not verdict.passed
            exact += failed == expected_failures(ch.indices, faked, exact=mode == "exact")
        seconds = time.perf_counter() - t0
        lo, hi = wilson(detected, trials, z)
        hg = hypergeometric(spec.steps, len(faked), k)
        rows.append(Row(strategy, spec.kernel, spec.steps, f, len(faked), k, trials, detected, detected / trials,
                        lo, hi, binomial(len(faked) / spec.steps, k), hg, lo <= hg <= hi, exact, round(seconds, 2)))
    return rows


def run_config(strategy: str, f: float, k: int, trials: int, *, workdir: Path, seed: int = 0,
               z: float = 1.959964) -> Row:
    return run_configs(strategy, f, [k], trials, workdir=workdir, seed=seed, z=z)[0]


def scratch_dir() -> Path:
    """A temporary directory in memory when there is one (traces fsync every checkpoint)."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(prefix="pocv-detection-", dir=shm if shm.is_dir() else None))


@dataclass
class GrindRow:
    f: float
    faked: int
    k: int
    rolls: int
    successes: int  # rolls whose root-only challenges missed every faked step
    rate: float
    ci_low: float
    ci_high: float
    hypergeometric_miss: float
    binomial_miss: float
    mean_rolls_to_success: float
    cheats_passed: int  # ground commitments that then PASSED a real check (root-only beacon)
    with_beacon_caught: int  # of the same commitments, caught with a fresh beacon instead
    seconds: float


def grind(f: float, k: int, rolls: int, *, workdir: Path, seed: int = 0, confirm: int = 5) -> GrindRow:
    """Measure the per-roll success of re-rolling against root-only challenges, and confirm with
    real runs and checks that a ground commitment passes the root-only variant."""
    from pocv import JobSpec, Verifier
    from pocv.challenge import derive_indices
    from pocv.merkle import MerkleTree
    from pocv.testing import fabricate, fabricated_leaves, make_liar, pick_steps, root_only_beacon

    spec = resolve_spec(JobSpec(**SPECS["gemm-int8"]))
    n = spec.steps
    faked = pick_steps(n, f, seed)
    t0 = time.perf_counter()
    wins: list[int] = []
    for salt in range(rolls):
        root = MerkleTree(fabricated_leaves(spec, f, seed, salt)).root
        idx = derive_indices(spec.job_id, root, root_only_beacon(root), n, k)
        if not faked.intersection(idx):
            wins.append(salt)
    # rolls to first success, over consecutive blocks of rolls (a geometric variable)
    gaps, last = [], -1
    for w in wins:
        gaps.append(w - last)
        last = w
    verifier = Verifier(key=Keypair.from_seed(bytes([12]) * 32))
    passed = caught = 0
    for salt in wins[:confirm]:
        liar = make_liar(fabricate(f, seed).with_salt(salt), trace_dir=workdir / f"grind-{f}-{k}-{salt}")
        c = liar.run(spec)
        ch = verifier.challenge(c, beacon=root_only_beacon(c.root), k=k, cheat_fraction=f)
        passed += verifier.check(c, ch, liar.respond(ch)).passed
        fresh = verifier.challenge(c, beacon=blake3(b"fresh beacon after commit" + c.root).digest(), k=k,
                                   cheat_fraction=f)
        caught += not verifier.check(c, fresh, liar.respond(fresh)).passed
    lo, hi = wilson(len(wins), rolls)
    return GrindRow(f, len(faked), k, rolls, len(wins), len(wins) / rolls, lo, hi,
                    1 - hypergeometric(n, len(faked), k), 1 - binomial(len(faked) / n, k),
                    sum(gaps) / len(gaps) if gaps else float("inf"), passed, caught,
                    round(time.perf_counter() - t0, 2))


# -- report ---------------------------------------------------------------------------------------


def table(rows: Sequence[Row]) -> str:
    head = ("| strategy | kernel | n | faked (f) | k | trials | detected | rate | 95% CI (Wilson) | "
            "1-(1-f)^k | hypergeometric | inside | exact FAIL sets |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(f"| {r.strategy} | {r.kernel} | {r.n} | {r.faked} ({r.faked / r.n:.3f}) | {r.k} | {r.trials} | "
                     f"{r.detected} | {r.rate:.4f} | [{r.ci_low:.4f}, {r.ci_high:.4f}] | {r.binomial:.4f} | "
                     f"{r.hypergeometric:.4f} | {'yes' if r.inside else '**no**'} | {r.exact_failures}/{r.trials} |")
    return "\n".join(lines)


def grind_table(rows: Sequence[GrindRow]) -> str:
    lines = ["| f (faked) | k | rolls | successful rolls | rate (95% CI) | C(n-F,k)/C(n,k) | (1-f)^k | "
             "mean rolls to success | ground cheats that PASSED root-only | same caught with a fresh beacon |",
             "|" + "---|" * 10]
    for g in rows:
        lines.append(f"| {g.f} ({g.faked}) | {g.k} | {g.rolls} | {g.successes} | {g.rate:.4f} [{g.ci_low:.4f}, "
                     f"{g.ci_high:.4f}] | {g.hypergeometric_miss:.4f} | {g.binomial_miss:.4f} | "
                     f"{g.mean_rolls_to_success:.2f} | {g.cheats_passed} | {g.with_beacon_caught} |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in the bench extra; the table does not need it
        return None
    fs = sorted({r.f for r in rows})
    fig, axes = plt.subplots(1, len(fs), figsize=(5 * len(fs), 4), squeeze=False)
    strategies = sorted({r.strategy for r in rows})
    for ax, f in zip(axes[0], fs):
        sub = [r for r in rows if r.f == f]
        if not sub:
            continue
        n, faked = sub[0].n, sub[0].faked
        ks = list(range(1, max(r.k for r in sub) + 6))
        ax.plot(ks, [hypergeometric(n, faked, k) for k in ks], "k-", lw=1, label="hypergeometric (exact)")
        ax.plot(ks, [binomial(faked / n, k) for k in ks], "k--", lw=1, label="1-(1-f)^k (design bound)")
        for j, s in enumerate(strategies):
            pts = [r for r in sub if r.strategy == s]
            if not pts:
                continue
            x = [r.k + (j - len(strategies) / 2) * 0.012 * ks[-1] for r in pts]  # side by side
            y = [r.rate for r in pts]
            err = [[r.rate - r.ci_low for r in pts], [r.ci_high - r.rate for r in pts]]
            ax.errorbar(x, y, yerr=err, fmt="o", ms=3, capsize=2, label=s)
        ax.set_title(f"f = {f} ({faked} of {n} steps faked)")
        ax.set_xlabel("k (challenged steps)")
        ax.set_ylabel("detection rate")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Detection of lying provers, {rows[0].trials} trials per point, Wilson 95% intervals")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def experiment(trials: int, *, strategies: Iterable[str] = STRATEGIES, grid: Sequence[tuple[float, int]] = GRID,
               mlp_grid: Sequence[tuple[float, int]] = SHORT_GRID, grind_rolls: int = 1000,
               workdir: Path | None = None) -> tuple[list[Row], list[GrindRow]]:
    """Every strategy over its (f, k) grid (mlp-sgd strategies over ``mlp_grid``: each of their
    checks recomputes a training step), then the grinding measurement."""
    import shutil

    wd = workdir or scratch_dir()
    rows: list[Row] = []
    try:
        for s in strategies:
            g = mlp_grid if STRATEGIES[s] == "mlp-sgd" else grid
            for f in sorted({f for f, _ in g}):
                rows += run_configs(s, f, [k for f2, k in g if f2 == f], trials, workdir=wd)
        grinds = [grind(f, k, grind_rolls, workdir=wd) for f, k in ((0.01, 66), (0.02, 66))] if grind_rolls else []
    finally:
        if workdir is None:
            shutil.rmtree(wd, ignore_errors=True)
    return rows, grinds


def write_report(rows: Sequence[Row], grinds: Sequence[GrindRow], out: Path | None = None) -> dict[str, Path]:
    """``detection.md`` (table), ``detection.png`` (plot) and ``detection.json`` (through
    ``bench.conftest.write_result``, with its machine block, for ``pocv bench --report-only``)."""
    from bench.conftest import machine, write_result

    out = out or OUT
    out.mkdir(parents=True, exist_ok=True)
    m = machine()
    where = f"{m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}, {m.get('when')}"
    png = plot(rows, out / "detection.png")
    inside = sum(r.inside for r in rows)
    md = [f"# Detection of lying provers\n\nMachine: {where}. Command: `python -m bench.detection`.\n",
          __doc__.split("\n\n", 1)[1].strip() if __doc__ else "", "",
          f"{inside} of {len(rows)} rows have the exact (hypergeometric) value inside the measured 95% interval.",
          "", table(rows), ""]
    if grinds:
        md += ["## Grinding against challenges derived from the root alone", "",
               "Per roll the cheater recomputes its trace with new garbage at the faked steps (n = 200 "
               "gemm-int8 steps, n = 16) and checks whether the root-only challenges miss every faked step.",
               "", grind_table(grinds), ""]
    if png:
        md.append(f"![detection]({png.name})")
    (out / "detection.md").write_text("\n".join(md) + "\n")
    data = {"rows": [asdict(r) for r in rows], "grinding": [asdict(g) for g in grinds]}
    if out == OUT:
        js = write_result("detection", data)
    else:
        js = out / "detection.json"
        js.write_text(json.dumps({"machine": m, **data}, indent=2) + "\n")
    paths = {"markdown": out / "detection.md", "json": js}
    if png:
        paths["png"] = png
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.detection", description="detection experiment")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--short", action="store_true", help="3 (f, k) pairs instead of 6")
    p.add_argument("--strategy", action="append", choices=sorted(STRATEGIES))
    p.add_argument("--grind-rolls", type=int, default=1000)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows, grinds = experiment(args.trials, strategies=args.strategy or list(STRATEGIES),
                              grid=SHORT_GRID if args.short else GRID, grind_rolls=args.grind_rolls)
    paths = write_report(rows, grinds)
    print(table(rows))
    if grinds:
        print(grind_table(grinds))
    print(f"wrote {', '.join(str(p) for p in paths.values())} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
