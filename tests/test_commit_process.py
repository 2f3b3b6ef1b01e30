"""The commit process (pocv._commitproc): an adaptive committer whose states are dear to commit in
line hands them to a forked child over a shared-memory ring. Whatever it does, the leaves, the
tree and the checkpoints are those of a synchronous commit; its failures reach the caller as
StorageError, never as a hang; it never outlives the run."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch
from solders.keypair import Keypair

import pocv.trace as trace_module
from pocv import Prover, Verifier, _commitproc
from pocv.encoding import digest_encoded, encode_state, state_digest
from pocv.errors import SetupError, StorageError
from pocv.merkle import IncrementalTree, MerkleTree
from pocv.trace import ADAPT_STATES, Committer, TraceStore
from tests.helpers import SMALL, Crash, CrashingProver, remember_committers

pytestmark = pytest.mark.skipif(not _commitproc.available(), reason="no commit process on this platform (no fork)")

KEY = Keypair.from_seed(bytes([24]) * 32)


@pytest.fixture
def dear(monkeypatch):
    """Every commit counts as dear: the adaptive committer goes to the process after its first
    window, whatever this machine's speed."""
    monkeypatch.setattr(trace_module, "BACKGROUND_MIN_COMMIT_S", 0.0)


def _state(i: int, kind: str = "a") -> dict[str, torch.Tensor]:
    if kind == "a":
        return {"x": torch.full((512,), float(i)), "y": torch.arange(i, i + 64, dtype=torch.int64)}
    if kind == "small":  # another schema, smaller than the first: fits its slots
        return {"x": torch.full((256,), float(-i))}
    return {"x": torch.full((512,), float(i)), "y": torch.arange(64, dtype=torch.int64),  # larger: does not
            "z": torch.randn(4096, generator=torch.Generator().manual_seed(i))}


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _commit_all(tmp_path, states, *, every: int = 3, name: str = "t") -> tuple[Committer, TraceStore, list[bool], int]:
    """Submit ``states`` to an adaptive committer, changing each state's tensors right after its
    submit (an impure step): (the committer, its closed store, whether each went to the process,
    the child's pid)."""
    store = TraceStore.open(tmp_path / name, SMALL, checkpoint_every=every)
    committer = Committer(store, IncrementalTree(), background=None, copy=True)
    went, pid = [], 0
    for i, st in enumerate(states):
        sent = committer._proc.sent if committer._proc else 0
        committer.submit(i, st)
        went.append(committer._proc is not None and committer._proc.sent > sent)
        if committer.process:
            pid = committer._proc.pid  # type: ignore[union-attr]
        for t in st.values():
            t.fill_(-7)  # the next step overwrites its input: the ring holds the copy
    committer.close()
    store.close()
    return committer, store, went, pid


def _submit_and_close(committer: Committer, indices: range, pids: list[int]) -> None:
    """Submit ``_state(i)`` for each index (the child's pid, once there is one, into ``pids``), then close."""
    for i in indices:
        committer.submit(i, _state(i))
        if committer._proc is not None:
            pids.append(committer._proc.pid)
    committer.close()


def _assert_synchronous(store: TraceStore, tree_root: bytes, want: list[bytes], encodings: list[bytes], every: int) -> None:
    assert store.read_leaves() == b"".join(want)
    assert tree_root == MerkleTree(want).root
    assert store.checkpoints() == list(range(0, len(want), every))
    for j in range(0, len(want), every):
        assert store.read_checkpoint(j) == encodings[j]


def test_the_process_commits_what_a_synchronous_commit_would(tmp_path, dear) -> None:
    states = [_state(i) for i in range(5 * ADAPT_STATES)]
    want = [state_digest(s) for s in states]
    encodings = [encode_state(s) for s in states]
    committer, store, went, pid = _commit_all(tmp_path, states)
    assert committer.process_from == ADAPT_STATES  # after the first window, timed in line
    assert went == [False] * ADAPT_STATES + [True] * (len(states) - ADAPT_STATES)
    assert pid and _reaped(pid) and not committer.process
    assert committer.committed == len(states) - 1 and committer.skipped == []
    _assert_synchronous(store, committer.tree.root(), want, encodings, 3)


def test_a_state_the_ring_cannot_take_is_committed_in_line_in_order(tmp_path, dear) -> None:
    """Another schema that fits a slot goes to the process (its headers written into the slot
    first); a state larger than a slot is committed in line after every state handed over before
    it, and the process takes the next."""
    kinds = ["a"] * (ADAPT_STATES + 3) + ["small", "a", "small", "small", "a", "big", "a", "a", "big", "small", "a"]
    states = [_state(i, k) for i, k in enumerate(kinds)]
    want = [state_digest(s) for s in states]
    encodings = [encode_state(s) for s in states]
    committer, store, went, pid = _commit_all(tmp_path, states, every=1)
    n = ADAPT_STATES + 3
    assert went[n:] == [True, True, True, True, True, False, True, True, False, True, True]
    assert _reaped(pid)
    _assert_synchronous(store, committer.tree.root(), want, encodings, 1)


