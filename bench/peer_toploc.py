"""TOPLOC beside pocv on the same transformer-decode job: bytes, validation time, detection.

TOPLOC (PrimeIntellect; ``toploc`` 0.1.6 on PyPI; arXiv 2501.16007) commits to the top-k values of
the last hidden activations of each chunk of ``decode_batching_size`` generated tokens (a polynomial
through the points (flat index, bf16 bits), 258 bytes a chunk at top-128) and validates by
recomputing the activations with a prefill over the generated tokens, then comparing the exponents
and mantissas of the recomputed top-k values with the committed ones within thresholds. pocv
commits to every state of the job (a signed BLAKE3 Merkle root) and validates by recomputing a few
challenged steps within the kernel's calibrated tolerance. Both answer "did this worker run this
model at this precision?"; here both run on one job of the ``transformer-decode`` kernel:

* the activations TOPLOC commits to are the input of the unembedding, ``rmsnorm(h)`` (the final-norm
  output that TOPLOC's vLLM hook reads), one vector per generated token per sequence. The kernel does
  not expose them; they are captured from the kernel's own ``_decode`` through its ``mm`` argument
  (the product whose right operand is the unembedding), so the states pocv commits and the
  activations TOPLOC commits come from one and the same run of the worker (a
  :class:`verifier.Prover` whose ``_step`` records them);
* TOPLOC's validator recomputes the activations with :func:`prefill_hidden` (all positions at once,
  causal sliding-window ALiBi attention, the kernel's weights and ``_rmsnorm``), as TOPLOC's
  validators do with a prefill; the figure "teacher-forced decode" recomputes them with the
  kernel's own ``_decode`` instead, the path pocv's verifier takes;
* the worker's cheats: another model of the same architecture (weights of another seed, with the
  job's prompt and sampling noise), and matmuls at lower precision (the kernel's
  ``downgrade_variants``: tf32, fp16, bf16; checked bit for bit against them in trial 0).

TOPLOC takes 16-bit values only (bf16 here; float32 activations give all-zero proofs and a log
line, not an error), and ``build_proofs`` turns any exception into null proofs, so
:func:`toploc_proofs` refuses a null proof. Accept thresholds are the caller's: the authors'
validation script (``vllm_validate_poly.py``) passes a chunk when the mantissa error mean is <= 10,
the median <= 8 and at least 90 of the 128 top-k exponents match.

    pytest bench/test_bench_toploc.py --benchmark-only -s      (needs pip install -e '.[bench]')

bench/test_bench_llm.py reuses :func:`toploc_proofs`, :func:`toploc_verify` and :func:`toploc_judge`
(they take any activations float32[B, T, d]) for ``hf-causal-lm``: there the activations are the
input of the model's output layer, captured with a forward pre-hook during the worker's own decode
and during the verifier's prefill.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.report import Figure, Plotter, Section, fmt, grouped_bars, table
from pocv.kernels import kernel_for, resolve_spec

KERNEL = "transformer-decode"
#: TOPLOC's parameters as its authors use them (README: "258 bytes per 32 new tokens"; top-128)
TOPK = 128
DECODE_BATCHING_SIZE = 32
#: accept thresholds of the authors' validation script (vllm_validate_poly.py: TMEAN, TMEDIAN, TEXP)
MANT_MEAN_MAX = 10.0
MANT_MEDIAN_MAX = 8.0
EXP_MATCH_MIN = 90
#: the swapped model: weights of seed + this, everything else (prompt, sampling noise) of the job's seed
SWAP_SEED_OFFSET = 10_000
#: TOPLOC's ProofPoly reduces indices modulo a prime below 65,497: a chunk must hold fewer values
MAX_CHUNK_VALUES = 32_768
#: attention scores held by one prefill: B * heads * T * T floats
MAX_PREFILL_SCORES = 64 * 1024 * 1024
#: torch threads for every measurement, both sides alike: the products are small (16 x 128 x 384),
#: a second thread gains nothing, and on shared cores each two-thread product can wait a scheduler
#: quantum for its partner (measured here under load: 12-20 ms a step at 1 thread, 40 ms - 4 s at 2)
THREADS = 1
#: the beacon of the challenge whose bytes and time are measured: fixed, so the opened states (and with
#: them the response size, which depends on whether challenged steps are adjacent) repeat run to run
MEASURE_BEACON = hashlib.sha256(b"pocv bench toploc: measured challenge").digest()

CHEATS = ("honest", "honest-f64", "swapped-model", "tf32", "fp16", "bf16")
CHEAT_TEXT = {
    "honest": "the job's model in float32 (TOPLOC and pocv should both accept)",
    "honest-f64": "the kernel's reference_step: the model in float64, rounded once (another honest implementation)",
    "swapped-model": f"same architecture, weights of seed + {SWAP_SEED_OFFSET:,}",
    "tf32": "every matmul with TF32-rounded inputs",
    "fp16": "every matmul in float16",
    "bf16": "every matmul in bfloat16",
}

MatMul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Config:
    params: dict[str, int]
    steps: int
    trials: int
    repeats: int
    k: int  # steps pocv challenges per job
    seed: int = 1


def config(quick: bool) -> Config:
    """Sizes: the kernel's default model (width 128, depth 2, 16 sequences, context 64, chunk 16)."""
    params = {"width": 128, "depth": 2, "batch": 16, "context": 64, "chunk": 16}
    if quick:
        return Config(params=params, steps=4, trials=2, repeats=3, k=2)
    return Config(params=params, steps=16, trials=8, repeats=5, k=2)


def _spec(cfg: Config, seed: int) -> Any:
    from pocv import JobSpec

    return resolve_spec(JobSpec(kernel=KERNEL, steps=cfg.steps, seed=seed, params=dict(cfg.params)))


def _best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# -- the worker -----------------------------------------------------------------------------------


