"""TOPLOC as a peer: its proofs, its validation and its authors' accept thresholds, for any activations.

TOPLOC (PrimeIntellect; ``toploc`` 0.1.6 on PyPI; arXiv 2501.16007) commits to the top-k values of
the last hidden activations of each chunk of ``decode_batching_size`` generated tokens (a polynomial
through the points (flat index, bf16 bits), 258 bytes a chunk at top-128) and validates by
recomputing the activations with a prefill over the generated tokens, then comparing the exponents
and mantissas of the recomputed top-k values with the committed ones within thresholds.

bench/test_bench_llm.py runs it beside pocv's ``hf-causal-lm`` kernel and token-difr on the same
models and the same tokens (the ``llm`` suite): the activations are the input of the model's output
layer, captured with a forward pre-hook during the worker's own decode (:func:`toploc_proofs`) and
during the verifier's prefill of the ordered model (:func:`toploc_verify`), judged with the
authors' thresholds (:func:`toploc_judge`). (Until issue 12 this module also ran TOPLOC on the
retired ``transformer-decode`` kernel, as the ``toploc`` suite; that comparison is now the ``llm``
suite's, on real transformers architectures.)

TOPLOC takes 16-bit values only (bf16 here; float32 activations give all-zero proofs and a log
line, not an error), and ``build_proofs`` turns any exception into null proofs, so
:func:`toploc_proofs` refuses a null proof. Accept thresholds are the caller's: the authors'
validation script (``vllm_validate_poly.py``) passes a chunk when the mantissa error mean is <= 10,
the median <= 8 and at least 90 of the 128 top-k exponents match.

Needs ``toploc`` (the bench extra; README: build 0.1.6 from source against this torch).
"""

from __future__ import annotations

from typing import Any

import torch

#: TOPLOC's parameters as its authors use them (README: "258 bytes per 32 new tokens"; top-128)
TOPK = 128
DECODE_BATCHING_SIZE = 32
#: accept thresholds of the authors' validation script (vllm_validate_poly.py: TMEAN, TMEDIAN, TEXP)
MANT_MEAN_MAX = 10.0
MANT_MEDIAN_MAX = 8.0
EXP_MATCH_MIN = 90
#: TOPLOC's ProofPoly reduces indices modulo a prime below 65,497: a chunk must hold fewer values
MAX_CHUNK_VALUES = 32_768


def toploc_proofs(hidden: torch.Tensor) -> list[list[bytes]]:
    """TOPLOC's proofs, one list per sequence (skip_prefill: the job has no prompt beyond s_0's token)."""
    import toploc  # reason: the optional peer (bench extra), imported only where it runs

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
    import toploc  # reason: the optional peer (bench extra), imported only where it runs

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
