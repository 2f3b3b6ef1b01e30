"""Issue 16: committing off the critical path, checkpoint policies, parallel answers, and the
state digest's fast path — each checked against the plain, synchronous behaviour bit for bit."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest
import torch
from blake3 import blake3
from solders.keypair import Keypair

from pocv import Prover, Verifier
from pocv import encoding as enc
from pocv.encoding import STATE_CONTEXT, decode_state, digest_encoded, encode_state, encoded_pieces, state_digest
from pocv.errors import InputError, StorageError
from pocv.jobs import JobSpec
from pocv.kernels import get_kernel, kernel_for, kernel_names, resolve_spec
from pocv.kernels.gemm_int8 import GemmInt8
from pocv.merkle import IncrementalTree, MerkleTree
from pocv.trace import (
    DEFAULT_CHECKPOINT_POLICY,
    MAX_PENDING_WRITES,
    CheckpointPolicy,
    Committer,
    TraceStore,
    _StateWriter,
    parse_size,
    recompute_steps,
)
from tests.helpers import SMALL, assert_trace_holds, remember_committers

KEY = Keypair.from_seed(bytes([16]) * 32)
TINY = {"gemm-fp32": {"n": 16}, "gemm-fp32-exact": {"n": 16}, "gemm-int8": {"n": 16, "layers": 1},
        "heat2d": {"n": 8, "substeps": 2}, "mlp-sgd": {"width": 8, "depth": 1, "batch": 4}}


def _slow_digest(state) -> bytes:
    """The digest of the joined canonical bytes, parsed from scratch: a path independent of the
    cached layouts and the in-place one-tensor path these tests check."""
    return enc.digest_encoded(b"".join(enc._pieces(state)))


# -- the state digest's fast path ---------------------------------------------------------------


def _states() -> list[dict]:
    rng = np.random.default_rng(1)
    return [
        {"x": torch.from_numpy(rng.integers(0, 256, 4096, dtype=np.uint8))},
        {"w": torch.randn(7, 5), "b": torch.zeros(0, 3), "s": torch.tensor(3.5), "h": torch.ones(4, dtype=torch.bfloat16)},
        {"a": np.arange(12, dtype=np.int64).reshape(3, 4), "m": np.array([True, False, True])},
        {"e": torch.zeros(0)},
        {"big": torch.randn(300_000), "z": torch.zeros(2, dtype=torch.int16)},  # above the join size
        {"only": torch.randn(64, 64)},
    ]


@pytest.mark.parametrize("i", range(len(_states())))
def test_fast_digest_and_encoding_equal_the_general_path(i: int) -> None:
    enc._LAYOUTS.clear()
    state = _states()[i]
    first = (encode_state(state), state_digest(state))  # general path, then the layout is cached
    assert enc._fast_parts(state) is not None
    for _ in range(2):  # cached path
        assert encode_state(state) == first[0]
        assert state_digest(state) == first[1] == _slow_digest(state)
        assert b"".join(bytes(p) for p in encoded_pieces(state)) == first[0]
    assert decode_state(first[0]).keys() == state.keys()


def test_fast_path_falls_back_on_layout_changes() -> None:
    enc._LAYOUTS.clear()
    base = {"x": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    state_digest(base)
    for other in ({"x": torch.arange(12, dtype=torch.float32).reshape(4, 3)},  # same names, new shape
                  {"x": torch.arange(12, dtype=torch.float64).reshape(3, 4)},  # new dtype
                  {"x": torch.arange(12, dtype=torch.float32).reshape(4, 3).t()},  # strided
                  {"x": torch.arange(12, dtype=torch.float32).reshape(3, 4).requires_grad_()},
                  {"x": np.arange(12, dtype=">f4").reshape(3, 4)}):  # big-endian numpy
        assert state_digest(other) == _slow_digest(other)
        assert encode_state(other) == b"".join(enc._pieces(other))


# -- checkpoint policies ------------------------------------------------------------------------


def test_policy_parsing_and_intervals() -> None:
    assert CheckpointPolicy.parse("all").every == 1
    assert CheckpointPolicy.parse("every:16").every == 16 == CheckpointPolicy.parse(16).every
    assert CheckpointPolicy.parse("budget:1GiB").budget == 1 << 30
    assert CheckpointPolicy.parse("auto:2GB") == CheckpointPolicy(auto=True, budget=2 * 10**9)
    assert CheckpointPolicy.parse("auto") == DEFAULT_CHECKPOINT_POLICY
    assert parse_size("1.5KiB") == 1536 and parse_size("4096") == 4096
    for bad in ("sometimes", "every:x", "budget:", "every:0"):
        with pytest.raises(InputError):
            CheckpointPolicy.parse(bad)
    assert recompute_steps(1) == 0 and recompute_steps(2) == 1
    mib4 = 4 << 20
    # auto: the respond bound (66 challenges recompute <= 5% of the steps) within the budget
    assert CheckpointPolicy.parse("auto").interval(1000, mib4) == 1
    c = CheckpointPolicy.parse("auto").interval(10_000, mib4)
    assert 66 * recompute_steps(c) <= 500 < 66 * recompute_steps(c + 1)
    # a budget: the most checkpoints that fit
    for steps, budget in ((1000, 1 << 30), (999, 10 * mib4), (50, mib4), (5, 1 << 40)):
        c = CheckpointPolicy(budget=budget).interval(steps, mib4)
        assert (steps // c + 1) * mib4 <= max(budget, mib4) or c == steps + 1
        assert c == 1 or (steps // (c - 1) + 1) * mib4 > budget
    assert CheckpointPolicy(auto=True, budget=mib4 * 11).interval(1000, mib4) == 1000 // 11 + 1


@pytest.mark.parametrize("policy", ["all", "every:5", "budget:20KB", "auto"])
def test_runs_under_each_policy_answer_and_verify(tmp_path, policy: str) -> None:
    p = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint=policy)
    c = p.run(SMALL)
    store = TraceStore.open(tmp_path / "t")
    every = store.checkpoint_every
    assert store.checkpoints() == list(range(0, SMALL.steps + 1, every))
    v = Verifier(key=Keypair())
    ch = v.challenge(c, beacon=secrets.token_bytes(32))
    assert v.check(c, ch, p.respond(ch).to_bytes()).passed


def test_checkpoint_every_and_policy_are_exclusive(tmp_path) -> None:
    with pytest.raises(InputError):
        Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=4, checkpoint="all")


# -- committing in the background ---------------------------------------------------------------


def _trace_files(d) -> dict[str, bytes]:
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name not in ("commitment.json",):
            out[str(p.relative_to(d))] = p.read_bytes()
    return out


@pytest.mark.parametrize("kernel", ["gemm-int8", "mlp-sgd", "heat2d"])
def test_background_and_synchronous_commits_write_the_same_trace(tmp_path, kernel: str) -> None:
    spec = resolve_spec(JobSpec(kernel=kernel, steps=21, seed=4, params=TINY[kernel]))
    roots = []
    for mode in (True, False):
        d = tmp_path / f"bg-{mode}"
        roots.append(Prover(trace_dir=d, key=KEY, checkpoint_every=4, background=mode).run(spec).root)
    assert roots[0] == roots[1]
    assert _trace_files(tmp_path / "bg-True") == _trace_files(tmp_path / "bg-False")
    # and the root is the plain definition: the Merkle root over state digests of s_0..s_n
    k = kernel_for(spec)
    s = k.init_state(spec)
    digests = [state_digest(s)]
    for i in range(1, spec.steps + 1):
        s = k.step(s, i, spec)
        digests.append(state_digest(s))
    assert MerkleTree(digests).root == roots[0]


@pytest.mark.parametrize("kernel", kernel_names())
def test_builtin_steps_do_not_modify_their_input(kernel: str) -> None:
    """The committer reads s_i while s_(i+1) computes without copying it (Prover._pure_steps)."""
    if kernel not in TINY:  # a kernel that needs artifacts to run (a model): copied unless declared pure
        assert not get_kernel(kernel).step_is_pure(), f"{kernel} declares a pure step: give it a TINY spec here"
        pytest.skip(f"{kernel}: no small spec without artifacts; not declared pure, so its states are copied")
    spec = resolve_spec(JobSpec(kernel=kernel, steps=3, seed=2, params=TINY[kernel]))
    k = kernel_for(spec)
    assert k.step_is_pure()  # declared in its class (Kernel.pure_step), and kept:
    s = k.init_state(spec)
    for i in range(1, 3):
        before = encode_state(s)
        nxt = k.step(s, i, spec)
        assert encode_state(s) == before, f"{kernel} step {i} modified its input"
        s = nxt


_real_write_checkpoint = TraceStore.write_checkpoint


def _failing_write_checkpoint(self, index, encoded_state, **kw) -> None:
    if index == 12:
        raise StorageError(f"disk full at checkpoint {index}")
    _real_write_checkpoint(self, index, encoded_state, **kw)


def test_an_error_on_the_commit_thread_surfaces_and_the_run_resumes_to_the_same_root(tmp_path, monkeypatch) -> None:
    reference = Prover(trace_dir=tmp_path / "ref", key=KEY, checkpoint_every=4).run(SMALL).root
    monkeypatch.setattr(TraceStore, "write_checkpoint", _failing_write_checkpoint)
    with pytest.raises(StorageError, match="disk full at checkpoint 12"):
        Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=4).run(SMALL)
    monkeypatch.undo()
    store = TraceStore.open(tmp_path / "t")
    leaves = store.read_leaves()
    # the committing stopped within a few states of the failure (writes are asynchronous, two
    # at a time, at most MAX_PENDING_WRITES waiting), and what is on disk is consistent: a
    # prefix of the job's leaves, every checkpoint matching its leaf, no commitment
    assert len(leaves) // 32 <= 12 + 4 * (MAX_PENDING_WRITES + 2) and 12 not in store.checkpoints()
    ref_leaves = TraceStore.open(tmp_path / "ref").read_leaves()
    assert ref_leaves.startswith(leaves)
    for j in store.checkpoints():
        if j < len(leaves) // 32:
            assert digest_encoded(store.read_checkpoint(j)) == leaves[32 * j : 32 * (j + 1)]
    assert not (tmp_path / "t" / "commitment.json").exists()
    assert Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=4).run(SMALL).root == reference


def test_a_stalled_disk_holds_the_pipeline_within_its_bounds(tmp_path, monkeypatch) -> None:
    """Checkpoint writes that do not finish: the committer hands over MAX_PENDING_WRITES of them
    and then waits (bounded memory; the run waits with it); once the disk moves again the
    trace is the one a fast disk gives."""
    import threading

    reference = _trace_files_after(tmp_path / "fast", True)
    gate = threading.Event()
    committers: list[Committer] = remember_committers(monkeypatch)
    seen: list[int] = []

    def stalled(self, index, encoded_state, **kw) -> None:
        if "writer" in kw:  # a writer thread: wait for the disk
            assert gate.wait(60)
        _real_write_checkpoint(self, index, encoded_state, **kw)

    def watch() -> None:
        while not committers or committers[-1]._pending_count < MAX_PENDING_WRITES:
            threading.Event().wait(0.005)
        threading.Event().wait(0.2)  # the committer had time to hand over more, if it would
        seen.append(committers[-1]._pending_count)
        gate.set()

    import pocv.trace as trace_module  # writer threads for every checkpoint, as for large states

    monkeypatch.setattr(trace_module, "INLINE_CHEAP_WRITES", False)
    monkeypatch.setattr(TraceStore, "write_checkpoint", stalled)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert _trace_files_after(tmp_path / "slow", True) == reference
    watcher.join(5)
    assert seen == [MAX_PENDING_WRITES]


def _trace_files_after(d, background: bool) -> dict[str, bytes]:
    Prover(trace_dir=d, key=KEY, checkpoint="all", background=background).run(SMALL)
    return _trace_files(d)


def test_committer_raises_on_submit_once_failed(tmp_path) -> None:
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=2)
    committer = Committer(store, IncrementalTree(), depth=1)
    committer.submit(0, {"x": "not a tensor"})  # type: ignore[dict-item]

    def keep_submitting() -> None:
        for i in range(1, 50):
            committer.submit(i, {"x": torch.zeros(2)})

    with pytest.raises(Exception, match="torch.Tensor or numpy"):
        keep_submitting()
    with pytest.raises(Exception, match="torch.Tensor or numpy"):
        committer.close()


# -- writing states and answering ---------------------------------------------------------------


def test_direct_and_buffered_checkpoint_writes_are_identical(tmp_path, monkeypatch) -> None:
    state = {"a": torch.randn(3000), "b": torch.arange(7, dtype=torch.int64)}
    pieces = encoded_pieces(state)
    _StateWriter().write(tmp_path / "direct.state", pieces)
    monkeypatch.setenv("POCV_NO_DIRECT_IO", "1")
    _StateWriter().write(tmp_path / "buffered.state", pieces)
    assert (tmp_path / "direct.state").read_bytes() == (tmp_path / "buffered.state").read_bytes() == encode_state(state)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_parallel_respond_gives_the_same_bundle(tmp_path) -> None:
    p1 = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8)
    c = p1.run(SMALL)
    ch = Verifier(key=Keypair()).challenge(c, beacon=bytes(32))
    p2 = Prover(trace_dir=tmp_path / "t", key=KEY, respond_workers=2)
    assert p1.respond(ch).to_bytes() == p2.respond(ch).to_bytes()


def test_no_temporaries_are_left_by_a_run(tmp_path) -> None:
    Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=3).run(SMALL)
    assert not [p for p in (tmp_path / "t").rglob("*") if p.name.endswith(".tmp")]
    assert (tmp_path / "t" / "checkpoints.pack").stat().st_size > 0
    assert not os.listdir(tmp_path / "t" / "checkpoints")  # every state fits its slot


# -- which kernels are shared with the committer, and answered in parallel ------------------------


class _Subclass(GemmInt8):
    """A plugin's subclass of a built-in kernel: not declared pure, so copied and answered serially."""


