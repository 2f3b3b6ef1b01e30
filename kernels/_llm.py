"""The pure parts of ``hf-causal-lm`` (:mod:`pocv.kernels.causal_lm`): replayable sampling, the
per-position fingerprint and the one rule that judges a position, and how a step is computed
(:class:`Variant`). No model, no transformers and no registration here: tests of the rule import
this module alone."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Final

import numpy as np
import torch

from pocv.kernels._tolerance import U32
from pocv.kernels._util import seeded_bytes
from pocv.kernels.base import Comparison

_GUMBEL_CONTEXT: Final = "pocv 2026-11 hf-causal-lm v1 gumbel"
PAD: Final = -1  # a position not generated yet
STOPPED: Final = -2  # a position after its sequence's EOS token (jobs with stop_at_eos)
#: the token fed to the model in place of STOPPED (causal attention: no earlier position sees it)
FILL: Final = 0


@dataclasses.dataclass(frozen=True)
class Variant:
    """How a step is computed: the job's definition (the default), an honest alternative
    (calibration), or a cheat (the tests' dishonest workers)."""

    threads: int | None = None
    attn: str = "sdpa"  # "eager": the other attention implementation
    per_sequence: bool = False  # every sequence alone (batch of one, no padding)
    extra_pad: int = 0  # left padding beyond the longest prompt
    cache: bool = True  # reuse the KV cache of this process's previous step
    forced_fingerprints: bool = False  # fingerprints from a teacher-forced prefill over the new tokens
    dtype: str | None = None  # cheat: another precision than the ordered one
    quant: str = ""  # cheat: "int8" / "int4" weights, "noise:<rel>" noised weights
    model: str | None = None  # cheat: another model artifact
    sampling: tuple[float, int, float] | None = None  # cheat: other (temperature, top_k, top_p)
    window: int = 0  # cheat: attend to the last ``window`` tokens of the context only (no KV cache)
    stop_without_eos: int = -1  # cheat: sequence 0 stops (STOPPED) from this position on, no EOS before it


def gumbel(seed: int, sequence: int, position: int, vocab: int) -> np.ndarray[Any, Any]:
    """The Gumbel noise of one position: float64[vocab] from BLAKE3 keyed by (seed, sequence, position)."""
    raw = np.frombuffer(seeded_bytes(_GUMBEL_CONTEXT, seed, sequence, position, length=8 * vocab), "<u8")
    u = ((raw >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return np.asarray(-np.log(-np.log(u)))


def allowed(logits: np.ndarray[Any, Any], temperature: float, top_k: int, top_p: float,
            slack: float = 0.0, slack_p: float = 0.0) -> np.ndarray[Any, Any]:
    """The tokens the top-k then top-p filter keeps (bool[V]); ``slack`` > 0 loosens the logit
    thresholds (< 0 tightens them), ``slack_p`` moves top-p likewise."""
    v = logits.shape[-1]
    keep = np.ones(v, dtype=bool)
    if 0 < top_k < v:
        kth = np.partition(logits, v - top_k)[v - top_k]
        keep &= logits >= kth - slack
    p_eff = min(1.0, top_p + slack_p)
    if p_eff < 1.0:
        z = np.where(keep, logits / temperature, -np.inf)
        z = z - z.max()
        p = np.exp(z)
        p /= p.sum()
        order = np.argsort(-z, kind="stable")
        cum = np.cumsum(p[order])
        m = int(np.searchsorted(cum, max(p_eff, 0.0)))  # first index with cum >= p_eff
        thr = logits[order[min(m, v - 1)]]
        keep &= logits >= thr - slack
    return keep


def select(logits: np.ndarray[Any, Any], temperature: float, top_k: int, top_p: float,
           g: np.ndarray[Any, Any] | None) -> int:
    """The worker's choice at one position (logits float64[V])."""
    if temperature == 0.0 or g is None:
        return int(np.argmax(logits))
    keep = allowed(logits, temperature, top_k, top_p)
    return int(np.argmax(np.where(keep, logits / temperature + g, -np.inf)))


def _rms(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    out: np.ndarray[Any, Any] = np.sqrt(np.mean(np.square(x.astype(np.float64)), axis=-1))
    return out


@dataclasses.dataclass(frozen=True)
class Job:
    """The typed view of a job: prompts, sampling and sizes."""

    prompts: tuple[tuple[int, ...], ...]
    temperature: float
    top_k: int
    top_p: float
    block: int
    k: int
    n: int  # new tokens per sequence
    dtype: str
    model: str
    eos: frozenset[int] = frozenset()  # the model's EOS ids when the job stops at EOS, else empty

    @property
    def batch(self) -> int:
        return len(self.prompts)


def fingerprints(rows: np.ndarray[Any, Any], tokens: np.ndarray[Any, Any], k: int) -> dict[str, np.ndarray[Any, Any]]:
    """The fingerprint of each position from its logit row (float32[B, blk, V]) and chosen token."""
    t = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    vals, ids = torch.topk(t, k, dim=-1)
    live = tokens >= 0  # STOPPED positions: an all-zero fingerprint
    chosen = np.take_along_axis(rows, np.where(live, tokens, 0)[..., None].astype(np.int64), axis=-1)[..., 0]
    out = {"fp.topk_ids": ids.numpy().astype(np.int32), "fp.topk": vals.numpy().astype(np.float32),
           "fp.chosen": chosen.astype(np.float32), "fp.rms": _rms(rows).astype(np.float32)}
    for arr in out.values():
        arr[~live] = 0
    return out


def stop_layout(tokens: np.ndarray[Any, Any], filled: int, eos: frozenset[int]) -> str | None:
    """Why the first ``filled`` generated tokens of each sequence (int[B, N]) break the stop rule, or
    None: without EOS stop (``eos`` empty) no position is STOPPED; with it, every position after a
    sequence's first EOS token is STOPPED and a STOPPED position follows an EOS token or another
    STOPPED one (so a worker cannot end a sequence without the EOS the model chose)."""
    head = tokens[:, :filled]
    for b in range(head.shape[0]):
        row = head[b]
        stopped = np.nonzero(row == STOPPED)[0]
        if not eos:
            if stopped.size:
                return (f"sequence {b} position {int(stopped[0])}: token {STOPPED} (stopped) in a job that does "
                        f"not stop at EOS")
            continue
        ends = np.nonzero(np.isin(row, list(eos)))[0]
        first = int(ends[0]) + 1 if ends.size else filled  # where the sequence must be stopped from
        if stopped.size and int(stopped[0]) < first:
            return (f"sequence {b} position {int(stopped[0])}: stopped (token {STOPPED}) without an EOS token "
                    f"({sorted(eos)}) before it")
        if not (row[first:] == STOPPED).all():
            q = first + int(np.argmax(row[first:] != STOPPED))
            return (f"sequence {b} position {q}: token {int(row[q])} after the EOS token at position "
                    f"{first - 1}: a job with stop_at_eos ends the sequence there (expected {STOPPED})")
    return None


def token_verdict(row: np.ndarray[Any, Any], c: int, noise: float, seed: int, b: int, pos: int,
                  j: Job) -> Comparison | None:
    """Rule (2) at one position: None when claimed token ``c`` is the one the verifier's logit row
    (float64[V]) selects within the position's noise ``noise``, else the failing Comparison."""
    where = f"sequence {b} position {pos}"
    if j.temperature == 0.0:
        margin = float(row.max() - row[c])
        if margin > 2 * noise:
            return Comparison(False, f"{where}: claimed token {c}, the verifier's logits select "
                                     f"{int(np.argmax(row))} (margin {margin:.3e} > noise {2 * noise:.3e})",
                              worst_ratio=margin / (2 * noise))
        return None
    t = j.temperature
    eta = min(1.0, math.expm1(4 * noise / t))
    loose = allowed(row, t, j.top_k, j.top_p, 2 * noise, eta)
    if not loose[c]:
        return Comparison(False, f"{where}: claimed token {c} is outside the top-k/top-p filter "
                                 f"(top_k={j.top_k}, top_p={j.top_p})", worst_ratio=math.inf)
    strict = allowed(row, t, j.top_k, j.top_p, -2 * noise, -eta)
    score = row / t + gumbel(seed, b, pos, row.shape[-1])
    best = float(np.max(np.where(strict, score, -np.inf)))
    margin = best - float(score[c])
    if margin > 2 * noise / t:
        return Comparison(False, f"{where}: claimed token {c}, the replayed sampling selects "
                                 f"{int(np.argmax(np.where(strict, score, -np.inf)))} (score margin "
                                 f"{margin:.3e} > noise {2 * noise / t:.3e})", worst_ratio=margin / (2 * noise / t))
    return None


def position_noise(e: np.ndarray[Any, Any], tau: float, floor: float) -> np.ndarray[Any, Any]:
    """The noise B of each position from the verifier's logit rows float64[..., V]."""
    out: np.ndarray[Any, Any] = tau * U32 * (np.abs(e).max(axis=-1) + _rms(e)) + floor
    return out


def judge_positions(e32: np.ndarray[Any, Any], claimed: np.ndarray[Any, Any], fp: dict[str, np.ndarray[Any, Any]],
                    seed: int, n: int, j: Job, tau: float, floor: float) -> Comparison:
    """The rule (module docstring) over one block: ``e32`` the verifier's logit rows float32[B, blk, V],
    ``claimed`` the claimed tokens int[B, blk], ``fp`` the claimed fingerprint tensors."""
    e = e32.astype(np.float64)
    vocab = e.shape[-1]
    rms = _rms(e)
    big = position_noise(e, tau, floor)
    worst = 0.0
    ids, vals = fp["fp.topk_ids"].astype(np.int64), fp["fp.topk"].astype(np.float64)
    chosen, crms = fp["fp.chosen"].astype(np.float64), fp["fp.rms"].astype(np.float64)
    for name, arr in (("fp.topk", vals), ("fp.chosen", chosen), ("fp.rms", crms)):
        if not np.isfinite(arr).all():
            return Comparison(False, f"fingerprint {name} holds NaN or infinity", bad_state=True)
    if ((ids < 0) | (ids >= vocab)).any():
        return Comparison(False, f"fingerprint top-k ids must be token ids in 0..{vocab - 1}", bad_state=True)
    kk = ids.shape[-1]
    for b in range(e.shape[0]):
        for p in range(e.shape[1]):
            where = f"sequence {b} position {n + p}"
            row, c, noise = e[b, p], int(claimed[b, p]), float(big[b, p])
            if c == STOPPED:  # after the sequence's EOS (the layout is checked by the caller)
                if ids[b, p].any() or vals[b, p].any() or chosen[b, p] != 0 or crms[b, p] != 0:
                    return Comparison(False, f"{where}: stopped (after EOS), its fingerprint must be all zero",
                                      bad_state=True)
                continue
            if not 0 <= c < vocab:
                return Comparison(False, f"{where}: token {c} is not an id in 0..{vocab - 1}", bad_state=True)
            # (2) the token
            bad = token_verdict(row, c, noise, seed, b, n + p, j)
            if bad is not None:
                return bad
            # (3) the fingerprint
            if len(set(ids[b, p].tolist())) != kk:
                return Comparison(False, f"{where}: fingerprint top-k ids repeat", bad_state=True)
            r = float(rms[b, p])
            checks = ((chosen[b, p], row[c], "chosen-token logit"), (crms[b, p], r, "logit rms"))
            for got, want, what in checks:
                lim = tau * U32 * ((abs(want) + r) if what != "logit rms" else 2 * r) + floor
                ratio = abs(got - want) / lim
                worst = max(worst, ratio)
                if ratio > 1.0:
                    return Comparison(False, f"{where}: fingerprint {what} {got:.6g}, recomputed {want:.6g} "
                                             f"(|diff| {abs(got - want):.3e} > bound {lim:.3e}, tau={tau:g})",
                                      worst_ratio=ratio)
            want_v = row[ids[b, p]]
            lim_v = tau * U32 * (np.abs(want_v) + r) + floor
            ratio_v = np.abs(vals[b, p] - want_v) / lim_v
            q = int(np.argmax(ratio_v))
            worst = max(worst, float(ratio_v[q]))
            if ratio_v[q] > 1.0:
                return Comparison(False, f"{where}: fingerprint top-{q + 1} logit of token {int(ids[b, p, q])} "
                                         f"{vals[b, p, q]:.6g}, recomputed {want_v[q]:.6g} (|diff| "
                                         f"{abs(vals[b, p, q] - want_v[q]):.3e} > bound {lim_v[q]:.3e}, tau={tau:g})",
                                  worst_ratio=float(ratio_v[q]))
            kth = float(np.partition(row, vocab - kk)[vocab - kk])
            if float(want_v.min()) < kth - 2 * noise:
                return Comparison(False, f"{where}: fingerprint top-k ids are not the verifier's top {kk} "
                                         f"(token {int(ids[b, p, int(np.argmin(want_v))])} has logit "
                                         f"{float(want_v.min()):.6g} < {kth:.6g})", worst_ratio=math.inf)
    return Comparison(True, worst_ratio=float(worst))


def needed_tau(e32: np.ndarray[Any, Any], tokens: np.ndarray[Any, Any], fp: dict[str, np.ndarray[Any, Any]],
               seed: int, n: int, j: Job) -> np.ndarray[Any, Any]:
    """Per position (float64[B, blk]), the smallest tau under which :func:`judge_positions` accepts the
    claimed token's decision margin and fingerprint values against the verifier's rows ``e32``
    (the floor aside; filter membership is not included)."""
    e = e32.astype(np.float64)
    vocab = e.shape[-1]
    rms = _rms(e)
    big = U32 * (np.abs(e).max(axis=-1) + rms)
    live = tokens >= 0  # STOPPED positions need nothing
    tok = np.where(live, tokens, 0).astype(np.int64)
    at = np.take_along_axis(e, tok[..., None], axis=-1)[..., 0]
    if j.temperature == 0.0:
        margin = e.max(axis=-1) - at
    else:
        margin = np.zeros(tok.shape)
        for b in range(e.shape[0]):
            for p in range(e.shape[1]):
                if not live[b, p]:
                    continue
                keep = allowed(e[b, p], j.temperature, j.top_k, j.top_p)
                score = e[b, p] / j.temperature + gumbel(seed, b, n + p, vocab)
                margin[b, p] = (float(np.max(np.where(keep, score, -np.inf))) - score[tok[b, p]]) * j.temperature
    need = np.maximum(margin, 0.0) / (2 * big)
    need = np.maximum(need, np.abs(fp["fp.chosen"] - at) / (U32 * (np.abs(at) + rms)))
    need = np.maximum(need, np.abs(fp["fp.rms"] - rms) / (U32 * 2 * rms))
    ev = np.take_along_axis(e, fp["fp.topk_ids"].astype(np.int64), axis=-1)
    need = np.maximum(need, (np.abs(fp["fp.topk"] - ev) / (U32 * (np.abs(ev) + rms[..., None]))).max(axis=-1))
    out: np.ndarray[Any, Any] = np.where(live, need, 0.0)
    return out


__all__ = ["FILL", "PAD", "STOPPED", "Job", "Variant", "allowed", "fingerprints", "gumbel", "judge_positions",
           "needed_tau", "position_noise", "select", "stop_layout", "token_verdict"]