def _cheat_kernel_and_mm(cheat: str) -> tuple[Any, MatMul, torch.dtype]:
    """The kernel object, matmul and compute dtype a worker running ``cheat`` uses."""
    from pocv.kernels import get_kernel
    from pocv.kernels._tolerance import round_tf32
    from pocv.kernels.transformer_decode import TransformerDecode

    honest = get_kernel(KERNEL)
    if cheat == "honest":
        return honest, lambda a, b: a @ b, torch.float32
    if cheat == "honest-f64":
        return honest, lambda a, b: a @ b, torch.float64
    if cheat == "swapped-model":

        class _SwappedModel(TransformerDecode):  # not registered: only this worker runs it
            def weights(self, spec: Any) -> Any:
                return super().weights(dataclasses.replace(spec, seed=spec.seed + SWAP_SEED_OFFSET))

        return _SwappedModel(), lambda a, b: a @ b, torch.float32
    # the same products as TransformerDecode.downgrade_variants (checked bit for bit in trial 0)
    mms: dict[str, MatMul] = {
        "tf32": lambda a, b: round_tf32(a) @ round_tf32(b),
        "bf16": lambda a, b: (a.bfloat16() @ b.bfloat16()).float(),
        "fp16": lambda a, b: (a.half() @ b.half()).float(),
    }
    return honest, mms[cheat], torch.float32


