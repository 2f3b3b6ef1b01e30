"""Measure honest deviation of a kernel across implementations, thread counts and devices.

For a tolerance kernel, each trial derives ``s_0`` from a fresh seed, walks a random number of
steps (so momenta, caches and activations are mid-run, not fresh), then computes the next step
with every honest variant the kernel declares (``honest_variants``: thread counts, op orders,
the float64 reference, and the kernel's step on every CUDA device this machine has) and, for
every ordered pair (expected, claimed), the per-element ratio
``|c - e| / (u * scale)`` -- the tau that element needs. It reports percentiles of those ratios,
the largest per pair, how many honest comparisons the shipped bound would FAIL (must be 0), the
smallest per-step maximum of every precision downgrade (must exceed the shipped tau) and a
suggested tau (``margin`` x the largest honest ratio, rounded up to a power of two).

For an exact kernel it counts the honest variants whose state digest differs from the first
one (must be 0).

A kernel whose bound comes from a calibration record (``calibrated_by_record``, the PyTorch
training adapter :mod:`pocv.kernels.training`) has no shipped tau: the report derives one per
tensor group (``tau_by_group``: ``margin`` x the group's largest honest ratio, rounded up to a
power of two), counts false FAILs and caught downgrades against it, and states the margin
between the worst honest deviation and the mildest downgrade; ``--record`` prints the record
(:func:`pocv.kernels.training.make_record`) to add to the artifact store.

Command line (the lead wires it to ``pocv calibrate``)::

    python -m pocv.kernels.calibrate KERNEL [--trials N] [--max-walk K] [--seed S]
                                       [--param name=value ...] [--margin M] [--json | --record]
                                       [--artifacts DIR]
"""

from __future__ import annotations

import argparse
import contextvars
import json
import math
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final

import numpy as np
import torch

from pocv.encoding import state_digest
from pocv.errors import SpecError
from pocv.jobs import JobSpec, ParamValue
from pocv.kernels import get_kernel, kernel_for, resolve_spec
from pocv.kernels._tolerance import ToleranceKernel
from pocv.kernels._util import as_numpy
from pocv.kernels.params import ArtifactSource, use_artifacts

MAX_TRIALS: Final = 100_000
PERCENTILES: Final = (50.0, 90.0, 99.0, 99.9, 99.99)
# log-spaced histogram of nonzero ratios: 2^-20 .. 2^40, 16 bins per octave (about 4.4% wide)
_BINS_PER_OCTAVE: Final = 16
_LO_EXP: Final = -20
_HI_EXP: Final = 40
_NBINS: Final = (_HI_EXP - _LO_EXP) * _BINS_PER_OCTAVE


class _Histogram:
    """Counts of ratios (exact zeros apart) in log bins; percentiles read as a bin's upper edge."""

    def __init__(self) -> None:
        self.zeros = 0
        self.counts = np.zeros(_NBINS + 2, dtype=np.int64)
        self.max = 0.0

    def add(self, r: np.ndarray[Any, Any]) -> None:
        r = r.reshape(-1)
        nz = r[r > 0]
        self.zeros += r.size - nz.size
        if nz.size:
            self.max = max(self.max, float(nz.max()))
            idx = np.floor((np.log2(nz) - _LO_EXP) * _BINS_PER_OCTAVE).astype(np.int64) + 1
            self.counts += np.bincount(np.clip(idx, 0, _NBINS + 1), minlength=_NBINS + 2)

    @property
    def total(self) -> int:
        return self.zeros + int(self.counts.sum())

    def percentile(self, q: float) -> float:
        rank = math.ceil(q / 100.0 * self.total)
        if rank <= self.zeros:
            return 0.0
        cum = self.zeros + np.cumsum(self.counts)
        b = int(np.searchsorted(cum, rank))
        edge = 2.0 ** (_LO_EXP + b / _BINS_PER_OCTAVE)
        return float(min(edge, self.max))


def _walked(kernel: Any, spec: JobSpec, rng: np.random.Generator, max_walk: int) -> tuple[JobSpec, Any, int]:
    """(spec, s_w, w + 1): s_0 of ``spec`` walked a random w in 0..max_walk steps, and the step to compare."""
    state = kernel.init_state(spec)
    walk = int(rng.integers(0, max_walk + 1))
    for i in range(1, walk + 1):
        state = kernel.step(state, i, spec)
    return spec, state, walk + 1


