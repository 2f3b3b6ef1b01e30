"""Lying provers: a real :class:`~pocv.prover.Prover` told to cheat in a named way.

Every liar writes a real trace, signs a real commitment and answers with real Merkle proofs (of
whatever it committed); only the named lie differs from an honest worker. A strategy is a few
lines to invoke::

    from pocv.testing import fabricate, make_liar

    liar = make_liar(fabricate(0.1), trace_dir=tmp / "t", key=key)
    commitment = liar.run(spec)
    response = liar.respond(challenge)          # may be None (refusal / timeout)

Run-time lies override the ``_step`` seam (the state chain continues from the lie, so exactly
the faked steps are wrong); answer-time lies post-process the response. ``faked_steps`` is the
set of steps whose committed ``s_i`` is not ``step(s_{i-1}, i)``: a spot check catches the
worker iff it challenges one of them.

Strategies (``STRATEGIES`` lists them with what they apply to and whether detection is
certain or sampled):

sampled (caught with probability 1 - C(n - |F|, k) / C(n, k)):
    fabricate(f)          random bytes of the right schema at |F| = round(f n) steps
    skip(f)               s_i = s_{i-1} at the faked steps (the step was not computed)
    replay_earlier(f, lag) s_i = s_{i-lag}: a state from earlier in the run
    stop_early(f)         compute n - |F| steps, then repeat the last state to pad
    downgrade(f, "bf16")  mlp-sgd: the faked steps computed with bf16/fp16/tf32 products
    noise(f, ratio)       mlp-sgd: |honest + d| with |d| = ratio x the bound (ratio 1.5: above, 0.5: below)
certain (caught whenever challenged at all):
    replay_s0()           every s_i = s_0
    wrong_version()       every step computed by another version of the kernel
    answer_differently()  commit honestly, answer with states that are not the committed ones
    partial_answer(drop)  answer only some of the challenged steps
    refuse() / timeout()  no answer
    forge(kind)           proofs with a wrong sibling, wrong index, wrong tree size, ...
    leaf_lie(kind)        s_i opened by a leaf value that is not the committed one (exact kernels)
and, outside the run: ``equivocate`` (two signed roots for one job) and ``grind_root_only``
(re-roll the commitment against challenges derived from the root alone).

:class:`LazyProver` is the simplest liar (``pocv demo``'s cheater): it replays ``s_(i-1)`` as
``s_i`` on a seeded fraction of its steps and counts them. :class:`VariantProver` is an HONEST
worker that runs another implementation of the step (for completeness tests).
"""

from __future__ import annotations

import functools
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from blake3 import blake3

from pocv.bundle import Response, challenge_runs
from pocv.challenge import derive_indices
from pocv.encoding import State, Tensor, decode_state, state_digest
from pocv.jobs import JobSpec
from pocv.kernels import get_kernel, kernel_for, resolve_spec
from pocv.kernels.base import Kernel
from pocv.keys import Keypair, Signer
from pocv.merkle import MerkleTree
from pocv.prover import Prover
from pocv.records import Challenge, Commitment
from pocv.trace import TraceStore

StepFn = Callable[[Kernel, State, int, JobSpec, str], dict[str, Tensor]]


# -- choosing the faked steps ------------------------------------------------------------------


def pick_steps(n: int, f: float, seed: int = 0) -> frozenset[int]:
    """round(f n) distinct steps in 1..n, uniformly at random (seeded), at least one if f > 0."""
    count = min(n, max(1 if f > 0 else 0, round(f * n)))
    return frozenset(random.Random(seed).sample(range(1, n + 1), count))


def _seeded(*fields: int) -> np.random.Generator:
    return np.random.default_rng(list(fields))


def _bookkeep(state: State, i: int, spec: JobSpec) -> dict[str, Tensor]:
    """``state`` with its integer bookkeeping set as after step i (mlp-sgd's data cursor): a liar
    keeps the cheap bookkeeping right and fakes only the maths."""
    out = dict(state)
    if "cursor" in out:
        out["cursor"] = torch.tensor(i * int(spec.params["batch"]), dtype=torch.int64)
    return out