def decode_step(kernel: Any, mm: MatMul, state: Any, spec: Any, forced: torch.Tensor | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[dict[str, Any], torch.Tensor]:
    """One step of the kernel's own ``_decode``; returns (new state, hidden float32[B, chunk, d]):
    the left operand of each product with the unembedding, i.e. ``rmsnorm(h)`` of each token."""
    unembed = kernel.weights(spec).to("cpu", dtype).unembed
    hidden: list[torch.Tensor] = []

    def recording(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if b is unembed:
            hidden.append(a.detach().float().clone())
        return mm(a, b)

    new, _ = kernel._decode(state, spec, "cpu", dtype=dtype, mm=recording, forced=forced)
    chunk = int(spec.params["chunk"])
    if len(hidden) != chunk:
        raise RuntimeError(f"captured {len(hidden)} final activations in a step of {chunk} tokens: "
                           "transformer-decode's _decode no longer multiplies by the unembedding once a token")
    return new, torch.stack(hidden, 1)


@dataclass
class Job:
    """One worker's run of a job: pocv's commitment and trace, TOPLOC's activations, the tokens."""

    spec: Any
    cheat: str
    prover: Any
    commitment: Any
    workdir: Path
    states: list[dict[str, Any]]  # s_0 .. s_n as the worker computed them
    hidden: torch.Tensor  # float32[B, T, d]: activation of each processed position
    tokens: torch.Tensor  # int64[B, T + 1]: the sequence (positions 0..T), the worker's output
    run_s: float
    storage_bytes: int  # the worker's trace directory after the run

    @property
    def tokens_per_job(self) -> int:
        return int(self.hidden.shape[0] * self.hidden.shape[1])

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_job(spec: Any, cheat: str, key: Any | None = None) -> Job:
    """Run ``spec`` as a worker doing ``cheat``, through pocv's Prover (commit) while recording
    the activations TOPLOC would commit to."""
    from solders.keypair import Keypair

    from pocv import Prover

    kernel, mm, dtype = _cheat_kernel_and_mm(cheat)
    record: list[tuple[dict[str, Any], torch.Tensor]] = []
    recording = [True]

    class _WorkerProver(Prover):
        def _step(self, _kernel: Any, state: Any, i: int, spec_: Any, device: str) -> dict[str, Any]:
            new, hidden = decode_step(kernel, mm, state, spec_, dtype=dtype)
            if recording[0]:
                record.append((new, hidden))
            return new

    workdir = Path(tempfile.mkdtemp(prefix="pocv-toploc-"))
    try:
        prover = _WorkerProver(trace_dir=workdir / "trace", key=key or Keypair())
        t0 = time.perf_counter()
        commitment = prover.run(spec)
        run_s = time.perf_counter() - t0
        recording[0] = False  # respond() recomputes from checkpoints: not part of the run
        if len(record) != spec.steps:
            raise RuntimeError(f"recorded {len(record)} steps of {spec.steps}")
        s0 = kernel_for(spec).init_state(spec)
        states = [s0] + [s for s, _ in record]
        hidden = torch.cat([h for _, h in record], 1)
        ctx, chunk = int(spec.params["context"]), int(spec.params["chunk"])
        seq = [s0["tokens"][:, 0]]
        for i, st in enumerate(states[1:]):
            for p in range(i * chunk + 1, (i + 1) * chunk + 1):  # generated in step i + 1
                seq.append(st["tokens"][:, p % ctx])
        storage = sum(f.stat().st_size for f in (workdir / "trace").rglob("*") if f.is_file())
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Job(spec=spec, cheat=cheat, prover=prover, commitment=commitment, workdir=workdir, states=states,
               hidden=hidden, tokens=torch.stack(seq, 1), run_s=run_s, storage_bytes=storage)


# -- TOPLOC ---------------------------------------------------------------------------------------


def toploc_proofs(hidden: torch.Tensor) -> list[list[bytes]]:
    """TOPLOC's proofs, one list per sequence (skip_prefill: the job has no prompt beyond s_0's token)."""
    import toploc

    if hidden.shape[-1] * DECODE_BATCHING_SIZE >= MAX_CHUNK_VALUES:
        raise ValueError(f"a TOPLOC chunk of {DECODE_BATCHING_SIZE} x {hidden.shape[-1]} values exceeds "
                         f"{MAX_CHUNK_VALUES}: its index modulus would not be injective")
    null = toploc.ProofPoly.null(TOPK).to_bytes()
    out = []
    for b in range(hidden.shape[0]):
        acts = list(hidden[b].to(torch.bfloat16).unbind(0))
        proofs = toploc.build_proofs_bytes(acts, decode_batching_size=DECODE_BATCHING_SIZE, topk=TOPK,
                                           skip_prefill=True)
        if any(p == null for p in proofs):  # build_proofs swallows errors into null proofs
            raise RuntimeError(f"toploc returned a null proof for sequence {b} (see its log)")
        out.append(proofs)
    return out


def toploc_verify(recomputed: torch.Tensor, proofs: list[list[bytes]]) -> list[Any]:
    """TOPLOC's comparison of recomputed activations float32[B, T, d] with the proofs (C++ path)."""
    import toploc

    results = []
    for b, seq_proofs in enumerate(proofs):
        acts = recomputed[b].to(torch.bfloat16).contiguous()
        results += toploc.verify_proofs_bytes(acts, seq_proofs, decode_batching_size=DECODE_BATCHING_SIZE,
                                              topk=TOPK, skip_prefill=True)
    return results


def toploc_judge(results: list[Any]) -> dict[str, Any]:
    """The authors' thresholds per chunk; ``worst_ratio`` > 1 means some chunk fails."""
    exp_fail_at = TOPK - EXP_MATCH_MIN  # more mismatches than this fails
    ratios, failed = [], 0
    for r in results:
        ratio = max(r.mant_err_mean / MANT_MEAN_MAX, r.mant_err_median / MANT_MEDIAN_MAX,
                    r.exp_mismatches / max(exp_fail_at, 1) if r.exp_mismatches else 0.0)
        ok = (TOPK - r.exp_mismatches >= EXP_MATCH_MIN and r.mant_err_mean <= MANT_MEAN_MAX
              and r.mant_err_median <= MANT_MEDIAN_MAX)
        failed += not ok
        ratios.append(min(ratio, 1e6))  # 2**64 marks "no exponent matched"
    return {"passed": failed == 0, "chunks": len(results), "chunks_failed": failed,
            "worst_ratio": max(ratios, default=0.0),
            "max_exp_mismatches": max((r.exp_mismatches for r in results), default=0),
            "max_mant_err_mean": min(max((r.mant_err_mean for r in results), default=0.0), 1e6)}


def prefill_hidden(spec: Any, tokens: torch.Tensor) -> torch.Tensor:
    """The validator's recompute: final activations float32[B, T, d] of the honest model for inputs
    int64[B, T], all positions at once. Same model as transformer-decode's ``_decode`` (the kernel's
    weights, ``_rmsnorm``, heads of ``HEAD_DIM``, ALiBi slopes 2^-(h+1), a window of ``context``
    positions), computed as one prefill."""
    from pocv.kernels.transformer_decode import HEAD_DIM, _rmsnorm

    kernel = kernel_for(spec)
    w = kernel.weights(spec)
    b, t = tokens.shape
    d = int(spec.params["width"])
    heads, ctx = d // HEAD_DIM, int(spec.params["context"])
    if b * heads * t * t > MAX_PREFILL_SCORES:
        raise ValueError(f"prefill of {b} x {t} tokens needs {b * heads * t * t:,} attention scores, "
                         f"over {MAX_PREFILL_SCORES:,}")
    pos = torch.arange(t)
    dist = pos[:, None] - pos[None, :]  # query - key
    valid = (dist >= 0) & (dist < ctx)
    slopes = torch.tensor([2.0 ** -(hh + 1) for hh in range(heads)])
    bias = (-slopes[:, None, None] * dist[None].float()).masked_fill(~valid[None], float("-inf"))
    h = w.embed[tokens]
    scale = 1.0 / math.sqrt(HEAD_DIM)
    for wqkv, wo, w1, w2 in w.layers:
        x = _rmsnorm(h)
        qkv = (x @ wqkv).view(b, t, 3, heads, HEAD_DIM)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        att = torch.softmax(torch.einsum("bthd,bshd->bhts", q, k) * scale + bias[None], dim=-1)
        h = h + torch.einsum("bhts,bshd->bthd", att, v).reshape(b, t, d) @ wo
        x = _rmsnorm(h)
        h = h + torch.relu(x @ w1) @ w2
    return _rmsnorm(h)


def forced_decode_hidden(spec: Any, tokens: torch.Tensor) -> torch.Tensor:
    """The same activations recomputed with the honest kernel's own ``_decode``, teacher-forced
    with the worker's tokens int64[B, T + 1], step by step from s_0 (pocv's verifier's path)."""
    kernel = kernel_for(spec)
    chunk = int(spec.params["chunk"])
    state: Any = kernel.init_state(spec)
    out = []
    for i in range(spec.steps):
        forced = tokens[:, i * chunk + 1 : (i + 1) * chunk + 1].T.contiguous()
        state, hidden = decode_step(kernel, lambda a, b: a @ b, state, spec, forced=forced)
        out.append(hidden)
    return torch.cat(out, 1)


def toploc_validate(spec: Any, job: Job, proofs: list[list[bytes]]) -> dict[str, Any]:
    """What a TOPLOC validator does with a worker's output and proofs: prefill, compare, judge."""
    recomputed = prefill_hidden(spec, job.tokens[:, :-1])
    return toploc_judge(toploc_verify(recomputed, proofs))


# -- pocv -----------------------------------------------------------------------------------------


def pocv_challenge(job: Job, k: int, verifier_key: Any, beacon: bytes | None = None) -> tuple[Any, Any, bytes]:
    """(verifier, challenge, response bytes) for k steps drawn from ``beacon`` (default: a fresh one)."""
    from pocv import Verifier

    verifier = Verifier(key=verifier_key)
    challenge = verifier.challenge(job.commitment, beacon=beacon or secrets.token_bytes(32), k=k, cheat_fraction=0.1)
    response = job.prover.respond(challenge).to_bytes()
    return verifier, challenge, response


# -- measurements ---------------------------------------------------------------------------------


def measure_bytes(cfg: Config, job: Job) -> dict[str, Any]:
    from solders.keypair import Keypair

    from pocv.encoding import encode_state

    proofs = toploc_proofs(job.hidden)
    b, t = job.hidden.shape[:2]
    toploc_bytes = sum(len(p) for seq in proofs for p in seq)
    _, challenge, response = pocv_challenge(job, cfg.k, Keypair(), MEASURE_BEACON)
    chunk = int(job.spec.params["chunk"])
    checked_tokens = challenge.k * chunk * b
    commitment_json = len(job.commitment.to_json().encode())
    root_sig = len(job.commitment.root) + len(job.commitment.signature)
    state_bytes = len(encode_state(job.states[0]))
    out = {
        "tokens_per_job": b * t, "sequences": b, "tokens_per_sequence": t,
        "toploc_proofs": sum(len(seq) for seq in proofs), "toploc_proof_bytes": toploc_bytes,
        "toploc_bytes_per_token": toploc_bytes / (b * t),
        "pocv_commitment_json_bytes": commitment_json, "pocv_root_signature_bytes": root_sig,
        "pocv_commitment_bytes_per_token": commitment_json / (b * t),
        "pocv_root_signature_bytes_per_token": root_sig / (b * t),
        "pocv_k": challenge.k, "pocv_opened_states": len(set((0, *[j for i in challenge.indices for j in (i - 1, i)]))),
        "pocv_state_bytes": state_bytes, "pocv_response_bytes": len(response),
        "pocv_checked_tokens": checked_tokens,
        "pocv_response_bytes_per_checked_token": len(response) / checked_tokens,
        "pocv_worker_storage_bytes": job.storage_bytes,
        "pocv_worker_storage_bytes_per_token": job.storage_bytes / (b * t),
    }
    out["ratios"] = {
        # > 1: TOPLOC sends more to commit; the one ratio pocv wins on bytes
        "commitment_toploc_over_pocv": out["toploc_bytes_per_token"] / out["pocv_commitment_bytes_per_token"],
        # > 1: pocv needs more bytes from the worker per token it checks (pocv loses)
        "check_bytes_pocv_over_toploc": out["pocv_response_bytes_per_checked_token"] / out["toploc_bytes_per_token"],
        # > 1: the pocv worker keeps more on disk per token than TOPLOC's proofs (pocv loses)
        "storage_pocv_over_toploc": out["pocv_worker_storage_bytes_per_token"] / out["toploc_bytes_per_token"],
    }
    return out


def measure_time(cfg: Config, job: Job) -> dict[str, Any]:
    """Per-token costs, each pair measured interleaved in this run (best of ``cfg.repeats``)."""
    from solders.keypair import Keypair

    from pocv.encoding import state_digest

    spec = job.spec
    kernel = kernel_for(spec)
    b, t = job.hidden.shape[:2]
    chunk = int(spec.params["chunk"])
    proofs = toploc_proofs(job.hidden)
    inputs = job.tokens[:, :-1]
    verifier, challenge, response = pocv_challenge(job, cfg.k, Keypair(), MEASURE_BEACON)
    first = challenge.indices[0]
    prev, claimed = job.states[first - 1], job.states[first]
    assert verifier.check(job.commitment, challenge, response).passed
    checked_tokens = challenge.k * chunk * b
    times: dict[str, list[float]] = {n: [] for n in ("prefill", "toploc_verify", "pocv_check", "pocv_verify_step",
                                                     "toploc_build", "pocv_hash")}
    recomputed = prefill_hidden(spec, inputs)
    for _ in range(cfg.repeats):  # interleaved, so drift on the shared cores hits both sides alike
        for name, fn in (("prefill", lambda: prefill_hidden(spec, inputs)),
                         ("toploc_verify", lambda: toploc_verify(recomputed, proofs)),
                         ("pocv_check", lambda: verifier.check(job.commitment, challenge, response)),
                         ("pocv_verify_step", lambda: kernel.verify_step(prev, claimed, first, spec)),
                         ("toploc_build", lambda: toploc_proofs(job.hidden)),
                         ("pocv_hash", lambda: [state_digest(s) for s in job.states[1:]])):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    best = {n: min(v) for n, v in times.items()}
    forced_s = _best(lambda: forced_decode_hidden(spec, job.tokens), min(cfg.repeats, 2))
    bare_s = _best(lambda: _bare_decode(spec), min(cfg.repeats, 2))
    forced = forced_decode_hidden(spec, job.tokens)
    agree = prefill_hidden(spec, inputs)
    n_tok = b * t
    us = 1e6
    out = {
        "tokens_per_job": n_tok, "pocv_checked_tokens": checked_tokens, "pocv_k": challenge.k,
        "repeats": cfg.repeats,
        "toploc_prefill_us_per_token": best["prefill"] / n_tok * us,
        "toploc_verify_call_us_per_token": best["toploc_verify"] / n_tok * us,
        "toploc_validate_us_per_token": (best["prefill"] + best["toploc_verify"]) / n_tok * us,
        "toploc_forced_decode_us_per_token": forced_s / n_tok * us,
        "toploc_validate_forced_decode_us_per_token": (forced_s + best["toploc_verify"]) / n_tok * us,
        "pocv_check_us_per_token": best["pocv_check"] / checked_tokens * us,
        "pocv_verify_step_us_per_token": best["pocv_verify_step"] / (chunk * b) * us,
        "toploc_build_us_per_token": best["toploc_build"] / n_tok * us,
        "pocv_hash_us_per_token": best["pocv_hash"] / n_tok * us,
        "decode_us_per_token": bare_s / n_tok * us,
        "prefill_vs_decode_max_rel_diff": float((agree - job.hidden).abs().max() / job.hidden.abs().max()),
        "prefill_vs_decode_bf16_mismatch_fraction": float(
            (agree.to(torch.bfloat16) != job.hidden.to(torch.bfloat16)).float().mean()),
        "forced_decode_equals_run": bool(torch.equal(forced, job.hidden)),
        "samples_s": times,
    }
    out["ratios"] = {
        # > 1: pocv's verifier spends more per checked token than TOPLOC's validator (pocv loses)
        "validate_pocv_over_toploc": out["pocv_check_us_per_token"] / out["toploc_validate_us_per_token"],
        # the same with TOPLOC recomputing through the kernel's decode loop, as pocv does
        "validate_pocv_over_toploc_forced_decode":
            out["pocv_check_us_per_token"] / out["toploc_validate_forced_decode_us_per_token"],
        # worker-side cost of committing, per token: pocv hashes states, TOPLOC builds proofs
        "commit_work_pocv_over_toploc": out["pocv_hash_us_per_token"] / out["toploc_build_us_per_token"],
        "toploc_build_over_decode": out["toploc_build_us_per_token"] / out["decode_us_per_token"],
        "pocv_hash_over_decode": out["pocv_hash_us_per_token"] / out["decode_us_per_token"],
    }
    return out


def _bare_decode(spec: Any) -> None:
    kernel = kernel_for(spec)
    s: Any = kernel.init_state(spec)
    for i in range(1, spec.steps + 1):
        s = kernel.step(s, i, spec)


def _states_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[n]), torch.as_tensor(b[n])) for n in a)