def test_purity_is_declared_not_guessed(tmp_path) -> None:
    p = Prover(trace_dir=tmp_path / "t", key=KEY, respond_workers=3)
    builtin = kernel_for(SMALL)
    assert builtin.step_is_pure() and p._pure_steps(builtin) and p.workers(builtin, "cpu") == 3
    sub = _Subclass()
    assert not sub.step_is_pure() and not p._pure_steps(sub) and p.workers(sub, "cpu") == 1
    _Subclass.pure_step = True  # a class that declares it
    try:
        assert sub.step_is_pure() and p.workers(sub, "cpu") == 3
    finally:
        del _Subclass.pure_step
    # a prover whose step is not the kernel's own (a simulated cheater) never shares states
    cheater = type("Cheater", (Prover,), {"_step": lambda self, k, s, i, spec, d: k.step(s, i, spec, d)})
    assert not cheater(trace_dir=tmp_path / "u", key=KEY)._pure_steps(builtin)
    assert Prover(trace_dir=tmp_path / "v", key=KEY).workers(builtin, "cpu") >= 1


def test_a_copying_committer_hashes_the_state_as_submitted(tmp_path) -> None:
    """A step that modifies its input after submit (an impure kernel) cannot change the leaf."""
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=2)
    tree = IncrementalTree()
    committer = Committer(store, tree, copy=True)
    states = [{"x": torch.full((256,), float(i))} for i in range(8)]
    want = [state_digest({"x": s["x"].clone()}) for s in states]
    for i, s in enumerate(states):
        committer.submit(i, s)
        s["x"].fill_(-1.0)  # what the next step of an impure kernel might do to its input
    committer.close()
    store.close()
    assert store.read_leaves() == b"".join(want)
    assert tree.root() == MerkleTree(want).root