def test_the_childs_error_reaches_the_caller(tmp_path, dear, monkeypatch) -> None:
    """A checkpoint write that fails in the child (a full disk) is raised by a later submit or by
    close, with the child's message; nothing hangs and the child is gone."""
    real = TraceStore.write_checkpoint

    def full_disk(self, index, encoded_state, **kw):
        if index >= ADAPT_STATES + 4:
            raise StorageError(f"cannot write checkpoint {index}: No space left on device")
        return real(self, index, encoded_state, **kw)

    monkeypatch.setattr(TraceStore, "write_checkpoint", full_disk)  # before the fork: the child's too
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=None)
    pids: list[int] = []
    with pytest.raises(StorageError, match="No space left on device"):
        _submit_and_close(committer, range(ADAPT_STATES * 6), pids)
    committer.abort()
    assert pids and _reaped(pids[-1])
    # the leaves the parent appended are a prefix of the job's, each checkpoint on disk matches its leaf
    leaves = store.read_leaves()
    assert leaves == b"".join(state_digest(_state(i)) for i in range(len(leaves) // 32))
    for j in store.checkpoints():
        assert j < ADAPT_STATES + 4


def test_a_killed_child_is_reported_not_waited_for(tmp_path, dear) -> None:
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=None)
    for i in range(ADAPT_STATES + 2):
        committer.submit(i, _state(i))
    assert committer.process
    pid = committer._proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StorageError, match="commit process stopped .*killed by signal 9"):
        _submit_and_close(committer, range(ADAPT_STATES + 2, 10 * ADAPT_STATES), [])
    committer.abort()
    assert _reaped(pid)


def test_abort_stops_the_child_at_once(tmp_path, dear) -> None:
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=None)
    for i in range(ADAPT_STATES + 5):
        committer.submit(i, _state(i))
    pid = committer._proc.pid  # type: ignore[union-attr]
    committer.abort()
    assert _reaped(pid) and not committer.process


def test_a_best_effort_run_skips_writes_while_the_child_is_behind(tmp_path, dear, monkeypatch) -> None:
    """With a disk slower than the steps, a best-effort committer's child keeps the leaf of every
    state and skips the checkpoints while half the ring waits for it; s_0 and every kept one
    match their leaves. An explicit interval (no skip_behind) keeps them all, waiting."""
    real = TraceStore.write_checkpoint

    def slow(self, index, encoded_state, **kw):
        if index >= ADAPT_STATES:
            time.sleep(0.02)
        return real(self, index, encoded_state, **kw)

    monkeypatch.setattr(TraceStore, "write_checkpoint", slow)
    states = [_state(i) for i in range(6 * ADAPT_STATES)]
    want = [state_digest(s) for s in states]
    for skip in (True, False):
        store = TraceStore.open(tmp_path / f"t{skip}", SMALL, checkpoint_every=1)
        committer = Committer(store, IncrementalTree(), background=None, skip_behind=skip)
        for i, st in enumerate(states):
            committer.submit(i, st)
        committer.close()
        store.close()
        assert store.read_leaves() == b"".join(want)
        kept = store.checkpoints()
        if skip:
            assert committer.skipped and 0 in kept and not set(committer.skipped) & set(kept)
            assert sorted(kept + committer.skipped) == list(range(len(states)))
        else:
            assert committer.skipped == [] and kept == list(range(len(states)))
        for j in kept:
            assert digest_encoded(store.read_checkpoint(j)) == want[j]


def test_a_prover_run_through_the_process_verifies_and_resumes(tmp_path, dear, monkeypatch) -> None:
    """End to end: a run whose states go to the commit process has the synchronous run's root, its
    answers verify; one killed mid-run resumes (from a trace where checkpoints may lie past the
    leaves) to the same root."""
    reference = Prover(trace_dir=tmp_path / "ref", key=KEY, background=False).run(SMALL)
    committers = remember_committers(monkeypatch)
    c = Prover(trace_dir=tmp_path / "t", key=KEY).run(SMALL)
    assert committers[-1].process_from == ADAPT_STATES and c.root == reference.root
    verifier = Verifier(key=Keypair())
    challenge = verifier.challenge(c, beacon=bytes(range(32)))
    assert verifier.check(c, challenge, Prover(trace_dir=tmp_path / "t", key=KEY).respond(challenge).to_bytes()).passed
    with pytest.raises(Crash):
        CrashingProver(trace_dir=tmp_path / "r", key=KEY, crash_at=ADAPT_STATES + 9).run(SMALL)
    assert committers[-1].process_from == ADAPT_STATES and not committers[-1].process
    assert Prover(trace_dir=tmp_path / "r", key=KEY).run(SMALL).root == reference.root


