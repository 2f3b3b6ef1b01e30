"""``transformer-decode``: a small decoder-only transformer generating tokens, tolerance mode.

Model (``width`` = d, ``depth`` = L layers, heads of 32, vocabulary 256, embedding ``E``
and unembedding ``U`` and all other weights seeded exact dyadic grids fixed by the spec)::

    h = E[token]
    per layer:  x = rmsnorm(h);  q, k, v = x Wq, x Wk, x Wv      (k, v appended to the KV cache)
                att = softmax(q . K^T / sqrt(32) - slope_h * distance) V;   h = h + att Wo
                x = rmsnorm(h);  h = h + relu(x W1) W2
    logits = rmsnorm(h) U;     next token = argmax(logits + eta)

``eta`` (exact dyadic values in [0, 2) from BLAKE3's XOF keyed by seed, position) perturbs the
greedy choice so sequences vary. Attention uses a distance bias (ALiBi, slope 2^-(h+1)), so
cached keys do not depend on absolute positions and the cache is a ring of ``context`` slots:
the token at position p lives in slot p mod context.

State (``batch`` = B sequences, C = ``context``): ``layer{l}.k``, ``layer{l}.v`` float32[B, H, C, 32],
``logits`` float32[B, 256] of the last processed token, ``tokens`` int64[B, C] (ring, committed
exactly) and ``pos`` int64 (tokens so far). ``s_0``: one seeded token per sequence, empty cache.
Step i feeds ``chunk`` tokens one after another (each generated token is the next input).

Verification (:meth:`TransformerDecode.verify_step`): generated tokens are discrete, so two
honest implementations may pick different tokens where two scores tie to within rounding. The
verifier therefore recomputes the step *teacher-forced with the claimed tokens* and accepts
(1) every claimed token whose recomputed score is within the logits bound of the best score,
(2) tokens, slots and ``pos`` not generated in this step exactly as in ``s_{i-1}``, (3) K, V and
logits within ``|d| <= tau * u * (|e| + rms(e)) + floor``, rms taken over each token's vector
(the K or V of one sequence at one slot across heads; one sequence's logits): attention and
normalization mix every element of such a vector. ``compare`` (no previous state) requires equal tokens.

:meth:`TransformerDecode.reference_step` (float64, rounded to float32 once) defines the result.
Calibration: ``python -m pocv.kernels.calibrate transformer-decode --trials 40`` (add e.g. ``--param
depth=8 --param context=32 --param chunk=8 --trials 6`` for the other rows). Honest variants: torch at 2 and 1
threads, einsum products, split-k products (two half sums) at 1 thread, the float64 reference;
ratios over every ordered pair, false FAILs counted by :meth:`verify_step` of each variant's
state. Measured 2026-11-25 on a 2-core AMD EPYC, torch 2.13 CPU::

    width depth batch ctx chunk trials  elements  p99   p99.9  p99.99  max  | downgrade min needed tau
    128   2     16    64  16    40      423 M     3.67  6.17   8.72    25.5 | tf32 16,700 fp16 17,400 bf16 138,000
    128   2     16    64  8     20      211 M     2.95  5.42   8.0     18.9 | tf32 16,100 fp16 16,000 bf16 136,000
    128   8     16    32  8     6       126 M     4.76  7.66   10.8    24.0 | tf32 22,200 fp16 21,800 bf16 198,000
    512   2     4     256 4     5       210 M     0     4.36   8.0     22.0 | tf32 15,100 fp16 15,800 bf16 137,000

0 false FAILs in 355 verify_step checks; every downgrade caught. Chosen ``tau = 512`` (20x the
largest honest ratio, 29x below the smallest downgrade). An earlier per-tensor RMS scale let the
empty slots of a long context dilute the scale (honest max 170 at context 256); the per-token
RMS fixed that. Not measured here: CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Final

import numpy as np
import torch

from pocv.encoding import State, Tensor
from pocv.errors import SpecError, StateError
from pocv.jobs import JobSpec
from pocv.kernels import register
from pocv.kernels._tolerance import U32, StepFn, ToleranceKernel, round_tf32, torch_threads
from pocv.kernels._util import as_numpy, as_torch, seeded_bytes, strict_fp32
from pocv.kernels.base import Comparison, Schema

_WEIGHT_CONTEXT: Final = "pocv 2026-11 transformer-decode v1 weights"
_PROMPT_CONTEXT: Final = "pocv 2026-11 transformer-decode v1 prompt"
_ETA_CONTEXT: Final = "pocv 2026-11 transformer-decode v1 eta"
VOCAB: Final = 256
HEAD_DIM: Final = 32
EPS: Final = 2.0**-20
TAU: Final = 512.0
FLOOR: Final = 2.0**-100
MAX_WIDTH: Final = 1024
MAX_DEPTH: Final = 8
MAX_BATCH: Final = 256
MAX_CONTEXT: Final = 4096
MAX_CHUNK: Final = 256
_CACHE_ENTRIES: Final = 4

MatMul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


def _rmsnorm(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS)


class _Weights:
    """Seeded weights as float32 CPU tensors (exact dyadic grids)."""

    def __init__(self, seed: int, width: int, depth: int) -> None:
        d = width
        sizes = [2 * VOCAB * d] + [d * 3 * d + d * d + d * 4 * d + 4 * d * d] * depth
        raw = np.frombuffer(seeded_bytes(_WEIGHT_CONTEXT, seed, width, depth, length=2 * sum(sizes)), "<u2")
        grid = (raw.astype(np.float32) - np.float32(32768)) * np.float32(2.0**-15)  # uniform [-1, 1)
        pos = 0

        def take(rows: int, cols: int, fan_in: int) -> torch.Tensor:
            nonlocal pos
            e = max(0, round(math.log2(math.sqrt(fan_in))))  # std ~ 0.58 / sqrt(fan_in)
            out = grid[pos : pos + rows * cols].reshape(rows, cols) * np.float32(2.0**-e)
            pos += rows * cols
            return torch.from_numpy(out.copy())

        self.embed = take(VOCAB, d, 1) * 2  # std ~ 1 per element, like a normalized stream
        self.unembed = take(d, VOCAB, d)  # untied: tying makes the current token its own best guess
        self.layers: list[tuple[torch.Tensor, ...]] = []
        for _ in range(depth):
            self.layers.append((take(d, 3 * d, d), take(d, d, d), take(d, 4 * d, d), take(4 * d, d, 4 * d)))
        self._by_device: dict[tuple[str, torch.dtype], _Weights] = {}

    def to(self, device: str, dtype: torch.dtype) -> _Weights:
        if device == "cpu" and dtype == torch.float32:
            return self
        key = (device, dtype)
        w = self._by_device.get(key)
        if w is None:
            w = object.__new__(_Weights)
            w.embed = self.embed.to(device, dtype)
            w.unembed = self.unembed.to(device, dtype)
            w.layers = [tuple(t.to(device, dtype) for t in layer) for layer in self.layers]
            w._by_device = {}
            self._by_device[key] = w
        return w


@register
class TransformerDecode(ToleranceKernel):
    name: ClassVar[str] = "transformer-decode"
    pure_step = True  # returns new tensors, never touches its input (tests/test_commit_pipeline.py)
    version: ClassVar[int] = 1
    summary: ClassVar[str] = "token generation with a seeded decoder-only transformer; KV cache + tokens (tolerance)"
    int_params: ClassVar[dict[str, tuple[int, int, int]]] = {
        "width": (128, 32, MAX_WIDTH),
        "depth": (2, 1, MAX_DEPTH),
        "batch": (16, 1, MAX_BATCH),
        "context": (64, 2, MAX_CONTEXT),
        "chunk": (16, 1, MAX_CHUNK),
    }
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    tau: ClassVar[float] = TAU
    floor: ClassVar[float] = FLOOR
    calibrate_with_verify_step: ClassVar[bool] = True

    def __init__(self) -> None:
        self._weights: dict[tuple[int, int, int], _Weights] = {}

    def check_params(self, params: dict[str, Any]) -> dict[str, Any]:
        out = super().check_params(params)
        if out["width"] % HEAD_DIM:
            raise SpecError(f"transformer-decode parameter 'width' must be a multiple of {HEAD_DIM}, "
                            f"got {out['width']}")
        return out

    def weights(self, spec: JobSpec) -> _Weights:
        key = (spec.seed, int(spec.params["width"]), int(spec.params["depth"]))
        w = self._weights.get(key)
        if w is None:
            if len(self._weights) >= _CACHE_ENTRIES:
                self._weights.clear()
            w = _Weights(*key)
            self._weights[key] = w
        return w

    def eta(self, spec: JobSpec, position: int) -> torch.Tensor:
        """float32[B, 256] in [0, 2) on a 2^-15 grid, for choosing the token at ``position``."""
        b = int(spec.params["batch"])
        raw = np.frombuffer(seeded_bytes(_ETA_CONTEXT, spec.seed, position, length=2 * b * VOCAB), "<u2")
        return torch.from_numpy((raw.astype(np.float32) * np.float32(2.0**-15)).reshape(b, VOCAB))

    # -- kernel interface -----------------------------------------------------------------------

    def schema(self, spec: JobSpec) -> Schema:
        p = spec.params
        b, c, heads = int(p["batch"]), int(p["context"]), int(p["width"]) // HEAD_DIM
        out: Schema = {"logits": ("float32", (b, VOCAB)), "tokens": ("int64", (b, c)), "pos": ("int64", ())}
        for layer in range(int(p["depth"])):
            out[f"layer{layer}.k"] = ("float32", (b, heads, c, HEAD_DIM))
            out[f"layer{layer}.v"] = ("float32", (b, heads, c, HEAD_DIM))
        return out

    def init_state(self, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        out: dict[str, Tensor] = {}
        for name, (dtype, shape) in self.schema(spec).items():
            out[name] = torch.zeros(shape, dtype=getattr(torch, dtype), device=device)
        b = int(spec.params["batch"])
        first = np.frombuffer(seeded_bytes(_PROMPT_CONTEXT, spec.seed, length=b), np.uint8).astype(np.int64)
        tokens = out["tokens"]
        assert isinstance(tokens, torch.Tensor)
        tokens[:, 0] = torch.from_numpy(first).to(device)
        out["pos"] = torch.tensor(1, dtype=torch.int64, device=device)
        return out

    def _decode(
        self,
        state: State,
        spec: JobSpec,
        device: str,
        *,
        dtype: torch.dtype = torch.float32,
        mm: MatMul = _mm,
        forced: torch.Tensor | None = None,
    ) -> tuple[dict[str, Tensor], torch.Tensor]:
        """Run ``chunk`` tokens. Returns (new state, scores float32[chunk, B, 256] of each choice).

        ``forced`` (int64[chunk, B]): feed these as the generated tokens instead of the argmax
        (teacher forcing, for verification).
        """
        p = spec.params
        depth, ctx, chunk = int(p["depth"]), int(p["context"]), int(p["chunk"])
        heads = int(p["width"]) // HEAD_DIM
        w = self.weights(spec).to(device, dtype)
        pos = int(as_numpy(state["pos"]).reshape(-1)[0])
        if not 1 <= pos <= (1 << 40):
            raise StateError(f"transformer-decode state: pos must be >= 1, got {pos}")
        ks = [as_torch(state[f"layer{layer}.k"], device).to(dtype).clone() for layer in range(depth)]
        vs = [as_torch(state[f"layer{layer}.v"], device).to(dtype).clone() for layer in range(depth)]
        tokens = as_torch(state["tokens"], device).clone()
        logits = as_torch(state["logits"], device).to(dtype)
        slopes = torch.tensor([2.0 ** -(h + 1) for h in range(heads)], dtype=dtype, device=device)
        scale = 1.0 / math.sqrt(HEAD_DIM)
        scores_out = []
        slot_idx = torch.arange(ctx, device=device)
        for c in range(chunk):
            cur = pos - 1  # position of the token being processed
            slot = cur % ctx
            tok = tokens[:, slot]
            h = w.embed[tok]
            # positions held by each slot, relative to cur; invalid before position 0
            held = cur - torch.remainder(cur - slot_idx, ctx)
            valid = held >= 0
            dist = (cur - held).to(dtype)
            bias = (-slopes[:, None] * dist[None, :]).masked_fill(~valid[None, :], float("-inf"))
            for layer, (wqkv, wo, w1, w2) in enumerate(w.layers):
                x = _rmsnorm(h)
                qkv = mm(x, wqkv).view(x.shape[0], 3, heads, HEAD_DIM)
                q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
                ks[layer][:, :, slot] = k
                vs[layer][:, :, slot] = v
                att = torch.einsum("bhd,bhsd->bhs", q, ks[layer]) * scale + bias[None]
                att = torch.softmax(att, dim=-1)
                o = torch.einsum("bhs,bhsd->bhd", att, vs[layer]).reshape(x.shape[0], -1)
                h = h + mm(o, wo)
                x = _rmsnorm(h)
                h = h + mm(torch.relu(mm(x, w1)), w2)
            logits = mm(_rmsnorm(h), w.unembed)
            score = logits + self.eta(spec, cur + 1).to(device, dtype)
            scores_out.append(score.float())
            nxt = score.argmax(-1) if forced is None else forced[c].to(device)
            tokens[:, (cur + 1) % ctx] = nxt
            pos += 1
        out: dict[str, Tensor] = {"logits": logits.float(), "tokens": tokens,
                                  "pos": torch.tensor(pos, dtype=torch.int64, device=device)}
        for layer in range(depth):
            out[f"layer{layer}.k"] = ks[layer].float()
            out[f"layer{layer}.v"] = vs[layer].float()
        return out, torch.stack(scores_out)

    def step(self, state: State, i: int, spec: JobSpec, device: str = "cpu") -> dict[str, Tensor]:
        self.check_device(device)
        if device.startswith("cuda"):
            with strict_fp32():
                return self._decode(state, spec, device)[0]
        return self._decode(state, spec, device)[0]

    def reference_step(self, state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
        """The definition: the same computation in float64, rounded to float32 once."""
        return self._decode(state, spec, "cpu", dtype=torch.float64)[0]

    # -- tolerance ------------------------------------------------------------------------------

    def scales(self, expected: State, spec: JobSpec) -> dict[str, np.ndarray[Any, Any]]:
        out: dict[str, np.ndarray[Any, Any]] = {}
        for name in expected:
            if name in ("tokens", "pos"):
                continue
            e = np.abs(as_numpy(expected[name]).astype(np.float64))
            # the RMS of each token's vector: over (heads, head_dim) for K/V [B, H, C, 32] per
            # (sequence, slot), over the vocabulary for logits [B, 256] per sequence
            axes = (1, 3) if e.ndim == 4 else (-1,)
            out[name] = e + np.sqrt(np.mean(e * e, axis=axes, keepdims=True))
        return out

    def new_positions(self, prev: State, spec: JobSpec) -> list[int]:
        pos = int(as_numpy(prev["pos"]).reshape(-1)[0])
        return list(range(pos, pos + int(spec.params["chunk"])))

    def verify_step(
        self, prev: State, claimed: State, i: int, spec: JobSpec, device: str = "cpu"
    ) -> Comparison:
        why = self.check_schemas(prev, claimed, spec)
        if why is not None:
            return Comparison(False, why)
        ctx = int(spec.params["context"])
        new = self.new_positions(prev, spec)
        want_pos = new[-1] + 1
        got_pos = int(as_numpy(claimed["pos"]).reshape(-1)[0])
        if got_pos != want_pos:
            return Comparison(False, f"pos: expected {want_pos}, got {got_pos}")
        claimed_tokens = as_torch(claimed["tokens"]).cpu()
        prev_tokens = as_torch(prev["tokens"]).cpu()
        new_slots = {p % ctx for p in new}
        kept = [s for s in range(ctx) if s not in new_slots]
        if not torch.equal(claimed_tokens[:, kept], prev_tokens[:, kept]):
            return Comparison(False, "tokens not generated in this step differ from the previous state")
        if bool(((claimed_tokens < 0) | (claimed_tokens >= VOCAB)).any()):
            return Comparison(False, f"tokens outside the vocabulary 0..{VOCAB - 1}")
        forced = torch.stack([claimed_tokens[:, p % ctx] for p in new])
        if device.startswith("cuda"):
            with strict_fp32():
                expected, scores = self._decode(prev, spec, device, forced=forced)
        else:
            expected, scores = self._decode(prev, spec, device, forced=forced)
        # (1) each claimed token is a best choice up to the logits bound (both sides may err)
        sc = scores.double().cpu()
        best = sc.max(-1).values
        chosen = sc.gather(-1, forced[..., None].cpu()).squeeze(-1)
        mag = sc.abs()
        rms = mag.pow(2).mean(-1).sqrt()
        slack = 2 * (self.tau * U32 * (mag.max(-1).values + rms) + self.floor)
        gap = best - chosen
        if bool((gap > slack).any()):
            c, b = (int(v) for v in torch.nonzero(gap > slack)[0])
            return Comparison(False, f"token at position {new[c]} of sequence {b}: score {chosen[c, b]:.6g} "
                                     f"is {gap[c, b]:.3g} below the best {best[c, b]:.6g} "
                                     f"(allowed {slack[c, b]:.3g})",
                              worst_ratio=float((gap / slack).max()))
        # (2, 3) everything else within the bound (tokens equal by construction)
        return self.compare(expected, claimed, spec)

    def honest_variants(self) -> dict[str, StepFn]:
        def variant(threads: int | None, **kw: Any) -> StepFn:
            def fn(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
                with torch_threads(threads):
                    return self._decode(state, spec, "cpu", **kw)[0]
            return fn

        def split_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # two half products
            k = a.shape[1] // 2
            return a[:, :k] @ b[:k] + a[:, k:] @ b[k:]

        return {
            "torch-2threads": variant(2),
            "torch-1thread": variant(1),
            "einsum": variant(None, mm=lambda a, b: torch.einsum("ik,kj->ij", a, b)),
            "split-k": variant(1, mm=split_mm),
            "reference-f64": self.reference_step,
        }

    def downgrade_variants(self) -> dict[str, StepFn]:
        def variant(mm: MatMul) -> StepFn:
            return lambda s, i, spec: self._decode(s, spec, "cpu", mm=mm)[0]

        return {
            "tf32": variant(lambda a, b: round_tf32(a) @ round_tf32(b)),
            "bf16": variant(lambda a, b: (a.bfloat16() @ b.bfloat16()).float()),
            "fp16": variant(lambda a, b: (a.half() @ b.half()).float()),
        }