def test_the_thread_is_kept_only_when_it_wins_by_the_margin() -> None:
    """Ties and wins inside the drift of two windows go to the caller's thread (ADAPT_MARGIN)."""
    from pocv.trace import ADAPT_MARGIN, thread_wins

    inline = 0.010
    assert thread_wins({False: inline, True: inline * (1 - ADAPT_MARGIN) * 0.99})
    assert not thread_wins({False: inline, True: inline * (1 - ADAPT_MARGIN) * 1.01})
    assert not thread_wins({False: inline, True: inline})  # a tie: in line
    assert not thread_wins({False: inline, True: inline * 1.2})


@pytest.mark.parametrize("slow", ["nothing", "inline", "thread"])
def test_an_adaptive_committer_keeps_the_mode_it_measures_faster(tmp_path, monkeypatch, slow: str) -> None:
    """``background=None``: the first ADAPT_STATES states are committed inline and timed; commits
    under BACKGROUND_MIN_COMMIT_S stay there. Dearer ones (the threshold set to 0 here) measure a
    window on the committer thread, keep the mode whose submits came faster and measure the other
    again now and then: here one mode is made 8 ms slower per state (a commit in line, or a
    hand-over to the thread), and the committer spends most states in the other. Whatever the
    switches, the leaves, the tree and the checkpoints are those of a synchronous commit, each
    state as it was submitted (an impure step changes its input after the hand-over)."""
    import time  # the slower mode sleeps

    import pocv.trace as trace_module  # the threshold, and a slower mode

    n = trace_module.ADAPT_STATES
    # the thread's adaptation, where the platform has no commit process (tests/test_commit_process.py)
    monkeypatch.setattr(trace_module, "USE_COMMIT_PROCESS", False)
    # the threshold decides, not the machine's speed: every commit counts as cheap (inf) or dear (0)
    monkeypatch.setattr(trace_module, "BACKGROUND_MIN_COMMIT_S", float("inf") if slow == "nothing" else 0.0)
    committers: list[Committer] = []
    real_snapshot = trace_module.snapshot

    def snapshot(state, *, copy):
        on_thread = committers[0]._thread is not None
        if (slow == "inline" and not on_thread) or (slow == "thread" and on_thread):
            time.sleep(0.008)
        return real_snapshot(state, copy=copy)

    monkeypatch.setattr(trace_module, "snapshot", snapshot)
    count = n * (2 + 3 * (trace_module.ADAPT_HOLD + 2))
    states = [{"x": torch.full((512,), float(i)), "y": torch.arange(i, i + 64, dtype=torch.int64)} for i in range(count)]
    want = [state_digest({k: v.clone() for k, v in st.items()}) for st in states]
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=3)
    tree = IncrementalTree()
    committer = Committer(store, tree, background=None, copy=True)
    committers.append(committer)
    seen = []
    for i, st in enumerate(states):
        committer.submit(i, st)
        seen.append(committer.background)
        st["x"].fill_(-1.0)
        time.sleep(0.001)  # the step
    committer.close()
    store.close()
    assert seen[:n] == [False] * n
    if slow == "nothing":  # cheap commits: in line throughout
        assert committer.switches == [] and not any(seen)
    else:
        assert committer.switches[0] == (n, True)  # the thread measured after the first window
        fast = slow == "thread"  # the mode that should hold most states: in line when the thread is slow
        share = sum(1 for b in seen[n:] if b != fast) / len(seen[n:])
        assert share >= 0.6, (share, committer.switches)
        assert len(committer.switches) >= 2  # the slower mode was measured again
    assert store.read_leaves() == b"".join(want)
    assert tree.root() == MerkleTree(want).root
    for i in range(0, len(states), 3):
        assert digest_encoded(store.read_checkpoint(i)) == want[i]