def test_without_fork_the_committer_adapts_on_its_thread(tmp_path, dear, monkeypatch) -> None:
    monkeypatch.setattr(_commitproc, "available", lambda: False)
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=None)
    for i in range(3 * ADAPT_STATES):
        committer.submit(i, _state(i))
    committer.close()
    assert committer.process_from is None and committer.switches[0] == (ADAPT_STATES, True)
    assert store.read_leaves() == b"".join(state_digest(_state(i)) for i in range(3 * ADAPT_STATES))


@pytest.mark.parametrize("why", ["fork refused", "no ring for the state"])
def test_where_no_process_can_be_had_the_committer_adapts_on_its_thread(tmp_path, dear, monkeypatch, why) -> None:
    """A fork that fails (EAGAIN: a process limit) or a first state the ring cannot take (GPU
    tensors, views) leaves the committer adapting between its thread and the caller's, as where
    fork is missing; the leaves are the synchronous ones."""
    if why == "fork refused":
        def refuse():
            raise BlockingIOError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(_commitproc.os, "fork", refuse)
    else:
        monkeypatch.setattr(trace_module, "cached_size", lambda state: None)
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=None)
    for i in range(3 * ADAPT_STATES):
        committer.submit(i, _state(i))
    committer.close()
    assert committer.process_from is None and not committer.process
    assert committer.switches[0] == (ADAPT_STATES, True)
    assert store.read_leaves() == b"".join(state_digest(_state(i)) for i in range(3 * ADAPT_STATES))


@pytest.mark.parametrize("seed", range(4))
def test_fill_encoding_writes_the_canonical_bytes_by_view_and_by_pointer(seed: int) -> None:
    """Into a ring slot: the first fill writes headers and data through views, a later fill of a
    state of the same schema only the data (``memmove`` from each tensor's pointer); both are
    ``encode_state`` byte for byte, numpy arrays and empty tensors among the tensors. A state
    of another layout, larger than the slot, or not in place is refused with nothing written."""
    import ctypes
    import mmap

    import numpy as np

    from pocv.encoding import fill_encoding

    g = torch.Generator().manual_seed(seed)

    def make(k: int) -> dict:
        return {"w": torch.randn(37 + seed, 5, generator=g), "b": torch.arange(k, k + 9, dtype=torch.int16),
                "empty": torch.zeros(0, 3), "n": np.full((4, 2), float(k + seed)), "flag": torch.tensor(k % 2 == 0)}

    first = make(0)
    state_digest(first)  # the schema's layout cached, as the committer's first window does
    ring = mmap.mmap(-1, 1 << 16)
    view = memoryview(ring)
    cell = ctypes.c_char.from_buffer(ring)
    address = ctypes.addressof(cell) + 4096
    slot = view[4096 : 4096 + 8192]
    token, size = fill_encoding(first, slot)
    assert bytes(slot[:size]) == encode_state(first)
    for k in range(1, 4):
        st = make(k)
        assert fill_encoding(st, slot, token, address=address) == (token, size)
        assert bytes(slot[:size]) == encode_state(st)
    before = bytes(slot)
    assert fill_encoding({**make(5), "w": torch.randn(5, 37 + seed, generator=g)}, slot, token, address=address) is None
    assert fill_encoding({**make(5), "w": torch.randn(10, 37 + seed, generator=g).t()[:, :5].t()}, slot, token,
                         address=address) is None  # not contiguous
    assert fill_encoding(make(5), view[4096 : 4096 + size - 1], token, address=address) is None  # too small
    assert bytes(slot) == before
    del cell, slot
    view.release()
    ring.close()


# -- a pure step's states, read by the child from the prover's memory -----------------------------------


def _pure_run(tmp_path, states, *, name: str = "p", every: int = 2) -> tuple[Committer, TraceStore]:
    """Submit ``states`` to an adaptive committer of a pure step (no copy) and close it."""
    store = TraceStore.open(tmp_path / name, SMALL, checkpoint_every=every)
    committer = Committer(store, IncrementalTree(), background=None, copy=False)
    for i, st in enumerate(states):
        committer.submit(i, st)
    proc = committer._proc
    committer.close()
    store.close()
    committer.last_proc = proc  # type: ignore[attr-defined]
    return committer, store


