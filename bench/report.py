"""Turn the benchmark results in bench/results/*.json into bench/REPORT.md with PNG plots.

    python -m bench.report [--out DIR]

Every suite writes ``<results>/<name>.json`` through ``bench.conftest.write_result`` (a ``machine``
block naming host, GPU, commit and library versions, plus its figures). This module knows the
layout of the suites it was written against (``core``, ``hashing``, ``scaling``, ``merkle_ratios``,
``kernels``, ``market``, ``detection``); a peer suite renders itself (``bench/peer_<name>.py``
defines ``render``); anything else is rendered generically (a table of every number it holds, and
any ``ratio``/``target`` pair it can find). A file that does not parse, or that a renderer cannot
read (a partial run, an older layout), is shown generically or skipped with a note: the report
never fails because of one bad file.

The report opens with the commit, dates, CPU, GPU and library versions of the runs; each section
names the machine its figures came from, gives a short reading of them (written from the
figures, not by hand), puts the target next to each figure with a met/missed mark, and embeds its
plots (``report-<suite>-<what>.png`` beside the JSON, matplotlib with the ``Agg`` backend; without
matplotlib the tables are still written). REPORT.md and each PNG are written atomically (temp file
in the same directory, fsync, rename).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pocv.errors import StorageError
from pocv.store import atomic_write, atomic_writer

OUT = Path(__file__).parent / "results"
REPORT_NAME = "REPORT.md"
#: where the report for the default results directory goes (the committed report); other
#: results directories get theirs inside them
REPORT = Path(__file__).parent / REPORT_NAME
PLOT_PREFIX = "report-"
#: JSON files bigger than this are skipped, not parsed (a report generator must not eat the machine)
MAX_JSON_BYTES = 32 * 1024 * 1024
#: rows shown by the generic renderer before it says "... N more"
MAX_GENERIC_ROWS = 200

#: result files the full bench writes, and why one may be missing; the report lists those absent
EXPECTED: dict[str, str] = {
    "core": "`pocv bench --suite core`",
    "hashing": "`pocv bench --suite hashing`",
    "scaling": "`pocv bench --suite scaling`",
    "merkle_ratios": "`pocv bench --suite merkle` (needs pymerkle: the bench extra)",
    "kernels": "`pocv bench --suite kernels`",
    "market": "`pocv bench --suite market`",
    "detection": "`pocv bench --suite detection`",
    "gpu": "needs a CUDA GPU; skipped on machines without one",
    "llm": "`pocv bench --suite llm` (needs transformers; TOPLOC and token-difr beside it when installed)",
    "ezkl": "needs `ezkl` (the bench extra: `pip install -e '.[bench]'`)",
    "worker": "`pocv bench --suite worker` (bench/test_bench_worker.py)",
    "merkle_scale": "`pocv bench --suite merkle` (needs pymerkle: the bench extra)",
    "net": "`pocv bench --suite net` (the Ray part needs the ray extra)",
    "memory": "`pocv bench --suite memory` (bench/test_bench_memory.py)",
    "bytes": "`pocv bench --suite bytes` (bench/test_bench_bytes.py)",
}

#: targets of the core suite (bench/test_bench_core.py; docs/protocol.md §5, §9)
CORE_TARGETS: dict[str, tuple[str, float, str]] = {
    "overhead": ("<=", 1.05, "run+commit time / bare steps"),
    "verifier_over_prover": ("<=", 0.08, "verifier time / prover time (n = 1000, k = 66)"),
}
#: targets of the kernels suite (bench/test_bench_kernels.py)
KERNEL_COMPUTE_OVER_HASH = 20.0  # step time / state hash time, for a commitment overhead <= 5%
KERNEL_EXACTNESS_RATIO = 4.0  # fixed-order numba fp32 product / torch-MKL, 512^3
KERNEL_FREIVALDS_RATIO = 0.05  # Freivalds check / (recompute + compare), 1024^3
MERKLE_TARGET_DEFAULT = 20.0
MARKET_LIFECYCLES_TARGET = 500.0
MARKET_TX_PER_JOB_TARGET = 3
MARKET_FEES_PER_JOB_TARGET = 20_000


# -- figures --------------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    """A finite float from a JSON number, else None (bools, strings, NaN, inf and huge ints are not figures)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table: integers as integers, floats with ``digits`` significant digits."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) < 10**30 else f"{v:.3e}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 10**7 or abs(v) < 10**-4):
            return f"{v:.{digits - 1}e}"
        return f"{v:,.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    if v is None:
        return "—"
    return _cell(str(v))


def _cell(text: str) -> str:
    """Text made safe for one markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip()[:300]


@dataclass(frozen=True)
class Figure:
    """One measured figure, optionally with a target (``op`` is ``<=`` or ``>=``)."""

    name: str
    value: Any
    target: float | None = None
    op: str | None = None
    unit: str = ""

    @property
    def met(self) -> bool | None:
        """True/False against the target; None without a usable target or value."""
        v = _num(self.value)
        if self.target is None or self.op not in ("<=", ">=") or v is None:
            return None
        return v <= self.target if self.op == "<=" else v >= self.target

    @property
    def mark(self) -> str:
        return {True: "met", False: "**missed**", None: "—"}[self.met]

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "—"
        return f"{self.op or '?'} {fmt(self.target)}{(' ' + self.unit) if self.unit else ''}"


def figure_table(figs: list[Figure], *, label: str = "figure") -> str:
    lines = [f"| {label} | value | target | |", "|---|---:|---|---|"]
    for f in figs:
        unit = f" {f.unit}" if f.unit and _num(f.value) is not None else ""
        lines.append(f"| {_cell(f.name)} | {fmt(f.value)}{unit} | {f.target_text} | {f.mark} |")
    return "\n".join(lines)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# -- sections -------------------------------------------------------------------------------------


@dataclass
class Section:
    """What one suite's JSON file becomes in the report."""

    suite: str
    source: str
    machine: str
    title: str = ""
    blocks: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: a short reading of the figures: what they mean for a user, where the limit is (built from the data)
    reading: list[str] = field(default_factory=list)
    link_prefix: str = ""  # the results directory as seen from the report (plots live beside the JSON)
    raw_machine: dict[str, Any] = field(default_factory=dict)
    #: markdown lines this section puts at the top of the report (the worker's whole cost)
    headline: list[str] = field(default_factory=list)

    def add_figures(self, figs: list[Figure], *, label: str = "figure", heading: str | None = None) -> None:
        if heading:
            self.blocks.append(f"**{heading}**")
        self.blocks.append(figure_table(figs, label=label))
        self.figures += figs

    @property
    def met(self) -> int:
        return sum(f.met is True for f in self.figures)

    @property
    def missed(self) -> int:
        return sum(f.met is False for f in self.figures)

    def markdown(self) -> str:
        out = [f"## {self.title or self.suite}", "", f"Source: `{self.source}`. Machine: {self.machine}.", ""]
        for n in self.notes:
            out += [f"> {n}", ""]
        if self.reading:
            out += ["**Reading.** " + " ".join(self.reading), ""]
        for b in self.blocks:
            out += [b, ""]
        for p in self.plots:
            out += [f"![{self.suite}: {Path(p).stem}]({self.link_prefix}{p})", ""]
        return "\n".join(out)


def describe_machine(m: Any) -> str:
    """One line for the machine block (a dict from bench.conftest.machine, or a string)."""
    if isinstance(m, str):
        return _cell(m) or "not recorded"
    if not isinstance(m, dict) or not m:
        return "not recorded"
    parts = []
    if m.get("cpu"):
        parts.append(str(m["cpu"]))
    if m.get("cores") is not None:
        parts.append(f"{m['cores']} cores")
    if m.get("torch_threads") is not None:
        parts.append(f"{m['torch_threads']} torch threads")
    if "gpu" in m:
        parts.append(f"GPU {m['gpu']}" if m["gpu"] else "no GPU")
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    if m.get("commit"):
        parts.append(f"commit {m['commit']}")
    if m.get("quick") is True:
        parts.append("**quick run**")
    known = {"cpu", "cores", "torch_threads", "gpu", "python", "torch", "when", "commit", "quick", "versions"}
    parts += [f"{k} {v}" for k, v in m.items()
              if k not in known and isinstance(v, str | int | float) and not isinstance(v, bool)]
    if m.get("when"):
        parts.append(f"run {m['when']}")
    return _cell(", ".join(parts))


# -- plots ----------------------------------------------------------------------------------------