def test_a_file_system_that_refuses_direct_io_gets_ordinary_writes(tmp_path, monkeypatch) -> None:
    """Where O_DIRECT is refused (EINVAL: some network and FUSE file systems; this host's ext4 and
    tmpfs accept it, so the refusal is simulated at os.open), the writer falls back to the page
    cache for that write and every later one, with the same bytes and no temporaries left."""
    import errno

    from pocv import trace

    if not trace._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform: the writer never tries it")
    real_open = os.open
    refused = []

    def open_refusing_direct(path, flags, *args, **kw):
        if flags & trace._O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", open_refusing_direct)
    writer = _StateWriter()
    states = [{"a": torch.randn(3000) + i} for i in range(3)]
    for i, st in enumerate(states):
        writer.write(tmp_path / f"{i}.state", encoded_pieces(st))
    assert len(refused) == 1  # tried once, then ordinary writes only
    for i, st in enumerate(states):
        assert (tmp_path / f"{i}.state").read_bytes() == encode_state(st)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_one_tensor_path_reads_exactly_the_tensor_bytes() -> None:
    """state_digest reads a small one-tensor state in place (its data pointer): views with an
    offset, a lazily negated view, a tensor that needs grad, strided and numpy states all give
    the digest of their canonical bytes."""
    enc._LAYOUTS.clear()
    base = torch.randn(65, 64)
    state_digest({"w": base[1:]})  # caches the layout of a (64, 64) float32 state named w
    assert enc._LAYOUTS[("w",)].one is not None
    with pytest.raises(RuntimeError, match="negative bit"):  # never hashed as its raw memory
        state_digest({"w": torch._neg_view(base[1:])})
    for t in (base[1:], base[:64], torch.randn(64, 64).requires_grad_(), base[1:].t(), base[1:].numpy(), np.asfortranarray(base[1:].numpy()), torch.randn(64, 64).double(),
              torch.randn(8, 512)):
        state = {"w": t}
        assert state_digest(state) == _slow_digest({"w": t.detach().clone() if isinstance(t, torch.Tensor) else t})


