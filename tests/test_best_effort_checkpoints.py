"""Best-effort checkpoints (issue 16): under the ``auto`` and budget policies a state whose write
would make the step wait for the disk is not kept; its leaf is, so the root is the same, a killed
run resumes to it, and an answer recomputes the state from the nearest earlier kept one. Also the
committer's copy of an impure kernel's state (pocv.encoding.freeze) and the digest with pieces."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from solders.keypair import Keypair

import pocv.trace as trace_module
from pocv import Prover, Verifier
from pocv import encoding as enc
from pocv.encoding import digest_encoded, encode_state, state_digest
from pocv.errors import StorageError
from pocv.merkle import IncrementalTree
from pocv.trace import MAX_PENDING_WRITES, CheckpointPolicy, Committer, TraceStore
from tests.helpers import SMALL, Crash, CrashingProver, assert_trace_holds, remember_committers

KEY = Keypair.from_seed(bytes([17]) * 32)
_real_write_checkpoint = TraceStore.write_checkpoint


def _slow_disk(monkeypatch) -> list[Committer]:
    """Checkpoint writes on writer threads that do not finish until the committer has skipped
    one (a disk slower than the steps); every checkpoint goes to a writer thread."""
    committers: list[Committer] = remember_committers(monkeypatch)

    def stalled(self, index, encoded_state, **kw) -> None:
        if "writer" in kw:  # a writer thread: the disk moves once the committer skipped a state
            for _ in range(2000):
                if committers and (committers[-1].skipped or committers[-1]._stop):
                    break
                threading.Event().wait(0.005)
        _real_write_checkpoint(self, index, encoded_state, **kw)

    monkeypatch.setattr(trace_module, "INLINE_CHEAP_WRITES", False)
    monkeypatch.setattr(TraceStore, "write_checkpoint", stalled)
    return committers


def test_policies_say_whether_they_are_best_effort() -> None:
    assert CheckpointPolicy.parse("auto").best_effort and CheckpointPolicy.parse("budget:1MiB").best_effort
    assert not CheckpointPolicy.parse("all").best_effort and not CheckpointPolicy.parse("every:4").best_effort


def test_a_slow_disk_thins_the_kept_states_and_the_answers_still_verify(tmp_path, monkeypatch) -> None:
    reference = Prover(trace_dir=tmp_path / "ref", key=KEY, checkpoint="all").run(SMALL)
    committers = _slow_disk(monkeypatch)
    c = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint="auto", background=True).run(SMALL)
    monkeypatch.undo()
    skipped = committers[-1].skipped
    assert c.root == reference.root
    store = TraceStore.open(tmp_path / "t")
    assert store.checkpoint_every == 1  # auto keeps every state of this job ...
    kept = store.checkpoints()
    # ... but the writers held MAX_PENDING_WRITES and the committer went on without waiting
    assert skipped and 0 in kept and not set(skipped) & set(kept)
    assert len(kept) + len(skipped) == SMALL.steps + 1 and len(kept) >= MAX_PENDING_WRITES
    leaves = store.read_leaves()
    for j in kept:
        assert digest_encoded(store.read_checkpoint(j)) == leaves[32 * j : 32 * (j + 1)]
    gap = skipped[0]
    assert store.nearest_checkpoint(gap) == max(j for j in kept if j < gap)
    # an answer recomputes the states not kept from the nearest earlier kept one, and verifies
    verifier = Verifier(key=Keypair())
    challenge = verifier.challenge(c, beacon=bytes(range(32)))
    prover = Prover(trace_dir=tmp_path / "t", key=KEY)
    assert verifier.check(c, challenge, prover.respond(challenge).to_bytes()).passed
    states, _ = prover.open([gap, gap - 1])
    assert digest_encoded(states[gap]) == leaves[32 * gap : 32 * (gap + 1)]


def test_an_explicit_interval_waits_for_the_disk_rather_than_skip(tmp_path, monkeypatch) -> None:
    committers = _slow_disk(monkeypatch)
    done = threading.Event()

    def release() -> None:  # the stalled writers move after a while (they wait for a skip that never comes)
        threading.Event().wait(0.5)
        committers[-1].skipped.append(-1)  # the gate _slow_disk's writers wait on
        done.set()

    threading.Thread(target=release, daemon=True).start()
    Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint="every:1", background=True).run(SMALL)
    assert done.is_set() and committers[-1].skipped == [-1]
    assert TraceStore.open(tmp_path / "t").checkpoints() == list(range(SMALL.steps + 1))


def test_a_run_killed_after_skipping_resumes_to_the_same_root(tmp_path, monkeypatch) -> None:
    reference = Prover(trace_dir=tmp_path / "ref", key=KEY, checkpoint="all").run(SMALL).root
    committers = _slow_disk(monkeypatch)
    with pytest.raises(Crash):
        CrashingProver(trace_dir=tmp_path / "t", key=KEY, checkpoint="auto", background=True, crash_at=30).run(SMALL)
    monkeypatch.undo()
    assert committers[-1].skipped
    assert Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint="auto").run(SMALL).root == reference


def test_nearest_checkpoint_takes_the_highest_kept_multiple_of_c(tmp_path) -> None:
    Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint="all").run(SMALL)
    store = TraceStore.open(tmp_path / "t")
    pack = store._loaded_pack()
    assert pack is not None
    for j in (7, 8, 9):
        pack.clear(j)  # as if these were not kept
    store = TraceStore.open(tmp_path / "t")
    assert [store.nearest_checkpoint(j) for j in (6, 7, 8, 9, 10)] == [6, 6, 6, 6, 10]
    meta = json.loads((tmp_path / "t" / "trace.json").read_text())
    meta["checkpoint_every"] = 4  # only multiples of c count (the bench reads a trace of every state so)
    (tmp_path / "t" / "trace.json").write_text(json.dumps(meta))
    store = TraceStore.open(tmp_path / "t")
    assert [store.nearest_checkpoint(j) for j in (3, 4, 7, 9, 11, 12, 13)] == [0, 4, 4, 4, 4, 12, 12]
    pack.clear(0)
    with pytest.raises(StorageError, match="no checkpoint at or before state 3"):
        TraceStore.open(tmp_path / "t").nearest_checkpoint(3)


# -- the committer's copy and pieces ----------------------------------------------------------------


def _states() -> list[dict]:
    rng = np.random.default_rng(3)
    return [
        {"w": torch.randn(16, 1, 3, 3), "b": torch.randn(16), "m": torch.randn(64, 512), "cursor": torch.tensor(7)},
        {"x": torch.randn(7, 5), "e": torch.zeros(0, 3), "s": torch.tensor(3.5), "h": torch.ones(4, dtype=torch.bfloat16)},
        {"a": np.arange(12, dtype=np.int64).reshape(3, 4), "m": np.array([True, False, True])},
        {"e": torch.zeros(0)},
        {"one": torch.randn(300_000)},  # above one chunk
        {"only": torch.from_numpy(rng.integers(0, 256, 4096, dtype=np.uint8))},
    ]


@pytest.mark.parametrize("i", range(6))
def test_freeze_and_digest_and_pieces_equal_the_general_path(i: int) -> None:
    state = _states()[i]
    want = b"".join(enc._pieces(state))
    for _ in range(3):  # the first call caches the layout, the next ones take the fast path
        frozen = enc.freeze(state)
        digest, pieces, size = enc.digest_and_pieces(state)
        assert frozen.data == want == encode_state(state)
        assert frozen.digest() == digest == digest_encoded(want) == state_digest(state)
        assert b"".join(bytes(p) for p in pieces) == want and size == len(want)


def test_a_frozen_state_keeps_the_bytes_it_was_frozen_with() -> None:
    state = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    enc.freeze(state)  # layout cached
    want = encode_state(state)
    frozen = enc.freeze(state)
    state["w"].fill_(0.0)
    state["b"].add_(1.0)
    assert frozen.data == want and frozen.digest() == digest_encoded(want)


def test_a_strided_or_new_schema_state_is_frozen_by_the_general_path() -> None:
    base = torch.randn(9, 8)
    state = {"w": base[:8]}
    enc.freeze(state)
    strided = {"w": base[:8].t()}  # same schema, not contiguous: the cached views would be wrong
    assert enc.freeze(strided).data == encode_state({"w": base[:8].t().contiguous()})
    assert enc.freeze(strided).digest() == state_digest({"w": base[:8].t().contiguous()})


def test_a_copying_committer_writes_the_frozen_bytes(tmp_path) -> None:
    """An impure kernel's states go to the committer frozen: the leaves and the checkpoints are
    the states as submitted, whatever the next step does to them, on every committer mode."""
    for n, mode in enumerate((True, False, None)):
        store = TraceStore.open(tmp_path / f"t{n}", SMALL, checkpoint_every=2)
        tree = IncrementalTree()
        committer = Committer(store, tree, background=mode, async_writes=True, copy=True)
        states = [{"a": torch.full((300,), float(i)), "b": torch.arange(i, i + 9)} for i in range(9)]
        want = [encode_state({k: v.clone() for k, v in s.items()}) for s in states]
        for i, s in enumerate(states):
            committer.submit(i, s)
            s["a"].fill_(-1.0)
            s["b"].zero_()
        committer.close()
        store.close()
        assert_trace_holds(store, want, [0, 2, 4, 6, 8])


def test_an_adaptive_committer_in_line_writes_page_cache_checkpoints_itself(tmp_path, monkeypatch) -> None:
    """In line, an adaptive committer writes a checkpoint that goes through the page cache on the
    caller's thread, from the state as it is (no copy first, no writer thread: both cost the
    caller more than the write); the explicitly synchronous-hash mode hands them to writers."""
    writers: dict[bool | None, set[str]] = {None: set(), False: set()}
    frozen: list[int] = []
    real_freeze = trace_module.freeze

    def counting_freeze(state):
        frozen.append(1)
        return real_freeze(state)

    monkeypatch.setattr(trace_module, "freeze", counting_freeze)
    for mode in (None, False):
        def recording(self, index, encoded_state, _mode=mode, **kw) -> None:
            writers[_mode].add(threading.current_thread().name)
            _real_write_checkpoint(self, index, encoded_state, **kw)

        monkeypatch.setattr(TraceStore, "write_checkpoint", recording)
        store = TraceStore.open(tmp_path / f"t{mode}", SMALL, checkpoint_every=1)
        committer = Committer(store, IncrementalTree(), background=mode, async_writes=True, copy=True)
        frozen.clear()
        states = [{"w": torch.full((1000,), float(i))} for i in range(3)]
        for i, st in enumerate(states):
            committer.submit(i, st)
        committer.close()
        store.close()
        assert [store.read_checkpoint(j) for j in range(3)] == [encode_state(s) for s in states]
        if mode is None:
            assert writers[None] == {threading.current_thread().name} and len(frozen) <= 1  # the first: size unknown
        else:
            assert all(n.startswith("pocv-write") for n in writers[False]) and len(frozen) == 3