def measure_detection(cfg: Config, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``cfg.trials`` jobs (seeds cfg.seed + 100 + trial), each run honestly and with every cheat;
    TOPLOC validates every token, pocv challenges ``cfg.k`` steps."""
    from solders.keypair import Keypair

    rows: dict[str, dict[str, Any]] = {
        c: {"cheat": c, "what": CHEAT_TEXT[c], "trials": 0, "toploc_flagged": 0, "pocv_failed": 0,
            "toploc_worst_ratio": [], "toploc_chunks_failed_fraction": [], "pocv_worst_ratio": [],
            "tokens_changed_fraction": [], "toploc_max_exp_mismatches": [], "toploc_max_mant_err_mean": [],
            "matches_kernel": None, "pocv_reasons": []}
        for c in CHEATS}
    worker, vkey = Keypair(), Keypair()
    for trial in range(cfg.trials):
        spec = _spec(cfg, cfg.seed + 100 + trial)
        kernel = kernel_for(spec)
        honest_tokens: torch.Tensor | None = None
        for cheat in CHEATS:
            job = run_job(spec, cheat, worker)
            try:
                row = rows[cheat]
                row["trials"] += 1
                if honest_tokens is None:
                    honest_tokens = job.tokens
                row["tokens_changed_fraction"].append(float((job.tokens != honest_tokens).float().mean()))
                if trial == 0:  # the cheat is the kernel's own step / downgrade variant, bit for bit
                    if cheat == "honest":
                        row["matches_kernel"] = _states_equal(kernel.step(job.states[0], 1, spec), job.states[1])
                    elif cheat == "honest-f64":
                        ref = kernel.reference_step(job.states[0], 1, spec)
                        row["matches_kernel"] = _states_equal(ref, job.states[1])
                    elif cheat in kernel.downgrade_variants():
                        ref = kernel.downgrade_variants()[cheat](job.states[0], 1, spec)
                        row["matches_kernel"] = _states_equal(ref, job.states[1])
                judged = toploc_validate(spec, job, toploc_proofs(job.hidden))
                row["toploc_flagged"] += not judged["passed"]
                row["toploc_worst_ratio"].append(judged["worst_ratio"])
                row["toploc_chunks_failed_fraction"].append(judged["chunks_failed"] / judged["chunks"])
                row["toploc_max_exp_mismatches"].append(judged["max_exp_mismatches"])
                row["toploc_max_mant_err_mean"].append(judged["max_mant_err_mean"])
                verifier, challenge, response = pocv_challenge(job, cfg.k, vkey)
                verdict = verifier.check(job.commitment, challenge, response)
                row["pocv_failed"] += not verdict.passed
                if not verdict.passed and len(row["pocv_reasons"]) < 2:
                    o = next(o for o in verdict.outcomes if not o.ok)
                    row["pocv_reasons"].append(f"{o.reason}: {o.detail}"[:200])
                first = challenge.indices[0]
                cmp = kernel.verify_step(job.states[first - 1], job.states[first], first, spec)
                row["pocv_worst_ratio"].append(cmp.worst_ratio if cmp.worst_ratio else (0.0 if cmp.ok else math.inf))
            finally:
                job.close()
            if progress is not None:
                progress(f"trial {trial + 1}/{cfg.trials} {cheat}: TOPLOC {'PASS' if judged['passed'] else 'FLAG'} "
                         f"(worst {judged['worst_ratio']:.3g}), pocv {'PASS' if verdict.passed else 'FAIL'}")
    out_rows = []
    for row in rows.values():
        r = dict(row)
        for key in ("toploc_worst_ratio", "pocv_worst_ratio", "tokens_changed_fraction",
                    "toploc_chunks_failed_fraction", "toploc_max_exp_mismatches", "toploc_max_mant_err_mean"):
            vals = [v for v in r.pop(key) if math.isfinite(v)]
            r[f"{key}_min"] = min(vals, default=None)
            r[f"{key}_max"] = max(vals, default=None)
        out_rows.append(r)
    return {"rows": out_rows, "trials": cfg.trials, "pocv_k": cfg.k,
            "toploc_thresholds": {"mant_err_mean_max": MANT_MEAN_MAX, "mant_err_median_max": MANT_MEDIAN_MAX,
                                  "exp_match_min": EXP_MATCH_MIN, "topk": TOPK}}


def describe(cfg: Config, quick: bool) -> dict[str, Any]:
    import toploc

    from pocv.kernels import get_kernel

    kernel = get_kernel(KERNEL)
    return {"quick": quick, "kernel": f"{KERNEL}@{kernel.version}", "params": dict(cfg.params), "steps": cfg.steps,
            "trials": cfg.trials, "torch_threads": THREADS, "pocv_k": cfg.k, "pocv_tau": kernel.tau,
            "toploc": {"version": getattr(toploc, "__version__", "?"), "topk": TOPK,
                       "decode_batching_size": DECODE_BATCHING_SIZE, "skip_prefill": True,
                       "activation_dtype": "bfloat16", "activations": "rmsnorm(h), the unembedding's input",
                       "thresholds": {"mant_err_mean_max": MANT_MEAN_MAX, "mant_err_median_max": MANT_MEDIAN_MAX,
                                      "exp_match_min": EXP_MATCH_MIN}}}


# -- the report section ---------------------------------------------------------------------------


def _v(d: Any, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


def _who(ratio: Any, *, pocv_over_peer: bool) -> str:
    """Who is better on a cost ratio (lower cost wins)."""
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not math.isfinite(ratio):
        return "—"
    pocv_worse = ratio > 1 if pocv_over_peer else ratio < 1
    factor = ratio if ratio >= 1 else 1 / ratio
    return f"{'TOPLOC' if pocv_worse else 'pocv'} by {fmt(float(factor), 3)}x" + (
        " (**pocv loses**)" if pocv_worse else "")


def render(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "TOPLOC vs pocv on transformer decode (`toploc`)"
    cfg, by, tm, det = data.get("config"), data.get("bytes"), data.get("time"), data.get("detection")
    if not any(isinstance(x, dict) for x in (by, tm, det)):
        raise KeyError("no bytes, time or detection entries")
    if isinstance(cfg, dict):
        tp = cfg.get("toploc") if isinstance(cfg.get("toploc"), dict) else {}
        th = tp.get("thresholds") if isinstance(tp.get("thresholds"), dict) else {}
        params = ", ".join(f"{k}={v}" for k, v in (cfg.get("params") or {}).items())
        sec.blocks.append(
            f"One job of `{cfg.get('kernel')}` ({params}; {cfg.get('steps')} steps{', quick run' if cfg.get('quick') else ''}), "
            f"run once by a worker that commits both ways: pocv's signed Merkle root over every state, and TOPLOC "
            f"{tp.get('version')} proofs (top-{tp.get('topk')} of each {tp.get('decode_batching_size')} tokens' "
            f"final-norm activations, {tp.get('activation_dtype')}) per sequence. TOPLOC accepts a chunk when the "
            f"mantissa error mean <= {th.get('mant_err_mean_max')}, median <= {th.get('mant_err_median_max')} and "
            f">= {th.get('exp_match_min')} exponents match (its authors' thresholds); pocv challenges "
            f"k = {cfg.get('pocv_k')} steps and compares within tau = {cfg.get('pocv_tau')}. Every figure was "
            "measured in this run; ratios are pocv / TOPLOC unless named otherwise.")
    rows: list[list[Any]] = []
    if isinstance(by, dict):
        r = by.get("ratios") or {}
        rows += [
            ["commitment bytes per token", _v(by, "toploc_bytes_per_token"), _v(by, "pocv_commitment_bytes_per_token"),
             _inv(r.get("commitment_toploc_over_pocv")), _who(_inv(r.get("commitment_toploc_over_pocv")), pocv_over_peer=True),
             f"TOPLOC: {fmt(_v(by, 'toploc_proofs'))} proofs of {fmt(_per(by, 'toploc_proof_bytes', 'toploc_proofs'))} B; "
             f"pocv: one commitment record of {fmt(_v(by, 'pocv_commitment_json_bytes'))} B JSON per job "
             f"({fmt(_v(by, 'pocv_root_signature_bytes'))} B root + signature) over {fmt(_v(by, 'tokens_per_job'))} tokens: "
             "pocv's is fixed per job and shrinks per token as jobs grow, TOPLOC's grows with the tokens"],
            ["bytes the worker sends to have a token checked", _v(by, "toploc_bytes_per_token"),
             _v(by, "pocv_response_bytes_per_checked_token"), r.get("check_bytes_pocv_over_toploc"),
             _who(r.get("check_bytes_pocv_over_toploc"), pocv_over_peer=True),
             f"pocv opens {fmt(_v(by, 'pocv_opened_states'))} states of {fmt(_v(by, 'pocv_state_bytes'))} B "
             f"(KV cache, tokens, logits) for k = {fmt(_v(by, 'pocv_k'))} steps; TOPLOC needs only its proofs "
             "and the output tokens"],
            ["worker storage bytes per token", _v(by, "toploc_bytes_per_token"),
             _v(by, "pocv_worker_storage_bytes_per_token"), r.get("storage_pocv_over_toploc"),
             _who(r.get("storage_pocv_over_toploc"), pocv_over_peer=True),
             "pocv keeps leaf hashes and a checkpoint every 16 states to answer challenges"],
        ]
    if isinstance(tm, dict):
        r = tm.get("ratios") or {}
        rows += [
            ["worker commit work, µs per token", _v(tm, "toploc_build_us_per_token"), _v(tm, "pocv_hash_us_per_token"),
             r.get("commit_work_pocv_over_toploc"), _who(r.get("commit_work_pocv_over_toploc"), pocv_over_peer=True),
             f"TOPLOC build_proofs vs BLAKE3 of every state; decoding itself took "
             f"{fmt(_v(tm, 'decode_us_per_token'))} µs per token"],
            ["validation, µs per checked token", _v(tm, "toploc_validate_us_per_token"), _v(tm, "pocv_check_us_per_token"),
             r.get("validate_pocv_over_toploc"), _who(r.get("validate_pocv_over_toploc"), pocv_over_peer=True),
             f"TOPLOC: prefill {fmt(_v(tm, 'toploc_prefill_us_per_token'))} + verify_proofs "
             f"{fmt(_v(tm, 'toploc_verify_call_us_per_token'))} over all {fmt(_v(tm, 'tokens_per_job'))} tokens; pocv: "
             f"Verifier.check (signatures, multiproof, decode, recompute) of {fmt(_v(tm, 'pocv_checked_tokens'))} "
             f"tokens, of which verify_step {fmt(_v(tm, 'pocv_verify_step_us_per_token'))}"],
            ["validation with TOPLOC recomputing by decode, µs per token",
             _v(tm, "toploc_validate_forced_decode_us_per_token"), _v(tm, "pocv_check_us_per_token"),
             r.get("validate_pocv_over_toploc_forced_decode"),
             _who(r.get("validate_pocv_over_toploc_forced_decode"), pocv_over_peer=True),
             "TOPLOC's validator recomputing through the kernel's token-by-token decode, as pocv's verifier does: "
             "separates the prefill's advantage from the method's"],
        ]
    if rows:
        sec.blocks.append("**Costs side by side** (lower is better; ratio = pocv / TOPLOC)")
        sec.blocks.append(table(["quantity", "TOPLOC", "pocv", "ratio", "better", "what is counted"], rows))
    if isinstance(tm, dict):
        sec.blocks.append(
            f"TOPLOC's validator recomputes with a prefill written against the kernel's weights; it agreed with the "
            f"worker's decode to {fmt(_v(tm, 'prefill_vs_decode_max_rel_diff'))} (max relative difference; "
            f"{fmt(_v(tm, 'prefill_vs_decode_bf16_mismatch_fraction'))} of bf16 values differ). Teacher-forced decode "
            f"reproduced the worker's activations bit for bit: {fmt(_v(tm, 'forced_decode_equals_run'))}.")
    det_rows = det.get("rows") if isinstance(det, dict) else None
    if isinstance(det_rows, list):
        trows, figs = [], []
        for d in det_rows:
            if not isinstance(d, dict):
                continue
            n = d.get("trials")
            honest = str(d.get("cheat")).startswith("honest")
            trows.append([d.get("cheat"), d.get("what"), n,
                          f"{fmt(d.get('toploc_flagged'))}/{fmt(n)}",
                          _range(d, "toploc_worst_ratio"), _range(d, "toploc_chunks_failed_fraction"),
                          _range(d, "toploc_max_exp_mismatches"), _range(d, "toploc_max_mant_err_mean"),
                          f"{fmt(d.get('pocv_failed'))}/{fmt(n)}", _range(d, "pocv_worst_ratio"),
                          _range(d, "tokens_changed_fraction"), d.get("matches_kernel")])
            if isinstance(n, int) and n > 0:
                if honest:
                    figs.append(Figure(f"pocv false FAILs ({d.get('cheat')})", d.get("pocv_failed"), 0, "<="))
                    figs.append(Figure(f"TOPLOC false flags ({d.get('cheat')})", d.get("toploc_flagged"), 0, "<="))
                else:
                    figs.append(Figure(f"pocv detects {d.get('cheat')} (of {n} trials)", d.get("pocv_failed"),
                                       float(n), ">="))
                    figs.append(Figure(f"TOPLOC detects {d.get('cheat')} (of {n} trials; no target: the peer)",
                                       d.get("toploc_flagged")))
        sec.blocks.append(f"**Detection** over {fmt(det.get('trials'))} jobs (different seeds). Worst ratio = the "
                          "statistic over its accept threshold, worst chunk or checked step (> 1 is caught); TOPLOC "
                          "validates every token teacher-forced on the worker's output, pocv checks "
                          f"k = {fmt(det.get('pocv_k'))} steps. 'same as kernel' = the cheat's first state equals "
                          "the kernel's own step or downgrade variant bit for bit.")
        th = det.get("toploc_thresholds") if isinstance(det.get("toploc_thresholds"), dict) else {}
        exp_fail = (th["topk"] - th["exp_match_min"]) if isinstance(th.get("topk"), int) and isinstance(
            th.get("exp_match_min"), int) else "?"
        sec.blocks.append(table(["worker", "what it ran", "trials", "TOPLOC flagged", "TOPLOC worst ratio",
                                 "TOPLOC chunks failed", f"TOPLOC exp mismatches (fails > {exp_fail})",
                                 f"TOPLOC mantissa err mean (fails > {fmt(th.get('mant_err_mean_max'))})", "pocv FAIL", "pocv worst ratio", "tokens changed",
                                 "same as kernel"], trows))
        if figs:
            sec.add_figures(figs, label="detection")
        sep = _separation(det_rows)
        if sep:
            sec.blocks.append(sep)
        reasons = [f"`{d.get('cheat')}`: {d['pocv_reasons'][0]}" for d in det_rows
                   if isinstance(d, dict) and d.get("pocv_reasons")]
        if reasons:
            sec.blocks.append("pocv's first reason per cheat: " + "; ".join(reasons))
    loses = _where_pocv_loses(by, tm, det_rows)
    if loses:
        sec.blocks.append("**Where pocv loses**\n\n" + "\n".join(f"- {x}" for x in loses))
    with plot.figure(sec, "costs-detection", ncols=3, figsize=(16, 4.2)) as fa:
        if fa:
            _plots(fa[1], by, tm, det_rows)


def _inv(v: Any) -> Any:
    return 1.0 / v if isinstance(v, int | float) and not isinstance(v, bool) and v else None


def _per(d: dict[str, Any], a: str, b: str) -> Any:
    x, y = d.get(a), d.get(b)
    return x / y if isinstance(x, int | float) and isinstance(y, int | float) and y else None


def _range(d: dict[str, Any], key: str) -> str:
    lo, hi = d.get(f"{key}_min"), d.get(f"{key}_max")
    if lo is None and hi is None:
        return "—"
    return fmt(lo) if lo == hi else f"{fmt(lo)} – {fmt(hi)}"


def _separation(rows: list[Any]) -> str:
    """How far apart honest implementations and precision downgrades land on each side's statistic."""
    rows = [d for d in rows if isinstance(d, dict)]
    honest = [d for d in rows if str(d.get("cheat")).startswith("honest")]
    down = [d for d in rows if d.get("cheat") in ("tf32", "fp16", "bf16")]

    def ext(ds: list[dict[str, Any]], key: str, fn: Callable[..., Any]) -> Any:
        vals = [v for d in ds if isinstance(v := d.get(key), int | float) and not isinstance(v, bool)]
        return fn(vals) if vals else None

    if not honest or not down:
        return ""
    parts = []
    he, de = ext(honest, "toploc_max_exp_mismatches_max", max), ext(down, "toploc_max_exp_mismatches_min", min)
    hm, dm = ext(honest, "toploc_max_mant_err_mean_max", max), ext(down, "toploc_max_mant_err_mean_min", min)
    missed = sum(d.get("trials", 0) - d.get("toploc_flagged", 0) for d in down
                 if isinstance(d.get("trials"), int) and isinstance(d.get("toploc_flagged"), int))
    total = sum(d.get("trials", 0) for d in down if isinstance(d.get("trials"), int))
    if he is not None and de is not None:
        parts.append(f"TOPLOC passed {missed} of {total} precision-downgraded jobs: its exponent mismatches per chunk "
                     f"reached at most {fmt(he)} for the honest implementations and at least {fmt(de)} for the "
                     f"downgrades (mantissa error mean at most {fmt(hm)} honest, at least {fmt(dm)} downgraded), "
                     "all far inside thresholds set to absorb bf16 noise between GPUs.")
    hp, dp = ext(honest, "pocv_worst_ratio_max", max), ext(down, "pocv_worst_ratio_min", min)
    if hp is not None and dp is not None:
        parts.append(f"pocv's worst deviation over its bound: at most {fmt(hp)} honest, at least {fmt(dp)} downgraded "
                     "(> 1 fails).")
    swapped = [d for d in rows if d.get("cheat") == "swapped-model"]
    if swapped and isinstance(swapped[0].get("toploc_worst_ratio_max"), int | float) \
            and swapped[0]["toploc_worst_ratio_max"] >= 1e6:
        parts.append("A TOPLOC worst ratio of 1,000,000 stands for a chunk where no exponent matched "
                     "(toploc reports a mantissa error of 2^64).")
    return " ".join(parts)


def _where_pocv_loses(by: Any, tm: Any, det_rows: Any) -> list[str]:
    out = []
    if isinstance(by, dict) and isinstance(by.get("ratios"), dict):
        r = by["ratios"]
        x = r.get("check_bytes_pocv_over_toploc")
        if isinstance(x, int | float) and x > 1:
            out.append(f"bytes to check a token: pocv's response carries whole states "
                       f"({fmt(by.get('pocv_state_bytes'))} B each), {fmt(x, 3)}x TOPLOC's proof bytes per token.")
        x = r.get("storage_pocv_over_toploc")
        if isinstance(x, int | float) and x > 1:
            out.append(f"worker storage: {fmt(x, 3)}x TOPLOC's proofs per token (checkpoints of the KV cache).")
    if isinstance(tm, dict) and isinstance(tm.get("ratios"), dict):
        r = tm["ratios"]
        x = r.get("validate_pocv_over_toploc")
        if isinstance(x, int | float) and x > 1:
            y = r.get("validate_pocv_over_toploc_forced_decode")
            out.append(f"validation time per checked token: {fmt(x, 3)}x TOPLOC's prefill-based validation "
                       f"(against TOPLOC recomputing by decode: {fmt(y, 3)}x), because pocv's verify_step "
                       "replays the step token by token.")
        x = r.get("commit_work_pocv_over_toploc")
        if isinstance(x, int | float) and x > 1:
            out.append(f"worker commit work: hashing every state costs {fmt(x, 3)}x TOPLOC's proof building per token.")
    if isinstance(det_rows, list):
        for d in det_rows:
            if isinstance(d, dict) and not str(d.get("cheat")).startswith("honest") \
                    and isinstance(d.get("toploc_flagged"), int) \
                    and isinstance(d.get("pocv_failed"), int) and d["toploc_flagged"] > d["pocv_failed"]:
                out.append(f"detection of {d.get('cheat')}: TOPLOC flagged {d['toploc_flagged']}, pocv "
                           f"{d['pocv_failed']} of {d.get('trials')} jobs.")
    return out


def _plots(axes: list[Any], by: Any, tm: Any, det_rows: Any) -> None:
    ax1, ax2, ax3 = axes
    if isinstance(by, dict):
        groups = ["commitment", "to check a token", "worker storage"]
        grouped_bars(ax1, groups, {
            "TOPLOC": [_f(by.get("toploc_bytes_per_token"))] * 3,
            "pocv": [_f(by.get("pocv_commitment_bytes_per_token")), _f(by.get("pocv_response_bytes_per_checked_token")),
                     _f(by.get("pocv_worker_storage_bytes_per_token"))],
        }, "bytes per token", ylabel="bytes (log)", log=True)
    if isinstance(tm, dict):
        grouped_bars(ax2, ["commit work", "validate", "validate (TOPLOC by decode)"], {
            "TOPLOC": [_f(tm.get("toploc_build_us_per_token")), _f(tm.get("toploc_validate_us_per_token")),
                       _f(tm.get("toploc_validate_forced_decode_us_per_token"))],
            "pocv": [_f(tm.get("pocv_hash_us_per_token")), _f(tm.get("pocv_check_us_per_token")),
                     _f(tm.get("pocv_check_us_per_token"))],
        }, "µs per token", ylabel="µs (log)", log=True)
    if isinstance(det_rows, list):
        rows = [d for d in det_rows if isinstance(d, dict) and isinstance(d.get("trials"), int) and d["trials"]]
        grouped_bars(ax3, [str(d.get("cheat")) for d in rows], {
            "TOPLOC flagged": [_f(d.get("toploc_flagged")) / d["trials"] for d in rows],
            "pocv FAIL": [_f(d.get("pocv_failed")) / d["trials"] for d in rows],
        }, "share of jobs caught (honest: false alarms)", ylabel="fraction")
        ax3.set_ylim(0, 1.15)


def _f(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else 0.0