class Plotter:
    """Writes PNGs next to the report; a no-op (with a note) when matplotlib is missing."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.written: list[Path] = []
        self.error: str | None = None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:  # matplotlib is in the bench extra; tables do not need it
            self.plt: Any = None
            self.error = f"plots skipped: matplotlib is not installed ({e}); `pip install -e '.[bench]'`"
        else:
            self.plt = plt

    @contextlib.contextmanager
    def figure(self, section: Section, what: str, **kw: Any) -> Iterator[Any]:
        """``with plotter.figure(section, "ratios", ncols=2) as (fig, axes): ...`` saves on exit."""
        if self.plt is None:
            yield None
            return
        ncols = kw.pop("ncols", 1)
        fig, axes = self.plt.subplots(1, ncols, figsize=kw.pop("figsize", (5.5 * ncols, 3.8)), squeeze=False)
        try:
            yield fig, list(axes[0])
            fig.suptitle(f"{section.suite} — {section.machine[:110]}", fontsize=7)
            try:
                fig.tight_layout()
            except ValueError as e:  # matplotlib cannot lay out degenerate axes: keep the plot as drawn
                section.notes.append(f"plot {what}: layout skipped ({e})")
            name = f"{PLOT_PREFIX}{_slug(section.suite)}-{_slug(what)}.png"
            path = self.out / name
            with atomic_writer(path) as fh:
                fig.savefig(fh, format="png", dpi=100)
            self.written.append(path)
            section.plots.append(name)
        finally:
            self.plt.close(fig)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in s).strip("-") or "x"


def bars_vs_targets(ax: Any, figs: list[Figure], title: str, *, log: bool = False) -> None:
    """Bars for the figures, a target tick per bar, green when met and red when missed."""
    figs = [f for f in figs if _num(f.value) is not None]
    xs = range(len(figs))
    colors = ["tab:green" if f.met else "tab:red" if f.met is False else "tab:gray" for f in figs]
    ax.bar(xs, [_num(f.value) for f in figs], color=colors, width=0.6, label="measured")
    tx = [(x, f.target) for x, f in zip(xs, figs) if f.target is not None]
    if tx:
        ax.scatter([x for x, _ in tx], [t for _, t in tx], marker="_", s=900, c="k", linewidths=2,
                   label="target", zorder=3)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f.name for f in figs], rotation=20, ha="right", fontsize=7)
    tops = [v for f in figs if (v := _num(f.value)) is not None] + [t for _, t in tx if t is not None]
    if log:
        ax.set_yscale("log")
        if tops and min(tops) > 0:
            ax.set_ylim(min(tops) / 2, max(tops) * 4)  # headroom for the legend
    elif tops:
        ax.set_ylim(min(0.0, min(tops) * 1.1), max(tops) * 1.3 or 1.0)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", ncols=2)


def grouped_bars(ax: Any, groups: list[str], series: dict[str, list[float]], title: str, *, ylabel: str = "",
                 log: bool = False) -> None:
    n = max(len(series), 1)
    w = 0.8 / n
    for j, (name, vals) in enumerate(series.items()):
        ax.bar([i + (j - (n - 1) / 2) * w for i in range(len(groups))], vals, width=w, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=7)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)


# -- suite renderers ------------------------------------------------------------------------------

Renderer = Callable[[Section, dict[str, Any], Plotter], None]


def render_core(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Core protocol costs (`core`)"
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key, v in data.items():
        if key == "machine":
            continue
        metric, _, kernel = key.partition("/")
        if not isinstance(v, dict) or metric not in CORE_TARGETS:
            sec.notes.append(f"entry `{_cell(key)}` not recognised; shown under other figures")
            render_generic(sec, {key: v}, plot, plots=False)
            continue
        groups.setdefault(metric, []).append((kernel or key, v))
    if not groups:
        raise KeyError("no overhead/* or verifier_over_prover/* entries")
    plotted: list[tuple[str, list[Figure]]] = []
    for metric, entries in groups.items():
        op, target, what = CORE_TARGETS[metric]
        rows, figs = [], []
        for kernel, v in entries:
            params = ", ".join(f"{k}={p}" for k, p in v["params"].items()) if isinstance(v.get("params"), dict) else ""
            if metric == "overhead":
                rows.append([kernel, params, v.get("steps"), v.get("bare_s"), v.get("proved_s"), v["ratio"],
                             f"{op} {target}", Figure(kernel, v["ratio"], target, op).mark])
            else:
                k, steps = _num(v.get("k")), _num(v.get("steps"))
                floor = k / steps if k is not None and steps else None
                rows.append([kernel, params, v.get("steps"), v.get("k"), v.get("prover_s"), v.get("verifier_s"),
                             v.get("bundle_bytes"), v["ratio"], floor, f"{op} {target}",
                             Figure(kernel, v["ratio"], target, op).mark])
            figs.append(Figure(kernel, v["ratio"], target, op))
        sec.blocks.append(f"**{metric}**: {what}")
        if metric == "overhead":
            sec.blocks.append(table(["kernel", "params", "steps", "bare s", "run+commit s", "ratio", "target", ""], rows))
        else:
            sec.blocks.append(table(["kernel", "params", "steps", "k", "prover s", "verifier s", "bundle bytes",
                                     "ratio", "floor k/n", "target", ""], rows))
        sec.figures += figs
        plotted.append((metric, figs))
    for metric, figs in plotted:
        vals = {f.name: v for f in figs if (v := _num(f.value)) is not None}
        if not vals:
            continue
        (lo_k, lo), (hi_k, hi) = _best_worst(vals)
        if metric == "overhead":
            sec.reading.append(f"Committing every state (hash, trace, signature) adds {fmt(100 * (lo - 1), 2)}% "
                               f"({lo_k}) to {fmt(100 * (hi - 1), 2)}% ({hi_k}) to the bare run; the run-to-run noise "
                               "of this shared 2-core host is a few percent, so the last digit is not significant.")
        else:
            sec.reading.append(f"Checking a response (k = 66 of 1,000 steps, p = 0.999 against f = 0.1) costs "
                               f"{fmt(100 * lo, 2)}-{fmt(100 * hi, 2)}% of producing the run; the floor is k/n = 6.6%: "
                               "the verifier cannot do much better without checking fewer steps.")
    with plot.figure(sec, "ratios", ncols=len(plotted)) as fa:
        if fa:
            for ax, (metric, figs) in zip(fa[1], plotted):
                bars_vs_targets(ax, figs, f"{metric} ratio vs target ({CORE_TARGETS[metric][0]} "
                                          f"{CORE_TARGETS[metric][1]})")


def render_kernels(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Kernel costs (`kernels`)"
    steps = {k.partition("/")[2]: v for k, v in data.items() if k.startswith("step/") and isinstance(v, dict)}
    exact = {k.partition("/")[2]: v for k, v in data.items() if k.startswith("exactness_512/") and isinstance(v, dict)}
    fr = {k.partition("/")[2] or "": v for k, v in data.items()
          if k.partition("/")[0] == "freivalds_1024" and isinstance(v, dict)}
    known = {"machine"} | {f"step/{k}" for k in steps} | {f"exactness_512/{k}" for k in exact} | {
        f"freivalds_1024/{k}" if k else "freivalds_1024" for k in fr}
    if not steps and not exact and not fr:
        raise KeyError("no step/*, exactness_512/* or freivalds_1024/* entries")
    panels: list[tuple[str, list[Figure], bool]] = []
    if steps:
        rows, figs = [], []
        for name, v in steps.items():
            params = ", ".join(f"{k}={p}" for k, p in v["params"].items()) if isinstance(v.get("params"), dict) else ""
            f = Figure(name, v.get("compute_over_hash"), KERNEL_COMPUTE_OVER_HASH, ">=", "x")
            rows.append([name, v.get("mode"), params, v.get("step_ms"), v.get("hash_ms"), v.get("state_bytes"),
                         v.get("compute_over_hash"), f">= {fmt(KERNEL_COMPUTE_OVER_HASH)}", f.mark])
            figs.append(f)
        sec.blocks.append("**step time vs state hashing** (compute should dominate hashing for a small commitment "
                          "overhead)")
        sec.blocks.append(table(["kernel", "mode", "params", "step ms", "hash ms", "state bytes", "step / hash",
                                 "target", ""], rows))
        sec.figures += figs
        panels.append(("step time / hash time", figs, True))
    if exact:
        figs = [Figure(t, v.get("ratio"), KERNEL_EXACTNESS_RATIO, "<=", "x") for t, v in exact.items()]
        sec.blocks.append("**cost of exactness**, 512^3: fixed-order numba float32 product / torch-MKL matmul")
        sec.blocks.append(table(["threads", "exact ms", "torch/MKL ms", "ratio", "target", ""],
                                [[t, v.get("exact_ms"), v.get("torch_mkl_ms"), v.get("ratio"),
                                  f"<= {fmt(KERNEL_EXACTNESS_RATIO)}", f.mark]
                                 for (t, v), f in zip(exact.items(), figs)]))
        sec.figures += figs
        panels.append(("exact / vendor (512^3)", figs, False))
    if fr:
        figs = [Figure(t or "default", v.get("ratio"), KERNEL_FREIVALDS_RATIO, "<=") for t, v in fr.items()]
        sec.blocks.append("**Freivalds check vs recomputing the step**, 1024^3 (recompute = the step plus the "
                          "elementwise comparison a verifier does instead)")
        sec.blocks.append(table(["threads", "Freivalds ms", "recompute + compare ms", "bare step ms", "vectors",
                                 "ratio", "ratio vs bare step", "target", ""],
                                [[t or "default", v.get("freivalds_ms"), v.get("recompute_and_compare_ms"),
                                  v.get("step_only_ms"), v.get("vectors"), v.get("ratio"), v.get("ratio_vs_step_only"),
                                  f"<= {fmt(KERNEL_FREIVALDS_RATIO)}", f.mark] for (t, v), f in zip(fr.items(), figs)]))
        sec.figures += figs
        panels.append(("Freivalds / recompute (1024^3)", figs, False))
    _kernel_reading(sec, steps, exact, fr)
    for key in data.keys() - known:
        sec.notes.append(f"entry `{_cell(key)}` not recognised; shown under other figures")
        render_generic(sec, {key: data[key]}, plot, plots=False)
    with plot.figure(sec, "ratios", ncols=len(panels)) as fa:
        if fa:
            for ax, (title, figs, log) in zip(fa[1], panels):
                bars_vs_targets(ax, figs, title, log=log)


def render_merkle(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Merkle tree vs pymerkle (`merkle`)"
    target = _num(data.get("target_ratio")) or MERKLE_TARGET_DEFAULT
    build, proof = data["build_ms"], data["proof_us"]
    leaves = data.get("leaves")
    sec.blocks.append(table(["operation", "ours", "ours (bytes input)", "pymerkle 7.0"], [
        [f"build {fmt(leaves)} leaves (ms)", build.get("ours_list"), build.get("ours_bytes"), build.get("pymerkle")],
        ["inclusion proof (µs)", proof.get("ours"), None, proof.get("pymerkle")],
    ]))
    figs = [Figure("build speed-up", data["build_ratio"], target, ">=", "x"),
            Figure("build speed-up (bytes input)", data.get("build_ratio_bytes_input"), target, ">=", "x"),
            Figure("proof speed-up", data["proof_ratio"], target, ">=", "x")]
    figs = [f for f in figs if f.value is not None]
    sec.add_figures(figs, label="pymerkle time / ours")
    if figs:
        sec.reading.append(f"pocv's tree builds {fmt(_num(data['build_ratio']), 3)}x and proves "
                           f"{fmt(_num(data['proof_ratio']), 3)}x faster than pymerkle 7.0 on the same leaves "
                           "(pymerkle hashes with SHA-256 in Python per node; pocv hashes whole tree levels with "
                           "BLAKE3 in vectorized numpy).")
    vr = _num(data.get("verify_ratio"))
    if vr is not None:
        sec.add_figures([Figure("verify speed-up (no target)", vr, unit="x")], label="pymerkle time / ours (verify)")
        vt = data.get("verify_us") or {}
        sec.reading.append(f"Verifying one inclusion proof takes {fmt(vt.get('ours'), 3)} µs against pymerkle's "
                           f"{fmt(vt.get('pymerkle'), 3)} µs ({fmt(vr, 3)}x): "
                           + ("on par — both fold about log2 n hashes in a Python loop, and a hash call costs about "
                              "the same in either library; verifying many leaves at once is what the multiproof is "
                              "for." if vr < 2 else "faster, mostly from BLAKE3."))
    if "targets_met" in data:
        sec.blocks.append(f"Suite's own verdict: targets_met = {fmt(data['targets_met'])}.")
    mp = data.get("multiproofs")
    if isinstance(mp, list) and mp:
        cols = ["challenges", "multiproof_hashes", "single_proofs_hashes", "opened_leaves",
                "opened_multiproof_hashes", "opened_single_proofs_hashes"]
        sec.blocks.append("**multiproof sizes** (hashes; a response opens s_0 and s_{i-1}, s_i per challenge)")
        sec.blocks.append(table(["challenges", "multiproof (k leaves)", "single proofs (k leaves)", "opened leaves",
                                 "multiproof (opened)", "single proofs (opened)"],
                                [[m.get(c) for c in cols] for m in mp if isinstance(m, dict)]))
    with plot.figure(sec, "times", ncols=3, figsize=(14, 3.8)) as fa:
        if fa:
            ax1, ax2, ax3 = fa[1]
            names = [n for n in ("ours_list", "ours_bytes", "pymerkle") if _num(build.get(n)) is not None]
            ax1.bar(names, [_num(build[n]) for n in names],
                    color=["tab:blue" if n != "pymerkle" else "tab:orange" for n in names])
            ax1.set_yscale("log")
            ax1.set_ylabel("ms (log)", fontsize=8)
            ax1.set_title(f"build, {fmt(leaves)} leaves", fontsize=9)
            pn = [n for n in ("ours", "pymerkle") if _num(proof.get(n)) is not None]
            ax2.bar(pn, [_num(proof[n]) for n in pn], color=["tab:blue", "tab:orange"][:len(pn)])
            ax2.set_yscale("log")
            ax2.set_ylabel("µs per proof (log)", fontsize=8)
            ax2.set_title("inclusion proof", fontsize=9)
            bars_vs_targets(ax3, figs, f"speed-up vs target (>= {fmt(target)}x)", log=True)


def render_market(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Marketplace and escrow (`market`)"
    costs = data.get("costs")
    lps = data.get("lifecycles_per_second")
    if not isinstance(costs, dict) and not isinstance(lps, dict):
        raise KeyError("neither costs nor lifecycles_per_second")
    cu: dict[str, dict[str, float]] = {}
    if isinstance(costs, dict):
        for build, c in costs.items():
            sec.blocks.append(f"**costs, Token program `{_cell(build)}`**: {_cell(str(c.get('token_program', '')))}; "
                              f"memo: {_cell(str(c.get('memo_program', '')))}")
            ptx = c.get("per_transaction") or {}
            sec.blocks.append(table(["transaction", "fee (lamports)", "compute units", "signatures", "bytes"],
                                    [[n, r.get("fee"), r.get("compute_units"), r.get("signatures"), r.get("bytes")]
                                     for n, r in ptx.items() if isinstance(r, dict)]))
            cu[build] = {n: v for n, r in ptx.items() if isinstance(r, dict)
                         and (v := _num(r.get("compute_units"))) is not None}
            figs = []
            for result, r in (c.get("per_job") or {}).items():
                figs.append(Figure(f"{result}: transactions", r.get("transactions"), MARKET_TX_PER_JOB_TARGET, "<="))
                figs.append(Figure(f"{result}: fees", r.get("fees"), MARKET_FEES_PER_JOB_TARGET, "<=", "lamports"))
                figs.append(Figure(f"{result}: compute units", r.get("compute_units")))
            if figs:
                sec.add_figures(figs, label=f"per job ({build})")
    rent = data.get("rent")
    if isinstance(rent, dict):
        sec.blocks.append("**rent**")
        sec.blocks.append(table(["account", "lamports", "note"],
                                [[k, v, rent.get(k[: -len("_lamports")] + "_note", "") if k.endswith("_lamports")
                                  else ""] for k, v in rent.items() if not k.endswith("_note")]))
    lfigs: list[Figure] = []
    if isinstance(lps, dict):
        rows = []
        for name, r in lps.items():
            if not isinstance(r, dict):
                continue
            tgt = _num(r.get("target"))
            wall = r.get("wall_clock")
            load, cores = _num(r.get("load_average_1m")), _num(r.get("cores"))
            fig = Figure(name, wall, tgt, ">=" if tgt is not None else None)
            busy = fig.met is False and load is not None and cores is not None and load >= cores
            spread = (f"{fmt(r.get('slowest_batch'))}-{fmt(r.get('fastest_batch'))}"
                      if r.get("slowest_batch") is not None else "—")
            rows.append([name, wall, spread, r.get("cpu_time", r.get("cpu_time_both_sides")),
                         f"{r.get('batches', 1)} x {r.get('batch')}", r.get("pass_lifecycle_median_ms"), load,
                         f">= {fmt(tgt)}" if tgt is not None else "—",
                         fig.mark + (f" (load {fmt(load)} on {fmt(cores)} cores: not an idle-machine figure)"
                                     if busy else "")])
            lfigs.append(Figure(name, wall, tgt, ">=" if tgt is not None else None, "/s"))
        sec.blocks.append("**lifecycles per second** (wall clock, mixed PASS/FAIL/TIMEOUT, the median batch; this "
                          "VM's speed drifts by up to +-20% between batches, CPU time with it, so the slowest and "
                          "fastest batch are shown; the load average says how busy the shared cores were)")
        sec.blocks.append(table(["backend", "wall-clock /s (median batch)", "slowest-fastest batch", "CPU-time /s",
                                 "batches", "PASS median ms",
                                 "load avg 1m", "target", ""], rows))
        sec.figures += lfigs
    if isinstance(costs, dict):
        for build, c in costs.items():
            pj = (c.get("per_job") or {}).get("PASS") or {}
            if pj:
                sec.reading.append(f"With {build}, a job costs {fmt(pj.get('transactions'))} transactions and "
                                   f"{fmt(pj.get('fees'))} lamports in fees whatever its verdict (rent is returned at "
                                   "settlement).")
    if lfigs:
        best = max(lfigs, key=lambda f: _num(f.value) or 0)
        sec.reading.append(f"Settlement runs on one core: LiteSVM's send_transaction holds the GIL (about 40% of a "
                           f"lifecycle in a profile), the parties' signing and checking and the index take the rest: "
                           f"{fmt(best.value, 3)} lifecycles/s in the best median ({best.name}); over HTTP each "
                           "lifecycle makes tens of round trips, which is what a real RPC node would cost.")
    with plot.figure(sec, "costs", ncols=2, figsize=(13, 4)) as fa:
        if fa:
            ax1, ax2 = fa[1]
            if cu:
                txs = sorted({t for d in cu.values() for t in d})
                grouped_bars(ax1, txs, {b: [d.get(t, 0.0) for t in txs] for b, d in cu.items()},
                             "compute units per transaction", ylabel="CU (log)", log=True)
            if lfigs:
                bars_vs_targets(ax2, lfigs, "lifecycles per second vs target", log=True)


def render_detection(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Detection of lying provers (`detection`)"
    rows = data["rows"]
    if not isinstance(rows, list):
        raise KeyError("rows")
    trows, figs = [], []
    for r in rows:
        if not isinstance(r, dict):
            continue
        name = f"{r.get('strategy')} f={r.get('f')} k={r.get('k')}"
        lo, hi = _num(r.get("ci_low")), _num(r.get("ci_high"))
        hyp = _num(r.get("hypergeometric"))
        inside = r.get("inside")
        if inside is None and None not in (lo, hi, hyp):
            inside = lo <= hyp <= hi  # type: ignore[operator]
        trows.append([r.get("strategy"), r.get("kernel"), r.get("n"), r.get("f"), r.get("k"), r.get("trials"),
                      r.get("rate"), f"[{fmt(lo)}, {fmt(hi)}]", r.get("binomial"), hyp,
                      "met" if inside else "**missed**" if inside is False else "—"])
        figs.append(Figure(name, r.get("rate"), _num(r.get("binomial")), ">="))
    sec.blocks.append("Target per row: the exact (hypergeometric) detection probability lies inside the measured "
                      "rate's Wilson 95% interval (about 1 row in 20 may miss by chance alone).")
    sec.blocks.append(table(["strategy", "kernel", "n", "f", "k", "trials", "rate", "95% CI", "1-(1-f)^k",
                             "hypergeometric", "inside"], trows))
    inside_n = sum(1 for r in trows if r[-1] == "met")
    sec.figures.append(Figure("rows with the exact value inside the 95% CI", inside_n,
                              float(math.floor(0.9 * len(trows))) if trows else None, ">="))
    sec.blocks.append(f"{inside_n} of {len(trows)} rows inside (target: at least 90%).")
    sec.reading.append(f"A worker who fakes a fraction f of the steps is caught at the rate sampling theory predicts "
                       f"({inside_n} of {len(trows)} measured rates agree with the exact hypergeometric value within "
                       "their 95% interval): to catch f = 0.1 with 99.9%, challenge k = 66 steps, whatever n is. "
                       "Grinding the challenge is only possible when it derives from the root alone; the beacon "
                       "closes it.")
    grind = data.get("grinding")
    if isinstance(grind, list) and grind:
        keys = [k for k in grind[0] if isinstance(grind[0], dict)] if isinstance(grind[0], dict) else []
        sec.blocks.append("**grinding against root-only challenges**")
        sec.blocks.append(table(keys, [[g.get(k) for k in keys] for g in grind if isinstance(g, dict)]))
    with plot.figure(sec, "rates", ncols=1, figsize=(max(6.0, 0.45 * len(figs) + 2), 4)) as fa:
        if fa and figs:
            bars_vs_targets(fa[1][0], figs, "measured detection rate vs the design bound 1-(1-f)^k")


def _best_worst(figs: dict[str, float]) -> tuple[tuple[str, float], tuple[str, float]]:
    items = sorted(figs.items(), key=lambda kv: kv[1])
    return items[0], items[-1]


def _kernel_reading(sec: Section, steps: dict[str, Any], exact: dict[str, Any], fr: dict[str, Any]) -> None:
    coh = {k: v for k, v in ((n, _num(e.get("compute_over_hash"))) for n, e in steps.items()) if v is not None}
    if coh:
        (lo_k, lo), (hi_k, hi) = _best_worst(coh)
        sec.reading.append(f"Hashing a state costs 1/{fmt(hi, 3)} of a step for {lo_k if lo == hi else hi_k} and "
                           f"1/{fmt(lo, 3)} for {lo_k}: the commitment's share of the run is at most about "
                           f"{fmt(100 / lo, 2)}% here; a kernel below {fmt(KERNEL_COMPUTE_OVER_HASH)}x would pay more "
                           "than 5% for its commitment unless it commits every few steps.")
    ex = {t: r for t, r in ((t, _num(v.get("ratio"))) for t, v in exact.items()) if r is not None}
    if ex:
        sec.reading.append(f"Bit-exact float32 (one fixed reduction order, no FMA) costs {fmt(min(ex.values()), 3)}-"
                           f"{fmt(max(ex.values()), 3)}x the vendor matmul at 512^3: the price of a result any CPU "
                           "or GPU reproduces bit for bit.")
    frr = {t: r for t, r in ((t, _num(v.get("ratio"))) for t, v in fr.items()) if r is not None}
    if frr:
        worst = max(frr.values())
        sec.reading.append(f"A Freivalds check costs {fmt(100 * min(frr.values()), 2)}-{fmt(100 * worst, 2)}% of "
                           "recomputing a 1024^3 step: it reads the claimed and the previous matrix once (W r is "
                           "cached per job), so it is memory-bound; its share falls as n grows and rises on machines with more FLOPs per byte of bandwidth"
                           + (" — above the 5% target in this run." if worst > KERNEL_FREIVALDS_RATIO else "."))


#: issue 16: state_digest / raw BLAKE3 on the same bytes, at 4 KiB (one thread) and from 1 MiB (one
#: thread below 16 MiB, all cores from 16 MiB, where the digest itself hashes on all cores)
HASH_SMALL_TARGET = 0.5
HASH_LARGE_TARGET = 0.9


def render_hashing(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "State hashing vs memory bandwidth (`hashing`)"
    rows_in = sorted((v for k, v in data.items() if k.startswith("size/") and isinstance(v, dict)),
                     key=lambda v: _num(v.get("bytes")) or 0)
    if not rows_in:
        raise KeyError("no size/* entries")
    cases = ["memcpy", "read", "state_digest", "blake3_1thread", "blake3_all_cores"]
    rows = []
    for v in rows_in:
        g = v.get("gbps") or {}
        rows.append([_size(v.get("bytes")), *[g.get(c) for c in cases], v.get("digest_over_memcpy")])
    figs: list[Figure] = []
    for v in rows_in:  # issue 16: the digest at the hash's own speed
        size = _num(v.get("bytes")) or 0
        if size <= 4 * 2**10:
            figs.append(Figure(f"{_size(size)}: state_digest / blake3 1 thread", v.get("digest_over_blake3_1thread"),
                               HASH_SMALL_TARGET, ">="))
        elif 2**20 <= size < 16 * 2**20:
            figs.append(Figure(f"{_size(size)}: state_digest / blake3 1 thread", v.get("digest_over_blake3_1thread"),
                               HASH_LARGE_TARGET, ">="))
        elif size >= 16 * 2**20:
            figs.append(Figure(f"{_size(size)}: state_digest / blake3 all cores", v.get("digest_over_blake3_all_cores"),
                               HASH_LARGE_TARGET, ">="))
    if figs:
        sec.add_figures(figs, heading="the state digest against raw BLAKE3 on the same bytes (issue 16)")
    sec.blocks.append("GB/s per operation on the same bytes, best of interleaved rounds; the last column is "
                      "state_digest throughput / memcpy throughput (1 = hashing as fast as copying).")
    sec.blocks.append(table(["size", "memcpy GB/s", "read GB/s", "state_digest GB/s", "blake3 1 thread GB/s",
                             "blake3 all cores GB/s", "digest / memcpy"], rows))
    big = rows_in[-1]
    g = big.get("gbps") or {}
    peak = max(rows_in, key=lambda v: _num((v.get("gbps") or {}).get("state_digest")) or 0)
    pg = peak.get("gbps") or {}
    sec.reading.append(
        f"pocv's state hash peaks at {fmt(pg.get('state_digest'), 3)} GB/s ({_size(peak.get('bytes'))} states) and "
        f"runs at {fmt(g.get('state_digest'), 3)} GB/s on {_size(big.get('bytes'))}, where a plain copy moves "
        f"{fmt(g.get('memcpy'), 3)} GB/s: hashing reaches {fmt(100 * (_num(big.get('digest_over_memcpy')) or 0), 3)}% "
        "of the copy limit" + (", so on this host BLAKE3's compression, not memory, bounds the commitment."
                               if (_num(big.get("digest_over_memcpy")) or 0) < 0.5 else
                               ": the commitment runs close to what the memory system allows.")
        + " Small states (KiB) pay a fixed per-call cost (header, Python) and hash far below bandwidth: commit "
          "large states, or many steps per leaf.")
    with plot.figure(sec, "throughput", figsize=(7.5, 4.2)) as fa:
        if fa:
            ax = fa[1][0]
            xs = [_num(v.get("bytes")) or 0 for v in rows_in]
            for c in cases:
                ys = [_num((v.get("gbps") or {}).get(c)) for v in rows_in]
                pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=c,
                            linewidth=2.5 if c == "state_digest" else 1.2)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("bytes (log)", fontsize=8)
            ax.set_ylabel("GB/s (log)", fontsize=8)
            ax.set_title("throughput vs size", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)


def _size(b: Any) -> str:
    v = _num(b)
    if v is None:
        return "?"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if v >= scale:
            return f"{v / scale:g} {unit}"
    return f"{v:g} B"


def render_scaling(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Verifier cost and sizes as n and p grow (`scaling`)"
    ratios = [v for k, v in data.items() if k.startswith("ratio/") and isinstance(v, dict)]
    proofs = sorted((v for k, v in data.items() if k.startswith("proof/") and isinstance(v, dict)),
                    key=lambda v: _num(v.get("leaves")) or 0)
    if not ratios and not proofs:
        raise KeyError("no ratio/* or proof/* entries")
    params = data.get("params")
    if isinstance(params, dict):
        sec.blocks.append("Kernel: " + ", ".join(f"{k}={v}" for k, v in params.items()) + ".")
    if ratios:
        ratios.sort(key=lambda v: (_num(v.get("steps")) or 0, _num(v.get("p")) or 0))
        sec.blocks.append("**verifier / prover** (prover = run + commit once; verifier = check one response, best of "
                          "3; floor = k/n, the share of steps the verifier recomputes)")
        sec.blocks.append(table(["n", "p", "k", "prover s", "verifier s", "ratio", "floor k/n", "ratio / floor"],
                                [[v.get("steps"), v.get("p"), v.get("k"), v.get("prover_s"), v.get("verifier_s"),
                                  v.get("ratio"), v.get("floor"),
                                  (_num(v.get("ratio")) or 0) / (_num(v.get("floor")) or 1)] for v in ratios]))
        sec.blocks.append("**sizes** (bytes): the signed commitment is constant; the response carries 2k+1 states "
                          "at most (s_0, and s_{i-1}, s_i per challenge) and one multiproof")
        sec.blocks.append(table(["n", "p", "k", "commitment", "response bundle", "multiproof", "opened states",
                                 "bytes per state"],
                                [[v.get("steps"), v.get("p"), v.get("k"), v.get("commitment_bytes"),
                                  v.get("bundle_bytes"), v.get("proof_bytes"), v.get("opened_states"),
                                  v.get("state_bytes")] for v in ratios]))
        over = [(_num(v.get("ratio")) or 0) / (_num(v.get("floor")) or 1) for v in ratios]
        big = [v for v in ratios if v.get("steps") == max(r.get("steps") for r in ratios)]
        sec.reading.append(
            f"The verifier recomputes k of n steps, so its cost tracks the floor k/n: measured ratio / floor spans "
            f"{fmt(min(over), 3)}-{fmt(max(over), 3)}"
            + (" (below 1 where the prover pays more per step than a recompute: its trace writes and hashing)"
               if min(over) < 1 else " (above 1: reading the bundle, the multiproof and the compare)")
            + f". At n = {fmt(big[0].get('steps'))} a p = "
            f"{fmt(big[-1].get('p'))} check costs {fmt(100 * (_num(big[-1].get('ratio')) or 0), 3)}% of the run; "
            "the absolute verifier cost depends on k (on p and f), not on n, so longer jobs are cheaper to verify "
            "per step. The response is dominated by the opened states (bytes per state x up to 2k+1): "
            f"{fmt(big[-1].get('bundle_bytes'))} bytes, of which the multiproof is {fmt(big[-1].get('proof_bytes'))}.")
    if proofs:
        sec.blocks.append("**multiproof for k challenges vs tree size** (no kernel: 20 random challenge sets per size)")
        sec.blocks.append(table(["leaves", "k", "hashes (mean)", "hashes (max)", "bytes (mean)"],
                                [[v.get("leaves"), v.get("k"), v.get("hashes_mean"), v.get("hashes_max"),
                                  v.get("bytes_mean")] for v in proofs]))
        sec.reading.append(
            f"The multiproof grows with log n: {fmt(proofs[0].get('bytes_mean'), 3)} bytes at "
            f"{fmt(proofs[0].get('leaves'))} leaves, {fmt(proofs[-1].get('bytes_mean'), 3)} at "
            f"{fmt(proofs[-1].get('leaves'))}.")
    with plot.figure(sec, "scaling", ncols=2, figsize=(12, 4)) as fa:
        if fa:
            ax1, ax2 = fa[1]
            for p_ in sorted({v.get("p") for v in ratios if _num(v.get("p")) is not None}):
                pts = [(v["steps"], v["ratio"]) for v in ratios if v.get("p") == p_]
                ax1.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=f"p={p_}")
                ax1.plot([a for a, _ in pts], [min(1.0, (v.get("floor") or 0)) for v in ratios if v.get("p") == p_],
                         linestyle=":", color=ax1.lines[-1].get_color())
            if ratios:
                ax1.set_xscale("log")
                ax1.set_yscale("log")
                ax1.set_xlabel("steps n (log)", fontsize=8)
                ax1.set_ylabel("verifier / prover (log); dotted: k/n", fontsize=8)
                ax1.set_title("verifier cost / prover cost", fontsize=9)
                ax1.grid(alpha=0.3)
                ax1.legend(fontsize=7)
            if proofs:
                ax2.plot([v["leaves"] for v in proofs], [v["bytes_mean"] for v in proofs], marker="o",
                         label="multiproof (k=66)")
            sizes = sorted({(v["steps"], v.get("bundle_bytes")) for v in ratios if v.get("p") == 0.999})
            if sizes:
                ax2.plot([a for a, _ in sizes], [b for _, b in sizes], marker="s", label="response bundle (p=0.999)")
            ax2.set_xscale("log")
            ax2.set_yscale("log")
            ax2.set_xlabel("steps / leaves (log)", fontsize=8)
            ax2.set_ylabel("bytes (log)", fontsize=8)
            ax2.set_title("sizes", fontsize=9)
            ax2.grid(alpha=0.3)
            ax2.legend(fontsize=7)


#: issue 16 targets of the worker suite (bench/test_bench_worker.py)
WORKER_RUN_TARGET = 1.02  # run + commit / bare run, in-run, every built-in kernel at its default size
WORKER_RESPOND_TARGET = 0.05  # respond / run at the default checkpoint policy
#: published overheads of related systems, as the issue quotes them (not measured here)
WORKER_ANCHORS: list[tuple[str, str, str]] = [
    ("EigenAI", "< 2%", "bit-exact inference"),
    ("TAO", "+0.3%", "overhead as quoted in issue 16"),
    ("CommitLLM", "12-14%", "tracing"),
]


def render_worker(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "The worker's whole cost and the verifier's (`worker`)"
    rows, answer_rows, figs, head_rows = [], [], [], []
    whole: dict[str, float] = {}
    curves: dict[str, list[tuple[int, float | None, float | None]]] = {}
    for key, v in sorted(data.items()):
        if key == "machine" or not key.startswith("worker/") or not isinstance(v, dict):
            continue
        kernel = key.partition("/")[2]
        params = ", ".join(f"{k}={p}" for k, p in v.get("params", {}).items())
        c = str(v.get("default_c"))
        resp = v.get("respond", {}).get(c, {})
        f_run = Figure(f"{kernel}: run+commit / bare", v.get("ratio"), WORKER_RUN_TARGET, "<=")
        f_resp = Figure(f"{kernel}: respond / run (c={c})", resp.get("respond_over_run"), WORKER_RESPOND_TARGET, "<=")
        figs += [f_run, f_resp]
        if (w := _num(v.get("whole_over_bare"))) is not None:
            whole[kernel] = w
        rows.append([kernel, params, v.get("steps"), v.get("state_bytes"), v.get("bare_s"), v.get("run_s"),
                     v.get("ratio"), v.get("ratio_sync"), f"{v.get('default_policy')} (c={c})",
                     resp.get("respond_over_run"), resp.get("disk_bytes"), v.get("whole_over_bare"),
                     v.get("verifier_over_bare"), f_run.mark, f_resp.mark])
        head_rows.append([kernel, v.get("whole_over_bare"), v.get("ratio"), v.get("cpu_ratio"), resp.get("respond_over_run"),
                          f"{v.get('default_policy')}: c={c}, {_size(resp.get('disk_bytes'))}",
                          v.get("verifier_over_bare"),
                          f"{params}; {v.get('steps')} steps, k = {v.get('k')}"
                          + (f"; load {fmt(v.get('load_avg_1m'), 2)} on {v.get('cores')} cores"
                             if _num(v.get("load_avg_1m")) is not None else "")])
        for ci, r in sorted(v.get("respond", {}).items(), key=lambda kv: int(kv[0])):
            answer_rows.append([kernel, ci, r.get("respond_s"), r.get("respond_over_run"), r.get("checkpoints"),
                                r.get("disk_bytes"), r.get("expected_recomputed_steps")])
            curves.setdefault(kernel, []).append((int(ci), _num(r.get("respond_over_run")), _num(r.get("disk_bytes"))))
    if not rows:
        raise KeyError("no worker/* entries")
    anchors = "; ".join(f"{n} {o}, {c}" for n, o, c in WORKER_ANCHORS)
    if whole:
        (lo_k, lo), (hi_k, hi) = _best_worst(whole)
        sec.reading.append(f"A worker pays {fmt(lo, 3)}x ({lo_k}) to {fmt(hi, 3)}x ({hi_k}) the bare job for a "
                           "verified job (run, commit and one answered challenge at the default checkpoint policy). "
                           f"Published anchors, for comparison (their figures, not measured here): {anchors}. "
                           "None of them asks the worker to recompute steps to answer a challenge.")
    sec.headline += [
        "## Headline: the worker's whole cost and the verifier's",
        "",
        f"Per built-in kernel ({describe_machine(data.get('machine'))}): what a worker pays for one verified job, "
        "(run + commit + respond to one challenge at the default checkpoint policy) / the bare run, and what "
        "the verifier pays, (check that response) / the bare run (it recomputes the k challenged steps). "
        "Wall-clock ratios are interleaved runs, best of each; the CPU-time ratio (every thread of the process) "
        "is what a machine with no idle core pays, and does not count time other processes held the cores. "
        f"Anchors, their published overheads and conditions (not measured here): {anchors}. None of them "
        "asks the worker to recompute steps to answer a challenge.",
        "",
        table(["kernel", "worker: (run + commit + respond) / bare", "run + commit / bare",
               "run + commit / bare, CPU time", "respond / run",
               "default policy, disk", "verifier / bare", "job"], head_rows),
    ]
    sec.blocks.append("**headline**: the worker's whole cost (run + commit + respond) / bare run, and the "
                      "verifier's (check one response) / bare run, per kernel")
    sec.blocks.append(table(["kernel", "params", "steps", "state bytes", "bare s", "run+commit s", "ratio",
                             "ratio, synchronous commit", "default policy", "respond / run", "disk bytes",
                             "worker whole / bare", "verifier / bare", "run target <= 1.02", "respond target <= 0.05"],
                            rows))
    sec.blocks.append("**answering one challenge (k = min(66, steps)) vs checkpoint interval c** (respond reads only the states "
                      "at multiples of c from one trace that keeps every state; disk = checkpoints + leaves)")
    sec.blocks.append(table(["kernel", "c", "respond s", "respond / run", "checkpoints", "disk bytes",
                             "expected recomputed steps"], answer_rows))
    sec.blocks.append(table(["system", "published overhead", "conditions"], [list(a) for a in WORKER_ANCHORS]))
    sec.figures += figs
    with plot.figure(sec, "respond-vs-c", ncols=2) as fa:
        if fa:
            ax_r, ax_d = fa[1]
            for kernel, pts in sorted(curves.items()):
                pts.sort()
                rr = [(c, r) for c, r, _ in pts if r is not None]
                dd = [(c, d / 2**20) for c, _, d in pts if d is not None]
                if rr:
                    ax_r.plot([p[0] for p in rr], [p[1] for p in rr], marker="o", label=kernel)
                if dd:
                    ax_d.plot([p[0] for p in dd], [p[1] for p in dd], marker="o", label=kernel)
            ax_r.axhline(WORKER_RESPOND_TARGET, color="red", linestyle="--", linewidth=1, label="target 0.05")
            for ax, ylabel, title in ((ax_r, "respond / run", "answering one challenge"),
                                      (ax_d, "disk MiB (checkpoints + leaves)", "disk used")):
                ax.set_xscale("log", base=2)
                ax.set_xlabel("checkpoint interval c", fontsize=8)
                ax.set_ylabel(ylabel, fontsize=8)
                ax.set_title(title, fontsize=9)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6)


def render_merkle_scale(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Merkle tree at scale and batch verification (`merkle_scale`)"
    t = data.get("targets", {})
    n = data.get("leaves")
    figs = [Figure(f"build {n} leaves, pymerkle / pocv", data.get("build_ratio"), t.get("build_ratio"), ">="),
            Figure(f"inclusion proof at {n} leaves, pymerkle / pocv", data.get("proof_ratio"), t.get("proof_ratio"),
                   ">="),
            Figure("verify 1,000 proofs: plain blake3 loop / verify_inclusions", data.get("verify_batch_over_plain"),
                   t.get("verify_batch_over_plain"), ">="),
            Figure("verify: plain blake3 loop / verify_inclusion (one proof a call)",
                   data.get("verify_single_over_plain")),
            Figure("verify: pymerkle / verify_inclusions", data.get("verify_batch_over_pymerkle"))]
    sec.add_figures(figs)
    sec.blocks.append(table(["what", "pocv", "pymerkle"], [
        ["build ms (bytes input)", data.get("build_ms", {}).get("ours_bytes"), data.get("build_ms", {}).get("pymerkle")],
        ["build ms (list input)", data.get("build_ms", {}).get("ours_list"), None],
        ["inclusion proof us", data.get("proof_us", {}).get("ours"), data.get("proof_us", {}).get("pymerkle")],
        ["verify us / proof (verify_inclusions)", data.get("verify_us", {}).get("verify_inclusions"),
         data.get("verify_us", {}).get("pymerkle")],
        ["verify us / proof (plain loop)", data.get("verify_us", {}).get("plain_loop"), None]]))


def render_net(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Across machines and at scale (`net`)"
    t = data.get("targets") or {}
    remote, batch, ray = data.get("remote") or {}, data.get("batch") or {}, data.get("ray") or {}
    if not (remote or batch or ray):
        raise KeyError("none of remote, batch, ray")
    figs = []
    if remote:
        figs.append(Figure(f"remote / file verification, bundles {fmt(min(remote.get('bundle_mb') or [0]))}-"
                           f"{fmt(max(remote.get('bundle_mb') or [0]))} MB (median of {remote.get('rounds')} rounds)",
                           remote.get("ratio_median"), _num(t.get("remote_over_file_max")), "<="))
    if batch:
        figs.append(Figure(f"batch throughput / ({batch.get('cores')} x one job at a time), "
                           f"{batch.get('jobs')} jobs on LocalPool", batch.get("efficiency"),
                           _num(t.get("batch_efficiency_min")), ">="))
    if ray.get("overhead_ms") is not None:
        figs.append(Figure("Ray adds per task over a warm local pool", ray.get("overhead_ms"),
                           _num(t.get("ray_overhead_ms_max")), "<=", "ms"))
    elif ray:
        sec.blocks.append(f"Ray not measured: {_cell(str(ray.get('why', '')))}")
    sec.add_figures(figs)
    rows = []
    if remote:
        rows.append(["remote / file, ratio of minima", remote.get("ratio_min")])
        rows.append(["remote / file written without fsync (median)", remote.get("ratio_median_no_fsync")])
    if batch:
        rows.append(["one job at a time, jobs/s (median)", batch.get("single_jobs_per_s")])
        rows.append(["batch on the pool, jobs/s (median)", batch.get("batch_jobs_per_s")])
    for how, f in ray.items():
        if isinstance(f, dict) and "ray_ms_median" in f:
            rows.append([f"Ray ({how}): ms per task / local pool ms per task",
                         f"{fmt(f.get('ray_ms_median'))} / {fmt(f.get('pool_ms_median'))}"])
    if rows:
        sec.blocks.append(table(["what", "value"], rows))
    loads = {k: v.get("load") for k, v in (("remote", remote), ("batch", batch)) if isinstance(v, dict) and v.get("load")}
    if loads:
        sec.reading.append("Load average (1, 5, 15 min) before and after each part: "
                           + "; ".join(f"{k} {v}" for k, v in loads.items()) + ".")


def render_memory(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Peak memory of answering and checking (`memory`)"
    modes = {k: v for k, v in data.items() if isinstance(v, dict) and "worker" in v}
    if not modes:
        raise KeyError("no job measured")
    budget = _num(data.get("budget_bytes")) or 0
    figs, rows = [], []
    for mode, e in modes.items():
        state = e.get("state_bytes") or 1
        for side in ("worker", "verifier"):
            r = e.get(side) or {}
            figs.append(Figure(f"{mode} ({e.get('kernel')}): {side}'s peak RSS for a "
                               f"{fmt((e.get('bundle_bytes') or 0) / 2**30)} GiB answer, GiB",
                               (r.get("peak_bytes") or 0) / 2**30, budget / 2**30, "<="))
            rows.append([mode, e.get("kernel"), side, fmt(state / 2**20), e.get("k"),
                         fmt((r.get("base_bytes") or 0) / 2**20), fmt((r.get("peak_k1_bytes") or 0) / 2**20),
                         fmt((r.get("peak_bytes") or 0) / 2**20), r.get("over_k1_states")])
    sec.add_figures(figs)
    sec.blocks.append(table(["mode", "kernel", "side", "state MiB", "k", "before answering MiB", "peak at k = 1 MiB",
                             "peak at k MiB", "k adds, states"], rows))
    sec.reading.append("Each side runs in its own process; its peak RSS (VmHWM) against the same answer at k = 1 "
                       "shows what k adds: a few states at most (the worker's window of segments in flight), "
                       "not k of them.")


def render_bytes(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "Bytes sent per challenged step (`bytes`)"
    kernels = {k: v for k, v in data.items() if isinstance(v, dict) and "per_step" in v}
    if not kernels:
        raise KeyError("no kernel measured")
    figs, rows, dist_rows = [], [], []
    for name, e in kernels.items():
        dist = e.get("distribution")
        if isinstance(dist, dict):  # exact: the median over many beacons at the issue's n and k
            figs.append(Figure(f"{name} ({e.get('mode')}), bytes / k / state, median over {fmt(dist.get('beacons'))} "
                               f"beacons at n = {fmt(dist.get('steps'))}, k = {fmt(dist.get('k'))}", dist.get("median"),
                               _num(e.get("target")), "<="))
            dist_rows.append([name, f"{e.get('state_bytes'):,}", dist.get("mean"), dist.get("median"), dist.get("p99"),
                              dist.get("max"), f"{fmt(100 * (_num(dist.get('above_1')) or 0), 3)}% "
                              f"(theory {fmt(100 * (_num(dist.get('above_1_theory')) or 0), 3)}%)",
                              f"{fmt(dist.get('mean_states_whole'), 4)} of {fmt(dist.get('k'))}"])
        else:
            figs.append(Figure(f"{name} ({e.get('mode')}), bytes / k / state", e.get("per_step"),
                               _num(e.get("target")), "<="))
        rows.append([name, e.get("mode"), f"{e.get('state_bytes'):,}", e.get("chunks"), "default",
                     e.get("per_step"), "", ""])
        rows.append([name, e.get("mode"), "", "", "all whole", e.get("whole_per_step"), "", ""])
        for m, smp in (e.get("sampled") or {}).items():
            rows.append([name, e.get("mode"), "", "", f"sample_chunks = {m}", smp.get("per_step"),
                         smp.get("step_one_chunk"), smp.get("challenge_one_chunk_f")])
    sec.add_figures(figs)
    sec.blocks.append(table(["kernel", "mode", "state B", "chunks", "answer", "bytes / k / state",
                             "one-chunk cheat caught per step", "over k = 66 at f = 0.1"], rows))
    if dist_rows:
        sec.blocks.append("**exact kernels over many beacons** (bytes / k / state of the default answer, computed "
                          "exactly from the derived indices and the multiproof; checked against real bundles)")
        sec.blocks.append(table(["kernel", "state B", "mean", "median", "p99", "max", "challenges above 1.0x",
                                 "states opened whole"], dist_rows))
    sec.reading.append(f"One run of n = {data.get('steps')} steps, k = {data.get('k')}: exact kernels send the state "
                       "before each run of consecutive challenged steps whole and every s_i by value (the verifier "
                       "carries its own recomputed, leaf-checked state along a run: one state per run; for "
                       "incompressible states no answer can send less, so the exact figure is a distribution over "
                       "beacons, above 1.0x only when no two challenged steps touch and step 1 is not drawn); "
                       "tolerance kernels send both whole, or s_i by a chunk sample when the job says so (a cheat "
                       "in every chunk of a step is caught whenever the step is challenged).")


LLM_TARGETS: dict[str, tuple[str, float]] = {
    "commit_overhead": ("<=", 1.05),  # worker / plain generate of the same tokens
    "verify_all_challenged_over_generate": ("<=", 0.10),  # k challenged positions in one pass / generating
    "opened_bytes_per_challenged_position_beyond_tokens": ("<=", 256.0),
}


def render_llm(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "LLM inference: hf-causal-lm against plain generate, TOPLOC and token-difr (`llm`)"
    costs, det, sbs = data.get("costs") or {}, data.get("detection") or {}, data.get("side_by_side") or {}
    if not (costs or det or sbs):
        raise KeyError("none of costs, detection, side_by_side")
    cfg = data.get("config") or {}
    if costs:
        sec.add_figures([
            Figure(f"worker / plain generate of the same {cfg.get('new_tokens')} tokens "
                   f"({costs.get('tokens_equal_to_plain_generate')} equal)", costs.get("commit_overhead"),
                   *LLM_TARGETS["commit_overhead"][::-1]),
            Figure(f"checking {costs.get('challenged_positions')} positions in one pass / generating",
                   costs.get("verify_all_challenged_over_generate"),
                   *LLM_TARGETS["verify_all_challenged_over_generate"][::-1]),
            Figure("bytes opened per challenged position beyond the tokens",
                   costs.get("opened_bytes_per_challenged_position_beyond_tokens"),
                   *LLM_TARGETS["opened_bytes_per_challenged_position_beyond_tokens"][::-1], "B"),
        ], heading=f"costs (width {cfg.get('width')}, {cfg.get('layers')} layers, {cfg.get('threads')} thread)")
    if det:
        attacks = sorted({a for arch in det.values() if isinstance(arch, dict) for a in arch
                          if isinstance(arch[a], dict)}, key=lambda a: (a != "honest", a))
        rows, det_figs = [], []
        for a in attacks:
            per = [arch[a] for arch in det.values() if isinstance(arch, dict) and isinstance(arch.get(a), dict)]
            jobs = sum(int(r.get("jobs", 0)) for r in per)
            rows.append([a, f"{sum(int(r.get('pocv_flagged', 0)) for r in per)}/{jobs}",
                         f"{sum(int(r.get('toploc_flagged', 0)) for r in per)}/{jobs}",
                         f"{sum(int(r.get('difr_flagged', 0)) for r in per)}/{jobs}",
                         fmt(min((_num(r.get("pocv_worst_ratio_min")) or 0.0) for r in per), 3)])
            want = 0.0 if a == "honest" else 1.0
            flagged = sum(int(r.get("pocv_flagged", 0)) for r in per) / jobs if jobs else None
            det_figs.append(Figure(f"pocv flags {a} (share of jobs)", flagged, want, "<=" if a == "honest" else ">="))
        sec.blocks.append(f"**detection**: jobs flagged, {', '.join(det)}; "
                          f"{(data.get('detection_config') or {}).get('new_tokens')} tokens per job")
        sec.blocks.append(table(["run", "pocv", "TOPLOC", "token-difr", "pocv worst ratio, smallest job"], rows))
        sec.add_figures(det_figs, label="detection")
    if sbs:
        names = [n for n in ("pocv", "toploc", "token-difr") if isinstance(sbs.get(n), dict)]
        keys = [("committed bytes per token", ("committed_bytes_per_token_beyond_token", "committed_bytes_per_token")),
                ("positions checked", ("checked_positions",)),
                ("bytes opened per checked position", ("opened_bytes_per_checked_position_beyond_tokens",
                                                       "opened_bytes_per_checked_position")),
                ("verifier per checked position / worker per token", ("verifier_per_position_over_worker_per_token",))]
        rows = [[label, *[next((sbs[n][k] for k in ks if k in sbs[n]), None) for n in names]] for label, ks in keys]
        sec.blocks.append(f"**side by side**: one honest {sbs.get('tokens')}-token job, the same tokens")
        sec.blocks.append(table(["", *names], rows))
    pub = data.get("published")
    if isinstance(pub, dict):
        sec.reading.append("Published, not measured here: " + "; ".join(f"{k}: {v}" for k, v in pub.items()) + ".")


#: file stem -> renderer for the suites whose layout is known
RENDERERS: dict[str, Renderer] = {
    "core": render_core,
    "kernels": render_kernels,
    "merkle_ratios": render_merkle,
    "merkle": render_merkle,
    "market": render_market,
    "detection": render_detection,
    "hashing": render_hashing,
    "scaling": render_scaling,
    "worker": render_worker,
    "merkle_scale": render_merkle_scale,
    "net": render_net,
    "memory": render_memory,
    "bytes": render_bytes,
    "llm": render_llm,
}


def _plugin(stem: str) -> Renderer | None:
    """``render`` of ``bench/peer_<stem>.py`` when that file exists: each peer suite (TOPLOC, EZKL, ...)
    keeps its measurement and its section of the report in one module. An import error (the peer's
    library is not installed) leaves the file to the generic renderer with a note, not a crash."""
    if not (Path(__file__).parent / f"peer_{stem}.py").is_file():
        return None
    import importlib

    module = importlib.import_module(f"bench.peer_{stem}")
    fn = getattr(module, "render", None)
    return fn if callable(fn) else None


def _flatten(prefix: str, v: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), x, out)
    elif isinstance(v, list) and len(v) <= 64:
        for i, x in enumerate(v):
            _flatten(f"{prefix}[{i}]", x, out)
    elif isinstance(v, list):
        out.append((prefix, f"list of {len(v)} items"))
    else:
        out.append((prefix, v))


def _generic_targets(prefix: str, v: Any, out: list[Figure]) -> None:
    """Every dict holding a ``ratio`` (or ``value``) and a target: ``target_max`` (<=), ``target_min`` (>=),
    or ``target``/``target_ratio`` with ``target_op`` (``<=``/``>=``; without it the direction is unknown)."""
    if isinstance(v, dict):
        val = v.get("ratio", v.get("value"))
        op: str | None = None
        tgt: float | None = None
        if _num(v.get("target_max")) is not None:
            op, tgt = "<=", _num(v["target_max"])
        elif _num(v.get("target_min")) is not None:
            op, tgt = ">=", _num(v["target_min"])
        else:
            tgt = _num(v.get("target", v.get("target_ratio")))
            raw = v.get("target_op", v.get("op"))
            op = raw if raw in ("<=", ">=") else None
        if val is not None and tgt is not None:
            out.append(Figure(prefix or "value", val, tgt, op))
        for k, x in v.items():
            if isinstance(x, dict | list):
                _generic_targets(f"{prefix}/{k}" if prefix else str(k), x, out)
    elif isinstance(v, list):
        for i, x in enumerate(v[:64]):
            _generic_targets(f"{prefix}[{i}]", x, out)


def render_generic(sec: Section, data: dict[str, Any], plot: Plotter, *, plots: bool = True) -> None:
    body = {k: v for k, v in data.items() if k != "machine"}
    figs: list[Figure] = []
    _generic_targets("", body, figs)
    if figs:
        sec.add_figures(figs, label="ratio")
    flat: list[tuple[str, Any]] = []
    _flatten("", body, flat)
    if flat:
        more = len(flat) - MAX_GENERIC_ROWS
        sec.blocks.append(table(["key", "value"], [[k, v] for k, v in flat[:MAX_GENERIC_ROWS]]))
        if more > 0:
            sec.blocks.append(f"... {more} more values in the JSON file")
    if plots and figs:
        with plot.figure(sec, "ratios") as fa:
            if fa:
                bars_vs_targets(fa[1][0], figs, "ratios vs targets")


# -- the report -----------------------------------------------------------------------------------


@dataclass
class Report:
    path: Path
    sections: list[Section]
    skipped: list[tuple[str, str]]
    plots: list[Path]

    def summary(self) -> dict[str, Any]:
        return {"report": str(self.path), "plots": [str(p) for p in self.plots],
                "sections": [{"suite": s.suite, "source": s.source, "met": s.met, "missed": s.missed,
                              "notes": s.notes} for s in self.sections],
                "skipped": [{"source": n, "why": w} for n, w in self.skipped],
                "met": sum(s.met for s in self.sections), "missed": sum(s.missed for s in self.sections)}


def load(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(data, "") or (None, why it was skipped)."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return None, f"{size:,} bytes, over the {MAX_JSON_BYTES:,}-byte limit"
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # ValueError covers JSONDecodeError and bad UTF-8
        return None, f"cannot be read as JSON ({type(e).__name__}: {_cell(str(e))[:120]})"
    if not isinstance(data, dict):
        return None, f"top level is a JSON {type(data).__name__}, not an object"
    return data, ""


def build_section(path: Path, data: dict[str, Any], plot: Plotter) -> Section:
    stem = path.stem
    m = data.get("machine")
    sec = Section(suite=stem, source=path.name, machine=describe_machine(m), raw_machine=m if isinstance(m, dict) else {})
    if "machine" not in data:
        sec.notes.append("this file has no machine block; the figures cannot be tied to a machine")
    renderer = RENDERERS.get(stem)
    if renderer is None:
        try:
            renderer = _plugin(stem)
        except Exception as e:  # the peer module does not import: its figures are still shown, generically
            sec.notes.append(f"bench/peer_{stem}.py could not be imported ({type(e).__name__}: "
                             f"{_cell(str(e))[:120]}); showing the raw figures")
    if renderer is not None:
        try:
            renderer(sec, data, plot)
            return sec
        except Exception as e:  # a partial or older file: fall back to the raw figures, with a note
            sec = Section(suite=stem, source=path.name, machine=sec.machine, notes=sec.notes[:1],
                          raw_machine=sec.raw_machine)
            sec.notes.append(f"the `{stem}` layout was not recognised ({type(e).__name__}: {_cell(str(e))[:120]}); "
                             "showing the raw figures (a partial or older run?)")
    sec.title = sec.title or f"{stem} (generic)"
    render_generic(sec, data, plot)
    return sec


def generate(out: Path = OUT, *, report: Path | None = None) -> Report:
    """Write the report (``report``, default ``out/REPORT.md``) and its PNGs (in ``out``) from every
    ``out/*.json``; returns what was written. Plot links are relative to the report's directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = Path(report) if report is not None else out / REPORT_NAME
    rel = os.path.relpath(out.resolve(), path.parent.resolve())
    prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
    plot = Plotter(out)
    stale = set(out.glob(f"{PLOT_PREFIX}*.png"))
    sections: list[Section] = []
    skipped: list[tuple[str, str]] = []
    for json_path in sorted(out.glob("*.json")):
        data, why = load(json_path)
        if data is None:
            skipped.append((json_path.name, why))
            continue
        try:
            sec = build_section(json_path, data, plot)
        except Exception as e:  # even the generic renderer failed: skip this file, keep the rest
            skipped.append((json_path.name, f"could not be rendered ({type(e).__name__}: {_cell(str(e))[:120]})"))
            continue
        sec.link_prefix = prefix
        sec.source = f"{prefix}{sec.source}"
        sections.append(sec)
    for p in stale - set(plot.written):  # plots of suites no longer present
        with contextlib.suppress(OSError):
            p.unlink()
    present = {p.stem for p in out.glob("*.json")}
    missing = [(name, why) for name, why in EXPECTED.items() if name not in present]
    text = render(sections, skipped, plot, missing=missing)
    atomic_write_text(path, text)
    return Report(path=path, sections=sections, skipped=skipped, plots=list(plot.written))


def default_report(out: Path) -> Path:
    """bench/REPORT.md for the default results directory, ``out/REPORT.md`` for any other."""
    return REPORT if Path(out).resolve() == OUT.resolve() else Path(out) / REPORT_NAME


def _header(sections: list[Section]) -> list[str]:
    """Commit, dates, machine, GPU and library versions, gathered from the sections' machine blocks."""
    ms = [s.raw_machine for s in sections if s.raw_machine]
    if not ms:
        return []

    def values(key: str) -> list[str]:
        return sorted({str(m[key]) for m in ms if m.get(key) not in (None, "")})

    when = values("when")
    gpus = values("gpu")
    quick = [s.suite for s in sections if s.raw_machine.get("quick") is True]
    rows = [["commit", ", ".join(values("commit")) or "not recorded"],
            ["run", f"{when[0]} .. {when[-1]}" if len(when) > 1 else (when[0] if when else "not recorded")],
            ["CPU", ", ".join(values("cpu")) or "not recorded"],
            ["cores", ", ".join(values("cores")) or "not recorded"],
            ["GPU", ", ".join(gpus) if gpus else "none (no NVIDIA driver: CPU figures only)"],
            ["mode", f"quick (`--quick`) for {', '.join(quick)}" if quick else "full"]]
    versions: dict[str, set[str]] = {}
    for m in ms:
        v = m.get("versions")
        if isinstance(v, dict):
            for lib, ver in v.items():
                versions.setdefault(str(lib), set()).add(str(ver))
    if not versions:  # older results: torch and Python only
        versions = {"python": set(values("python")), "torch": set(values("torch"))}
    rows.append(["libraries", ", ".join(f"{lib} {'/'.join(sorted(v))}" for lib, v in sorted(versions.items()) if v)])
    return ["| | |", "|---|---|", *[f"| {a} | {_cell(b)} |" for a, b in rows], ""]


def render(sections: list[Section], skipped: list[tuple[str, str]], plot: Plotter, *,
           missing: list[tuple[str, str]] | None = None) -> str:
    md = ["# pocv benchmark report", "",
          f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `pocv bench` (`python -m bench.report`) "
          f"from {len(sections) + len(skipped)} result file(s); every figure below is read from those files, none is "
          "typed by hand. Each section names the machine its figures came from; figures from different machines "
          "or runs are not comparable.", ""]
    md += _header(sections)
    for s in sections:
        if s.headline:
            md += [*s.headline, ""]
    if sections:
        md += ["| suite | machine | targets met | missed |", "|---|---|---:|---:|"]
        md += [f"| [{_cell(s.suite)}](#{_anchor(s.title or s.suite)}) | {s.machine} | {s.met} | {s.missed} |"
               for s in sections]
        md.append("")
    else:
        md += ["No benchmark results found: run `pocv bench` or `pytest bench --benchmark-only`.", ""]
    if plot.error:
        md += [f"> {plot.error}", ""]
    if skipped:
        md += ["Skipped files:", ""] + [f"- `{_cell(n)}`: {w}" for n, w in skipped] + [""]
    if missing and sections:
        md += ["Not measured in this run (no results file):", ""] + [f"- `{n}`: {w}" for n, w in missing] + [""]
    for s in sections:
        md.append(s.markdown())
    return "\n".join(md).rstrip() + "\n"


def _anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--out", type=Path, default=OUT,
                   help="directory of the suites' JSON and the plots (default bench/results; the report then goes to "
                        "bench/REPORT.md, otherwise into DIR)")
    p.add_argument("--output", choices=("text", "json"), default="text")
    args = p.parse_args(argv)
    try:
        report = generate(args.out, report=default_report(args.out))
    except (OSError, StorageError) as e:
        sys.stderr.write(f"bench.report: error: {e}\n")
        return 3
    if args.output == "json":
        print(json.dumps(report.summary(), indent=2))
    else:
        for n, w in report.skipped:
            sys.stderr.write(f"skipped {n}: {w}\n")
        print(report.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