def available_devices(kernel: Any) -> list[str]:
    """The accelerators this machine has that ``kernel`` can run on (``cuda:N``), in order."""
    if "cuda" not in getattr(kernel, "devices", ()) or not torch.cuda.is_available():
        return []
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def device_variants(kernel: Any, devices: Sequence[str]) -> dict[str, Any]:
    """One honest variant per device: the kernel's own step on that device, its state brought back
    to the host, so a GPU's result is compared with every CPU implementation like any other."""

    def on(device: str) -> Any:
        def fn(state: Any, i: int, spec: JobSpec) -> dict[str, Any]:
            out = kernel.step(state, i, spec, device)
            return {n: t.cpu() if isinstance(t, torch.Tensor) else t for n, t in out.items()}

        return fn

    return {f"device {d}": on(d) for d in devices}


def _same_integers(a: Any, b: Any) -> bool:
    for name in a:
        x = as_numpy(a[name])
        if x.dtype.kind in "iub" and not np.array_equal(x, as_numpy(b[name])):
            return False
    return True


def _spec(kernel_name: str, seed: int, params: dict[str, ParamValue] | None) -> JobSpec:
    return resolve_spec(JobSpec(kernel=kernel_name, steps=1 << 20, seed=seed, params=dict(params or {})))


def calibrate(
    kernel_name: str,
    *,
    trials: int = 20,
    max_walk: int = 8,
    seed: int = 0,
    params: dict[str, ParamValue] | None = None,
    margin: float = 4.0,
    artifacts: ArtifactSource | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure honest deviation of ``kernel_name`` (see the module docstring); a JSON-able dict.
    ``artifacts``: the store the job's artifacts (a data set, weights) are resolved in;
    ``progress(done, total)`` is called after each trial."""
    token = _PROGRESS.set(progress)
    try:
        with use_artifacts(artifacts):
            report = _calibrate(kernel_name, trials=trials, max_walk=max_walk, seed=seed, params=params,
                                margin=margin)
        _tick(trials, trials)
        return report
    finally:
        _PROGRESS.reset(token)


#: the progress callback of the calibrate() call in progress (the trial loops report to it)
_PROGRESS: contextvars.ContextVar[Callable[[int, int], None] | None] = contextvars.ContextVar(
    "pocv_calibrate_progress", default=None)


def _tick(done: int, total: int) -> None:
    report = _PROGRESS.get()
    if report is not None:
        report(done, total)


def _calibrate(kernel_name: str, *, trials: int, max_walk: int, seed: int, params: dict[str, ParamValue] | None,
               margin: float) -> dict[str, Any]:
    if not 1 <= trials <= MAX_TRIALS:
        raise ValueError(f"trials must be in 1..{MAX_TRIALS}, got {trials}")
    # a kernel that calibrates itself (hf-causal-lm: worker decode against verifier prefill, which
    # the generic walk over states cannot measure), before the generic spec is resolved
    own = getattr(get_kernel(kernel_name), "calibrate_record", None)
    if callable(own):
        return dict(own(dict(params or {}), trials=trials, seed=seed, margin=margin))
    kernel = kernel_for(_spec(kernel_name, seed, params))
    rng = np.random.default_rng(seed)
    honest_fn = getattr(kernel, "honest_variants", None)
    honest: dict[str, Any] = dict(honest_fn()) if callable(honest_fn) else {}
    devices = available_devices(kernel)
    honest.update(device_variants(kernel, devices))
    if len(honest) < 2:
        raise SpecError(f"kernel {kernel_name} declares fewer than two honest implementations to compare")
    downgrades = kernel.downgrade_variants() if isinstance(kernel, ToleranceKernel) else {}
    names = list(honest)
    report: dict[str, Any] = {
        "kernel": f"{kernel.name}@{kernel.version}",
        "mode": kernel.mode,
        "params": dict(_spec(kernel_name, seed, params).params),
        "trials": trials,
        "variants": names,
        "devices": ["cpu", *devices],
        "environment": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    if kernel.mode == "exact":
        mismatches: dict[str, int] = dict.fromkeys(names[1:], 0)
        for trial in range(trials):
            if trial:
                _tick(trial, trials)
            spec, state, i = _walked(kernel, _spec(kernel_name, seed + trial, params), rng, max_walk)
            digests = {n: state_digest(f(state, i, spec)) for n, f in honest.items()}
            for n in names[1:]:
                mismatches[n] += digests[n] != digests[names[0]]
        report["digest_mismatches"] = mismatches
        report["checks"] = trials * (len(names) - 1)
        return report

    assert isinstance(kernel, ToleranceKernel)
    if getattr(kernel, "calibrated_by_record", False):
        report.update(_by_record(kernel, kernel_name, honest, downgrades, trials=trials, max_walk=max_walk,
                                 seed=seed, params=params, margin=margin, rng=rng))
        return report
    hist = _Histogram()
    by_pair: dict[str, float] = {}
    false_fails = 0
    checks = 0
    worst_down: dict[str, float] = {n: math.inf for n in downgrades}
    caught: dict[str, int] = dict.fromkeys(downgrades, 0)
    freivalds = getattr(kernel, "freivalds_ratio", None)
    tau_f = float(getattr(kernel, "tau_freivalds", 1.0))
    fr_honest: dict[str, float] = dict.fromkeys(names, 0.0)
    fr_down: dict[str, float] = {n: math.inf for n in downgrades}
    fr_false = 0
    by_verify = bool(getattr(kernel, "calibrate_with_verify_step", False))
    discrete = 0
    for trial in range(trials):
        if trial:
            _tick(trial, trials)
        spec, state, i = _walked(kernel, _spec(kernel_name, seed + trial, params), rng, max_walk)
        outs = {n: f(state, i, spec) for n, f in honest.items()}
        for a in names:
            for b in names:
                if a == b:
                    continue
                if by_verify and not _same_integers(outs[a], outs[b]):
                    discrete += 1  # a tie broken differently: verify_step handles it, ratios cannot
                    continue
                ratios = kernel.ratios(outs[a], outs[b], spec)
                m = 0.0
                for r in ratios.values():
                    hist.add(r)
                    if r.size:
                        m = max(m, float(r.max()))
                key = f"{a} vs {b}"
                by_pair[key] = max(by_pair.get(key, 0.0), m)
        for n in names:  # judged by the rule the verifier and the referee use (Kernel.judge)
            checks += 1
            false_fails += not kernel.judge(state, outs[n], i, spec).ok
        if callable(freivalds):
            for n in names:
                fr = float(freivalds(state, outs[n], spec)) * tau_f  # the tau_F this check needed
                fr_honest[n] = max(fr_honest[n], fr)
                fr_false += fr > tau_f
        for n, f in downgrades.items():
            down = f(state, i, spec)
            if callable(freivalds):
                fr_down[n] = min(fr_down[n], float(freivalds(state, down, spec)) * tau_f)
            m = max((float(r.max()) for r in kernel.ratios(outs[names[0]], down, spec).values() if r.size),
                    default=0.0)
            worst_down[n] = min(worst_down[n], m)
            caught[n] += not kernel.judge(state, down, i, spec).ok
    top = hist.max
    if callable(freivalds):
        report["freivalds"] = {
            "tau_freivalds": tau_f,
            "honest_needed_max_by_variant": fr_honest,
            "false_fails": fr_false,
            "checks": trials * len(names),
            "downgrade_min_needed": fr_down,
        }
    report.update({
        "elements": hist.total,
        "honest_ratio": {f"p{q:g}": hist.percentile(q) for q in PERCENTILES} | {"max": top},
        "honest_max_by_pair": dict(sorted(by_pair.items(), key=lambda kv: -kv[1])),
        "checks": checks,
        "checked_by": "Kernel.judge (the rule of the spot check and the dispute referee)",
        "pairs_with_discrete_differences": discrete,
        "false_fails": false_fails,
        "tau": kernel.tau,
        "floor": kernel.floor,
        "suggested_tau": 2.0 ** math.ceil(math.log2(max(top * margin, 1.0))),
        "downgrades": {
            n: {"min_needed_tau": worst_down[n], "caught": caught[n], "of": trials} for n in downgrades
        },
    })
    return report


def _group(name: str) -> str:
    return name.split(".", 1)[0]


def _by_record(kernel: Any, kernel_name: str, honest: dict[str, Any], downgrades: dict[str, Any], *, trials: int,
               max_walk: int, seed: int, params: dict[str, ParamValue] | None, margin: float,
               rng: np.random.Generator) -> dict[str, Any]:
    """Calibrate a kernel whose bound is a record: per tensor group, the largest honest ratio and
    the tau it gives; false FAILs and caught downgrades against that tau (module docstring)."""
    names = list(honest)
    hist = _Histogram()
    honest_group: dict[str, float] = {}
    by_pair: dict[str, float] = {}
    samples: list[tuple[dict[str, float], dict[str, dict[str, float]]]] = []  # per trial: honest max, downgrade max
    for trial in range(trials):
        if trial:
            _tick(trial, trials)
        spec, state, i = _walked(kernel, _spec(kernel_name, seed + trial, params), rng, max_walk)
        outs = {n: f(state, i, spec) for n, f in honest.items()}
        worst: dict[str, float] = {}
        for a in names:
            for b in names:
                if a == b:
                    continue
                m = 0.0
                for t, r in kernel.ratios(outs[a], outs[b], spec).items():
                    hist.add(r)
                    g, top = _group(t), float(r.max()) if r.size else 0.0
                    worst[g] = max(worst.get(g, 0.0), top)
                    m = max(m, top)
                key = f"{a} vs {b}"
                by_pair[key] = max(by_pair.get(key, 0.0), m)
        for g, v in worst.items():
            honest_group[g] = max(honest_group.get(g, 0.0), v)
        down: dict[str, dict[str, float]] = {}
        for n, f in downgrades.items():
            d = f(state, i, spec)
            per: dict[str, float] = {}
            for t, r in kernel.ratios(outs[names[0]], d, spec).items():
                per[_group(t)] = max(per.get(_group(t), 0.0), float(r.max()) if r.size else 0.0)
            down[n] = per
        samples.append((worst, down))
    tau = {g: 2.0 ** math.ceil(math.log2(max(v * margin, 4.0))) for g, v in sorted(honest_group.items())}
    false_fails = sum(any(v > tau[g] for g, v in w.items()) for w, _ in samples)
    caught = {n: sum(any(v > tau[g] for g, v in d[n].items()) for _, d in samples) for n in downgrades}
    # margin: per downgrade, the smallest over trials of its largest (ratio / tau) over groups
    down_margin = {n: min(max(v / tau[g] for g, v in d[n].items()) for _, d in samples) for n in downgrades}
    honest_margin = max((v / tau[g] for w, _ in samples for g, v in w.items()), default=0.0)
    return {
        "calibrated_by_record": True,
        "elements": hist.total,
        "honest_ratio": {f"p{q:g}": hist.percentile(q) for q in PERCENTILES} | {"max": hist.max},
        "honest_max_by_pair": dict(sorted(by_pair.items(), key=lambda kv: -kv[1])),
        "honest_max_by_group": honest_group,
        "margin": margin,
        "tau_by_group": tau,
        "floor": float(kernel.floor),
        "checks": trials,
        "checked_by": "per-group ratios against tau_by_group (the bound Kernel.judge applies with this record)",
        "false_fails": false_fails,
        "worst_honest_over_tau": honest_margin,
        "downgrades": {n: {"min_needed_tau_over_tau": down_margin[n], "caught": caught[n], "of": trials}
                       for n in downgrades},
        "tau": max(tau.values(), default=0.0),
        "suggested_tau": max(tau.values(), default=0.0),
    }


def _format(report: dict[str, Any]) -> str:
    if "honest_ratio" not in report and report.get("calibrated_by_record"):  # a kernel's own calibration
        lines = [f"{report['kernel']} (tolerance, calibrated by record) params {report['params']}, "
                 f"{report['trials']} trials",
                 "tau by group (margin x largest honest, power of 2): "
                 + ", ".join(f"{g} {t:g}" for g, t in report["tau_by_group"].items()),
                 f"{report['false_fails']} false FAIL in {report['checks']} honest checks"]
        lines += [f"  downgrade {n}: caught {d['caught']}/{d['of']}" for n, d in report.get("downgrades", {}).items()]
        return "\n".join(lines)
    lines = [f"{report['kernel']} ({report['mode']}) params {report['params']}, {report['trials']} trials"]
    if report["mode"] == "exact":
        lines.append(f"digest mismatches vs {report['variants'][0]}: {report['digest_mismatches']}")
        return "\n".join(lines)
    hr = report["honest_ratio"]
    if report.get("calibrated_by_record"):
        lines.append(f"honest needed tau over {report['elements']:,} element ratios: "
                     + "  ".join(f"{k} {v:.3g}" for k, v in hr.items()))
        lines.append("tau by group (margin x largest honest, power of 2): "
                     + ", ".join(f"{g} {t:g} (honest max {report['honest_max_by_group'][g]:.3g})"
                                 for g, t in report["tau_by_group"].items()))
        lines.append(f"{report['false_fails']} false FAIL in {report['checks']} honest steps; worst honest "
                     f"deviation / tau = {report['worst_honest_over_tau']:.3g}")
        for n, d in report["downgrades"].items():
            lines.append(f"  downgrade {n}: mildest deviation / tau = {d['min_needed_tau_over_tau']:.3g}, "
                         f"caught {d['caught']}/{d['of']}")
        return "\n".join(lines)
    lines.append(f"honest needed tau over {report['elements']:,} element ratios: "
                 + "  ".join(f"{k} {v:.3g}" for k, v in hr.items()))
    for k, v in list(report["honest_max_by_pair"].items())[:6]:
        lines.append(f"  max {v:8.3g}  {k}")
    if report.get("pairs_with_discrete_differences"):
        lines.append(f"  {report['pairs_with_discrete_differences']} pairs chose different tokens "
                     f"(ties within rounding; left to verify_step)")
    lines.append(f"shipped tau {report['tau']:g} floor {report['floor']:g}: "
                 f"{report['false_fails']} false FAIL in {report['checks']} honest checks "
                 f"({report['checked_by']}); suggested tau {report['suggested_tau']:g}")
    for n, d in report["downgrades"].items():
        lines.append(f"  downgrade {n}: smallest per-step max needed tau {d['min_needed_tau']:.3g}, "
                     f"caught {d['caught']}/{d['of']}")
    fr = report.get("freivalds")
    if fr:
        worst = max(fr["honest_needed_max_by_variant"].values())
        lines.append(f"Freivalds: shipped tau_F {fr['tau_freivalds']:g}; honest needed at most {worst:.3g} "
                     f"({fr['false_fails']} false FAIL in {fr['checks']}); downgrades need at least "
                     + ", ".join(f"{k} {v:.3g}" for k, v in fr["downgrade_min_needed"].items()))
    return "\n".join(lines)


def record_bytes(kernel_name: str, report: dict[str, Any]) -> bytes:
    """The calibration record (canonical JSON bytes, an artifact) of a passing :func:`calibrate`
    report of a record-calibrated kernel: the kernel's own ``make_record`` where it has one, else
    the training adapter's (:func:`pocv.kernels.training.make_record`)."""
    own = getattr(get_kernel(kernel_name), "make_record", None)
    if callable(own):
        return bytes(own(report))
    from pocv.kernels.training import make_record  # the training adapter's record format

    return make_record(report)


def calibrate_main(argv: Sequence[str] | None = None) -> int:
    """``python -m pocv.kernels.calibrate``: print the report; exit 1 when it fails (``pocv calibrate``
    calls :func:`calibrate` and :func:`report_failed` itself)."""
    ap = argparse.ArgumentParser(prog="pocv calibrate", description=__doc__.split("\n\n")[0])
    ap.add_argument("kernel")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--max-walk", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=4.0)
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--record", action="store_true",
                    help="print the calibration record (a record-calibrated kernel's artifact) instead")
    ap.add_argument("--artifacts", metavar="DIR", default=None,
                    help="artifact store (default: $POCV_ARTIFACTS or the user's cache directory)")
    args = ap.parse_args(argv)
    try:
        params = parse_params(args.kernel, args.param)
    except SpecError as e:
        ap.error(f"{e} (NAME=INT for an integer parameter)")
    from pocv.artifacts import ArtifactStore  # the I/O layer: only this command line opens a store

    report = calibrate(args.kernel, trials=args.trials, max_walk=args.max_walk, seed=args.seed,
                       params=params, margin=args.margin, artifacts=ArtifactStore(args.artifacts))
    if args.record:
        sys.stdout.write(record_bytes(args.kernel, report).decode() + "\n")
    else:
        print(json.dumps(report, indent=2) if args.json else _format(report))
    return 1 if report_failed(report) else 0


def parse_params(kernel_name: str, items: Sequence[str]) -> dict[str, ParamValue]:
    """``NAME=VALUE`` texts as the kernel's typed parameters (ints as ints, true/false as bools)."""
    declared = get_kernel(kernel_name).declared_params()
    out: dict[str, ParamValue] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"--param expects NAME=VALUE, got {item!r}")
        p = declared.get(key)
        out[key] = p.parse_text(value) if p is not None else value
    return out


def report_failed(report: dict[str, Any]) -> bool:
    """Whether a calibration report fails (exit 1): a false FAIL, a digest mismatch between honest
    variants, a missed precision downgrade, or a false FAIL of the Freivalds check."""
    bad = report.get("false_fails", 0) or sum(report.get("digest_mismatches", {}).values())
    bad = bad or any(d["caught"] < d["of"] for d in report.get("downgrades", {}).values())
    bad = bad or (report.get("calibrated_by_record", False) and not report.get("tau_by_group"))
    bad = bad or report.get("freivalds", {}).get("false_fails", 0)
    return bool(bad)


if __name__ == "__main__":
    sys.exit(calibrate_main())