def test_aligned_feeding_hashes_the_same_stream() -> None:
    """_update_aligned feeds BLAKE3 the pieces' concatenation, whatever their sizes and order."""
    rng = np.random.default_rng(5)
    sizes = [0, 1, 19, 8191, 8192, 16383, 16384, 16385, 40_000, 100_000]
    for trial in range(40):
        pieces = []
        for n in rng.choice(sizes, size=int(rng.integers(1, 7))):
            data = rng.integers(0, 256, int(n), dtype=np.uint8).tobytes()
            pieces.append(memoryview(data) if trial % 2 else data)
        h = blake3(derive_key_context=STATE_CONTEXT)
        enc._update_aligned(h, pieces)
        want = blake3(b"".join(bytes(p) for p in pieces), derive_key_context=STATE_CONTEXT).digest()
        assert h.digest() == want
        assert enc.digest_pieces(pieces) == want


def test_hashing_inline_with_writes_behind_keeps_what_was_submitted(tmp_path) -> None:
    """The mode for small states (Prover background=None): hashed on the caller's thread,
    checkpoints written by writer threads; a state the next step modifies (an impure kernel)
    is copied before its write is handed over, so the file holds the state as submitted."""
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=2)
    tree = IncrementalTree()
    committer = Committer(store, tree, background=False, async_writes=True, copy=True)
    states = [{"x": torch.full((4096,), float(i))} for i in range(9)]
    want = [encode_state({"x": s["x"].clone()}) for s in states]
    for i, s in enumerate(states):
        committer.submit(i, s)
        s["x"].fill_(-1.0)  # what the next step of an impure kernel might do to its input
    committer.close()
    store.close()
    assert_trace_holds(store, want, [0, 2, 4, 6, 8])


def test_the_prover_measures_where_to_hash_small_states_unless_told(tmp_path) -> None:
    """By default a small state's committer is adaptive (it starts in line, with writer threads
    for large checkpoints, and measures the thread) and a large state's hashes on its thread
    from the start; ``background`` fixes the mode for both."""
    big_spec = resolve_spec(JobSpec(kernel="gemm-fp32", steps=2, seed=1, params={"n": 512}))
    cases = [(None, (True, False), (False, True)), (True, (False, True), (False, True)),
             (False, (False, False), (False, False))]
    for n, (background, small, big) in enumerate(cases):
        p = Prover(trace_dir=tmp_path / "t", key=KEY, background=background)
        for m, (spec, (adaptive, thread)) in enumerate(((SMALL, small), (big_spec, big))):
            c = p._committer(TraceStore.open(tmp_path / f"{n}{m}", spec), IncrementalTree(), kernel_for(spec), spec)
            try:
                assert c._adaptive is adaptive and (c._thread is not None) is thread
                assert (c._pool is not None) is (background is not False)
            finally:
                c.close()