def test_a_pure_steps_states_are_read_from_the_prover_by_the_child(tmp_path, dear) -> None:
    """Once a slot holds the schema's headers, only the tensors' addresses go down the pipe and the
    child copies their data itself (process_vm_readv): the leaves, the tree and the checkpoints
    are the synchronous ones, across schemas and sizes."""
    kinds = ["a"] * (ADAPT_STATES + 20) + ["small", "a", "small", "small", "a", "big", "a", "a"]
    states = [_state(i, k) for i, k in enumerate(kinds)]
    want, encodings = [state_digest(s) for s in states], [encode_state(s) for s in states]
    committer, store = _pure_run(tmp_path, states)
    proc = committer.last_proc  # type: ignore[attr-defined]
    assert proc.by_ref  # this machine lets a child read its parent (no Yama, no seccomp rule against it)
    # each slot's first state of a schema is copied (its headers); every later one is read by the child
    assert proc.sent == len(states) - ADAPT_STATES - kinds.count("big") and proc.sent_by_ref >= proc.sent - 3 * _commitproc.RING_SLOTS
    assert proc.sent_by_ref > 0
    _assert_synchronous(store, committer.tree.root(), want, encodings, 2)


def test_a_state_written_while_the_child_reads_it_is_refused_naming_the_tensor(tmp_path, dear) -> None:
    """A kernel that declares a pure step and writes its input anyway is caught by the tensors'
    version counters when the child's digest comes back: SetupError, nothing committed past it."""
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=None, copy=False)
    states = [_state(i) for i in range(ADAPT_STATES + 3 * _commitproc.RING_SLOTS)]

    def impure_steps() -> None:
        for i, st in enumerate(states):
            committer.submit(i, st)
            if i >= ADAPT_STATES + 2 * _commitproc.RING_SLOTS:  # every slot holds the headers by now
                st["y"].add_(1)  # what an impure step does to its input
        committer.close()

    with pytest.raises(SetupError, match=r"tensor 'y' of s_\d+ was written while the commit process read it"):
        impure_steps()
    pid = committer._proc.pid if committer._proc else 0
    committer.abort()
    assert not pid or _reaped(pid)
    leaves = store.read_leaves()
    assert leaves == b"".join(state_digest(_state(i)) for i in range(len(leaves) // 32))


def test_where_the_child_cannot_read_the_prover_it_gets_copies(tmp_path, dear, monkeypatch) -> None:
    """A child that cannot read its parent's memory (Yama's ptrace scope, a seccomp rule) says so
    at its start, and every state is copied into the ring: the same leaves and checkpoints."""
    monkeypatch.setattr(_commitproc, "_can_read", lambda parent, probe: False)  # before the fork
    states = [_state(i) for i in range(ADAPT_STATES + 20)]
    committer, store = _pure_run(tmp_path, states)
    proc = committer.last_proc  # type: ignore[attr-defined]
    assert not proc.by_ref and proc.sent == 20 and proc.sent_by_ref == 0
    _assert_synchronous(store, committer.tree.root(), [state_digest(s) for s in states],
                        [encode_state(s) for s in states], 2)


def test_a_read_the_child_cannot_make_reaches_the_caller(tmp_path, dear, monkeypatch) -> None:
    """An address the child cannot read (here: page 0) is the child's StorageError, raised by a
    later submit or by close; nothing hangs and the child is gone."""
    real = _commitproc.data_refs

    def unmapped(state, filled):
        got = real(state, filled)
        if got is None:
            return None
        flat = list(got[0])
        flat[1::3] = [8] * (len(flat) // 3)  # every address: page 0
        return flat, got[1], got[2]

    monkeypatch.setattr(_commitproc, "data_refs", unmapped)
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=None, copy=False)
    pids: list[int] = []
    with pytest.raises(StorageError, match=r"could not read s_\d+ from the prover: read -1 of \d+ bytes"):
        _submit_and_close(committer, range(ADAPT_STATES * 6), pids)
    committer.abort()
    assert pids and _reaped(pids[-1])


def test_numpy_states_of_a_pure_step_are_copied(tmp_path, dear) -> None:
    """A numpy array has no version counter to check: its states go through the ring as copies."""
    states = [{"x": np.full(512, float(i)), "y": np.arange(i, i + 64)} for i in range(ADAPT_STATES + 12)]
    committer, store = _pure_run(tmp_path, states)
    proc = committer.last_proc  # type: ignore[attr-defined]
    assert proc.sent == 12 and proc.sent_by_ref == 0
    _assert_synchronous(store, committer.tree.root(), [state_digest(s) for s in states],
                        [encode_state(s) for s in states], 2)