def _garbage_like(state: State, *salt: int) -> dict[str, Tensor]:
    """A state of the same names, dtypes and shapes, filled with seeded random values
    (integer bookkeeping such as a cursor is copied; pass the result through _bookkeep)."""
    rng = _seeded(*salt)
    out: dict[str, Tensor] = {}
    for name in sorted(state):  # a fixed order: the run and a recomputation draw alike
        t = state[name]
        t = t if isinstance(t, torch.Tensor) else torch.from_numpy(t)
        if t.dtype.is_floating_point:
            out[name] = torch.from_numpy(rng.standard_normal(tuple(t.shape)).astype(np.float32)).to(t.dtype)
        elif t.dtype == torch.bool:
            out[name] = torch.from_numpy(rng.integers(0, 2, tuple(t.shape)).astype(bool))
        elif name == "cursor":  # keep integer bookkeeping plausible: only the maths is faked
            out[name] = t.clone()
        else:
            info = torch.iinfo(t.dtype)
            arr = rng.integers(info.min, info.max, tuple(t.shape), endpoint=True, dtype=np.int64)
            out[name] = torch.from_numpy(arr).to(t.dtype)
    return out


# -- the strategies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A named way to lie. ``fake(prover, kernel, state, i, spec, device)`` replaces step i for
    i in the faked set; ``answer(prover, challenge, response)`` rewrites the response."""

    name: str
    certain: bool  # caught whenever challenged at all (else: caught iff a faked step is challenged)
    f: float = 0.0
    kernels: tuple[str, ...] = ("gemm-int8", "mlp-sgd")
    fake: Callable[..., dict[str, Tensor]] | None = None
    all_steps: bool = False  # the lie applies to every step (f = 1)
    answer: Callable[[LyingProver, Challenge, Response], Response | None] | None = None
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    fixed: frozenset[int] | None = None  # fake exactly these steps (see :meth:`at`)
    #: ``answer`` rewrites the response an honest worker sends (s_i of an exact kernel by its leaf
    #: value) instead of one that opens every leaf whole
    by_leaf: bool = False

    def faked_steps(self, n: int) -> frozenset[int]:
        if self.fake is None:
            return frozenset()
        if self.fixed is not None:
            return frozenset(i for i in self.fixed if 1 <= i <= n)
        if self.all_steps:
            return frozenset(range(1, n + 1))
        if self.name == "stop-early":
            count = min(n, max(1, round(self.f * n)))
            return frozenset(range(n - count + 1, n + 1))
        return pick_steps(n, self.f, self.seed)

    def with_seed(self, seed: int) -> Strategy:
        return replace(self, seed=seed)

    def with_salt(self, salt: int) -> Strategy:
        """fabricate: other garbage at the same steps (a new roll of the commitment)."""
        return replace(self, params={**self.params, "salt": salt})

    def at(self, *steps: int) -> Strategy:
        """The same lie at exactly these steps (for disputes and targeted tests)."""
        return replace(self, fixed=frozenset(steps), all_steps=False)


def fabricate(f: float, seed: int = 0) -> Strategy:
    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        salt = p.strategy.params.get("salt")
        garbage = _garbage_like(state, p.strategy.seed, i) if salt is None else _garbage_like(
            state, p.strategy.seed, salt, i)
        return _bookkeep(garbage, i, spec)

    return Strategy("fabricate", False, f, fake=fake, seed=seed)


def skip(f: float, seed: int = 0) -> Strategy:
    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        return _bookkeep(state, i, spec)

    return Strategy("skip", False, f, fake=fake, seed=seed)


def replay_earlier(f: float, lag: int = 5, seed: int = 0) -> Strategy:
    """s_i = s_{i-lag} (s_0 when i <= lag): the worker replays a state it computed before."""

    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        return _bookkeep(p.history_state(max(0, i - lag), device), i, spec)

    return Strategy("replay-earlier", False, f, fake=fake, seed=seed, params={"lag": lag})


def replay_s0() -> Strategy:
    """Every s_i = s_0: nothing was computed at all."""

    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        return _bookkeep(kernel.init_state(spec, device), i, spec)

    return Strategy("replay-s0", True, 1.0, fake=fake, all_steps=True)


def stop_early(f: float) -> Strategy:
    """Compute n - round(f n) steps honestly, then pad with copies of the last state."""

    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        return _bookkeep(state, i, spec)

    return Strategy("stop-early", False, f, fake=fake)


def downgrade(f: float, precision: str = "bf16", seed: int = 0) -> Strategy:
    """mlp-sgd: the faked steps use bf16 / fp16 / tf32 products (cheaper on a GPU)."""

    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        variants = kernel.downgrade_variants()  # type: ignore[attr-defined]
        return dict(variants[precision](state, i, spec))

    return Strategy(f"downgrade-{precision}", False, f, kernels=("mlp-sgd",), fake=fake, seed=seed,
                    params={"precision": precision})


def noise(f: float, ratio: float, seed: int = 0) -> Strategy:
    """mlp-sgd: the honest s_i plus d with |d| = ratio x the kernel's bound on every float element.

    ratio > 1 is outside the bound (caught when challenged); ratio < 1 is the documented limit
    of tolerance mode (a worker may drift by less than the bound at every step)."""

    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        honest = kernel.step(state, i, spec, device)
        scales = kernel.scales(honest, spec)  # type: ignore[attr-defined]
        rng = _seeded(p.strategy.seed, i, 7)
        out: dict[str, Tensor] = {}
        for name in sorted(honest):
            t = honest[name]
            if name not in scales:
                out[name] = t
                continue
            e = np.asarray(t.cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float64)
            bound = kernel.tau * 2.0**-24 * scales[name] + kernel.floor  # type: ignore[attr-defined]
            sign = rng.choice([-1.0, 1.0], size=e.shape)
            out[name] = torch.from_numpy((e + sign * ratio * bound).astype(np.float32))
        return out

    label = "noise-above" if ratio > 1 else "noise-below"
    return Strategy(label, False, f, kernels=("mlp-sgd",), fake=fake, seed=seed, params={"ratio": ratio})


def wrong_version() -> Strategy:
    """Every step computed by another version of the kernel, committed under the right spec.

    gemm-int8: a plausible older version without the per-step offset ``+ (i mod 251)``;
    mlp-sgd: the steps of another version's data stream (a different seed for the batches)."""

    def fake(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        if spec.kernel == "gemm-int8":
            out = kernel.step(state, i, spec, device)
            x = out["x"]
            assert isinstance(x, torch.Tensor)
            y = (x.to(torch.int32) - (i % 251)) & 0xFF
            return {"x": y.to(torch.uint8).view(torch.int8)}
        other = resolve_spec(JobSpec(kernel=spec.kernel, steps=spec.steps, seed=spec.seed ^ 0x5A5A,
                                     params=dict(spec.params)))
        return dict(kernel.step(state, i, other, device))

    return Strategy("wrong-version", True, 1.0, fake=fake, all_steps=True)


# -- answer-time lies ----------------------------------------------------------------------------


def _rebuild(p: LyingProver, resp: Response, states: dict[int, bytes],
             indices: tuple[int, ...] | None = None) -> Response:
    """A response opening ``states`` with a real multiproof over the committed leaves."""
    leaves = TraceStore.open(p.trace_dir).read_leaves()
    proof = MerkleTree(leaves).multiproof(sorted(states)) if states else []
    return Response(job_id=resp.job_id, root=resp.root, tree_size=resp.tree_size,
                    indices=resp.indices if indices is None else indices, states=states, proof=tuple(proof))


def answer_differently() -> Strategy:
    """Commit honestly, then answer with other states (here: each challenged s_i replaced by
    s_{i-1}, as a worker would that kept no trace) under the committed proof."""

    def answer(p: LyingProver, ch: Challenge, resp: Response) -> Response:
        states = dict(resp.states)
        for i in ch.indices:
            states[i] = resp.states[i - 1]
        return Response(job_id=resp.job_id, root=resp.root, tree_size=resp.tree_size, indices=resp.indices,
                        states=states, proof=resp.proof)

    return Strategy("answer-differently", True, answer=answer)


def partial_answer(drop: float = 0.5, seed: int = 0) -> Strategy:
    """Answer only some challenges: drop a fraction of the challenged steps (real proof of the rest)."""

    def answer(p: LyingProver, ch: Challenge, resp: Response) -> Response:
        rng = random.Random(seed)
        dropped = set(rng.sample(list(ch.indices), max(1, round(drop * ch.k))))
        keep = set(Response.opened_leaves([i for i in ch.indices if i not in dropped]))
        return _rebuild(p, resp, {j: s for j, s in resp.states.items() if j in keep})

    return Strategy("partial-answer", True, answer=answer, params={"drop": drop})


def refuse() -> Strategy:
    return Strategy("refuse", True, answer=lambda p, ch, resp: None)


def timeout(delay_s: float = 5.0) -> Strategy:
    """Answers, but only after ``delay_s``: :func:`answer_within` turns that into no answer."""

    def answer(p: LyingProver, ch: Challenge, resp: Response) -> Response:
        p.cancelled.wait(delay_s)
        return resp

    return Strategy("timeout", True, answer=answer, params={"delay_s": delay_s})


LEAF_LIES = ("value-of-previous", "value-flipped", "value-of-recomputed")


def leaf_lie(kind: str) -> Strategy:
    """Lies about a state opened by its leaf value (an exact kernel's s_i, docs/protocol.md §8),
    under the committed multiproof:

    value-of-previous:   an honest run; each challenged s_i's value is sent as s_(i-1)'s
    value-flipped:       an honest run; a bit of each challenged s_i's value flipped
    value-of-recomputed: the worker skipped every step (s_i = s_(i-1)) and sends the digest of the
                         honest s_i, the one the verifier will compute
    """
    if kind not in LEAF_LIES:
        raise ValueError(f"unknown leaf lie {kind!r}; expected one of {LEAF_LIES}")

    def answer(p: LyingProver, ch: Challenge, resp: Response) -> Response:
        leaves = TraceStore.open(p.trace_dir).read_leaves()
        values = dict(resp.values)
        store = TraceStore.open(p.trace_dir)
        kernel = kernel_for(store.spec)
        for i in ch.indices:
            if i not in values:  # opened whole (it is some s_(j-1) too): leave it
                continue
            if kind == "value-of-previous":
                values[i] = leaves[32 * (i - 1) : 32 * i]
            elif kind == "value-flipped":
                values[i] = bytes([values[i][0] ^ 1]) + values[i][1:]
            else:
                prev = decode_state(resp.states[i - 1]) if i - 1 in resp.states else kernel.init_state(store.spec)
                values[i] = state_digest(kernel.step(prev, i, store.spec))
        return Response(job_id=resp.job_id, root=resp.root, tree_size=resp.tree_size, indices=resp.indices,
                        states=dict(resp.states), values=values, proof=resp.proof)

    def skipped(p: LyingProver, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        return dict(state)

    return Strategy(f"leaf-{kind}", True, 1.0, kernels=("gemm-int8",),
                    fake=skipped if kind == "value-of-recomputed" else None, all_steps=True, answer=answer,
                    params={"kind": kind}, by_leaf=True)


FORGERIES = ("wrong-sibling", "wrong-index", "wrong-tree-size", "short-proof", "long-proof", "swapped-hashes",
             "proof-for-other-leaves")


def forge(kind: str) -> Strategy:
    """A response whose proof is forged. The worker faked step ``i`` (it skipped it) and tries to
    pass the honest-looking pair off by bending the proof instead of recomputing.

    wrong-sibling:          one multiproof hash flipped
    wrong-index:            two opened states presented at each other's leaf index
    wrong-tree-size:        the bundle claims another tree size (and a proof shaped for it)
    short-proof/long-proof: one hash missing / one extra
    swapped-hashes:         two hashes of the proof exchanged
    proof-for-other-leaves: a valid multiproof, but for another set of leaves
    """
    if kind not in FORGERIES:
        raise ValueError(f"unknown forgery {kind!r}; expected one of {FORGERIES}")

    def answer(p: LyingProver, ch: Challenge, resp: Response) -> Response:
        proof = list(resp.proof)
        states = dict(resp.states)
        size = resp.tree_size
        if kind == "wrong-sibling":
            if not proof:  # every leaf opened: there is no sibling to bend, so add one
                proof = [bytes(32)]
            proof[0] = bytes([proof[0][0] ^ 1]) + proof[0][1:]
        elif kind == "wrong-index":  # s_{i-1} presented at index i and s_i at i-1
            i = ch.indices[0]
            states[i - 1], states[i] = resp.states[i], resp.states[i - 1]
        elif kind == "wrong-tree-size":
            size = resp.tree_size + 1
            leaves = TraceStore.open(p.trace_dir).read_leaves()
            proof = MerkleTree(leaves + leaves[-32:]).multiproof(sorted(states))
        elif kind == "short-proof":
            proof = proof[:-1] if proof else []
            if not resp.proof:  # nothing to drop: drop a state instead of a hash
                states.pop(max(states))
        elif kind == "long-proof":
            proof = [*proof, proof[0] if proof else bytes(32)]
        elif kind == "swapped-hashes":
            if len(proof) >= 2:
                proof[0], proof[-1] = proof[-1], proof[0]
            else:
                proof = [bytes(reversed(h)) for h in proof] or [bytes(32)]
        elif kind == "proof-for-other-leaves":
            leaves = TraceStore.open(p.trace_dir).read_leaves()
            others = sorted({(j + 1) % size for j in states} | {0})
            proof = MerkleTree(leaves).multiproof(others)
        return Response(job_id=resp.job_id, root=resp.root, tree_size=size, indices=resp.indices, states=states,
                        proof=tuple(proof))

    return Strategy(f"forge-{kind}", True, answer=answer, params={"kind": kind})


def expected_failures(indices: Iterable[int], faked: Iterable[int], exact: bool) -> set[int]:
    """The steps a verdict fails when a liar whose ``faked`` steps were computed wrong answers
    ``indices`` the way an honest worker would (docs/protocol.md §8, §9): a tolerance kernel's
    are exactly the faked steps challenged; an exact kernel's answer opens only the state before
    each run of consecutive challenged steps, so in each run the first faked step fails (a
    MISMATCH) and every later step of the run fails unjudged (MISSING, ``pocv.check.NOT_JUDGED``:
    the committed state it starts from was not sent, and the verifier's own is not that one).
    Either way the verdict passes exactly when no faked step is challenged."""
    bad_steps = set(faked)
    if not exact:
        return bad_steps.intersection(indices)
    out: set[int] = set()
    for run in challenge_runs(sorted(set(indices))):
        bad = [i for i in run if i in bad_steps]
        if bad:
            out.update(i for i in run if i >= bad[0])
    return out


# -- the lying prover ------------------------------------------------------------------------------


#: states a lying prover keeps in memory to replay (more than any replay lag the strategies use)
HISTORY_STATES: Final = 64


class LyingProver(Prover):
    """A real prover that lies the way ``strategy`` says (see the module docstring)."""

    def __init__(self, *, strategy: Strategy, **kw: Any) -> None:
        super().__init__(**kw)
        self.strategy = strategy
        self.faked: frozenset[int] = frozenset()
        self.cancelled = threading.Event()
        self._history: dict[int, dict[str, Tensor]] = {}

    def run(self, spec: JobSpec, *, device: str = "cpu") -> Commitment:
        self.faked = self.strategy.faked_steps(spec.steps)
        return super().run(spec, device=device)

    def history_state(self, j: int, device: str) -> dict[str, Tensor]:
        """s_j as this worker committed it: from the states this run computed last (checkpoints
        are written behind the run, so the one for s_j may not be on disk yet), else from the
        trace's checkpoint and its own steps (a resumed trace)."""
        if j in self._history:
            return dict(self._history[j])
        store = TraceStore.open(self.trace_dir)
        kernel = kernel_for(store.spec)
        base = store.nearest_checkpoint(j)
        state: dict[str, Tensor] = dict(decode_state(store.read_checkpoint(base)))
        for t in range(base + 1, j + 1):
            state = self._step(kernel, state, t, store.spec, device)
        return state

    def _step(self, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        if not self.faked:  # opening a trace in a fresh process: re-derive the faked set
            self.faked = self.strategy.faked_steps(spec.steps)
        self._history.setdefault(i - 1, dict(state))
        if self.strategy.fake is not None and i in self.faked:
            out = self.strategy.fake(self, kernel, state, i, spec, device)
        else:
            out = super()._step(kernel, state, i, spec, device)
        self._history[i] = dict(out)
        for old in [k for k in self._history if k <= i - HISTORY_STATES]:  # bounded: the last few states
            del self._history[old]
        return out

    def respond(self, challenge: Challenge, *, device: str | None = None,  # type: ignore[override]
                whole: bool = False) -> Response | None:
        """The lie's answer. An answer-time lie rewrites a response that opens every leaf whole
        (unless the strategy says ``by_leaf``); a run-time liar answers as an honest worker."""
        lies = self.strategy.answer is not None
        resp = super().respond(challenge, device=device, whole=whole or (lies and not self.strategy.by_leaf))
        if self.strategy.answer is None:
            return resp
        return self.strategy.answer(self, challenge, resp)


class LazyProver(Prover):
    """A worker that skips a seeded fraction of its steps (replays the previous state instead).

    ``skipped`` counts the steps it skipped in its run. ``pocv demo``'s cheater.
    """

    def __init__(self, *, skip_fraction: float, seed: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.skip_fraction = skip_fraction
        self._salt = seed.to_bytes(8, "little")
        self.skipped = 0

    def skips(self, i: int) -> bool:
        """Whether step ``i`` is one this worker skips."""
        r = int.from_bytes(blake3(self._salt + i.to_bytes(8, "little")).digest()[:8], "little")
        return r < self.skip_fraction * 2**64

    def _step(self, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        if self.skips(i):
            self.skipped += 1
            return dict(state)
        return super()._step(kernel, state, i, spec, device)


class VariantProver(Prover):
    """An HONEST worker that runs another implementation of the kernel's step: gemm-int8's numpy
    int64 reference, or one of a tolerance kernel's ``honest_variants()`` (thread counts, op
    orders, fused bias, the float64 reference)."""

    def __init__(self, *, impl: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.impl = impl

    def _step(self, kernel: Kernel, state: State, i: int, spec: JobSpec, device: str) -> dict[str, Tensor]:
        if self.impl == "default":
            return super()._step(kernel, state, i, spec, device)
        if self.impl == "reference" and hasattr(kernel, "reference_step"):
            return dict(kernel.reference_step(state, i, spec))
        variants = kernel.honest_variants() if hasattr(kernel, "honest_variants") else {}
        if self.impl not in variants:
            raise ValueError(f"{spec.kernel} has no implementation {self.impl!r}; try {implementations(spec.kernel)}")
        return dict(variants[self.impl](state, i, spec))


def implementations(kernel_name: str) -> list[str]:
    """The honest implementations :class:`VariantProver` can run for a kernel."""

    k = get_kernel(kernel_name)
    out = ["default"]
    if hasattr(k, "honest_variants"):
        out += list(k.honest_variants())
    elif hasattr(k, "reference_step"):
        out.append("reference")
    return out


def make_liar(strategy: Strategy, *, trace_dir: str | Path, key: Signer | None = None,
              checkpoint_every: int = 1) -> LyingProver:
    """A :class:`LyingProver`. ``checkpoint_every=1`` keeps every state, so answers are cheap."""
    return LyingProver(strategy=strategy, trace_dir=trace_dir, key=key or Keypair(),
                       checkpoint_every=checkpoint_every)


def answer_within(prover: Prover, challenge: Challenge, deadline_s: float) -> Response | None:
    """The verifier's side of a timeout: the response if it comes within ``deadline_s``, else None."""
    box: list[Response | None] = []
    err: list[BaseException] = []

    def work() -> None:
        try:
            box.append(prover.respond(challenge))
        except BaseException as e:  # surfaced below
            err.append(e)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(deadline_s)
    if t.is_alive():
        if isinstance(prover, LyingProver):
            prover.cancelled.set()
        return None
    if err:
        raise err[0]
    return box[0] if box else None


# -- equivocation and grinding -----------------------------------------------------------------------


def equivocate(spec: JobSpec, key: Signer, tmp: Path) -> tuple[Commitment, Commitment]:
    """One worker, one job id, two validly signed commitments with different roots (an honest run
    and a run that skipped a step)."""
    honest = Prover(trace_dir=tmp / "equivocate-1", key=key, checkpoint_every=8).run(spec)
    other = make_liar(skip(0.05, seed=3), trace_dir=tmp / "equivocate-2", key=key, checkpoint_every=8).run(spec)
    return honest, other


def root_only_beacon(root: bytes) -> bytes:
    """The UNSOUND variant: a 'beacon' the worker can compute from its own root."""
    return bytes(blake3(b"root-only beacon" + root).digest())


@dataclass(frozen=True)
class GrindResult:
    rolls: int  # commitments tried until the challenges missed every faked step
    success: bool
    tries_hit: list[bool]  # per roll: did the root-only challenge hit a faked step?


def grind_root_only(spec: JobSpec, f: float, k: int, *, max_rolls: int, seed: int = 0,
                    leaves_for: Callable[[int], bytes] | None = None) -> GrindResult:
    """Re-roll a cheating commitment until challenges derived from the root alone miss it.

    A roll changes the garbage the worker writes at its faked steps (a fresh salt), which
    changes the root and so the root-only challenge. ``leaves_for(salt)`` gives the leaf values
    of the trace for a salt (default: :func:`fabricated_leaves`, the same leaves a
    ``make_liar(fabricate(f, seed).with_salt(salt))`` run commits, computed in memory).
    """
    n = spec.steps
    faked = pick_steps(n, f, seed)
    hits: list[bool] = []
    for roll in range(max_rolls):
        leaves = leaves_for(roll) if leaves_for is not None else fabricated_leaves(spec, f, seed, roll)
        root = MerkleTree(leaves).root
        idx = derive_indices(spec.job_id, root, root_only_beacon(root), n, k)
        hit = bool(faked.intersection(idx))
        hits.append(hit)
        if not hit:
            return GrindResult(roll + 1, True, hits)
    return GrindResult(max_rolls, False, hits)


def fabricated_leaves(spec: JobSpec, f: float, seed: int, salt: int) -> bytes:
    """Leaf values of a fabricate(f) run whose garbage is salted by ``salt`` (in memory, no trace)."""

    kernel = kernel_for(spec)
    faked = pick_steps(spec.steps, f, seed)
    state: State = kernel.init_state(spec)
    out = [state_digest(state)]
    for i in range(1, spec.steps + 1):
        state = (_bookkeep(_garbage_like(state, seed, salt, i), i, spec) if i in faked
                 else kernel.step(state, i, spec))
        out.append(state_digest(state))
    return b"".join(out)


# -- the catalogue ------------------------------------------------------------------------------------

#: name -> factory. Sampled strategies take f; certain ones take nothing.
SAMPLED: dict[str, Callable[[float], Strategy]] = {
    "fabricate": fabricate,
    "skip": skip,
    "replay-earlier": replay_earlier,
    "stop-early": stop_early,
    "downgrade-bf16": lambda f: downgrade(f, "bf16"),
    "noise-above": lambda f: noise(f, 1.5),
}
CERTAIN: dict[str, Callable[[], Strategy]] = {
    "replay-s0": replay_s0,
    "wrong-version": wrong_version,
    "answer-differently": answer_differently,
    "partial-answer": partial_answer,
    "refuse": refuse,
    **{f"forge-{k}": functools.partial(forge, k) for k in FORGERIES},
    **{f"leaf-{k}": functools.partial(leaf_lie, k) for k in LEAF_LIES},
}


def strategies_for(kernel: str, names: Iterable[str] | None = None) -> list[str]:
    """The sampled strategies that apply to ``kernel``."""
    out = []
    for name, make in SAMPLED.items():
        if names is not None and name not in names:
            continue
        if kernel in make(0.1).kernels:
            out.append(name)
    return out
