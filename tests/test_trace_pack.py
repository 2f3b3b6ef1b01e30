"""Trace format 2: the checkpoint pack (issue 16 point 1). Every kept state goes into a slot of
one preallocated file instead of a file of its own; the leaves stay the source of truth, so a
torn, stale or missing slot is found on resume and the resumed run reaches the same root. States
that outgrow their slot, format 1 traces and traces of a newer format are handled too."""

from __future__ import annotations

import errno
import json
import os
import struct

import pytest
import torch
from solders.keypair import Keypair

from pocv import Prover, Verifier
from pocv import trace as trace_module
from pocv.encoding import decode_state, digest_encoded, encode_state, state_digest
from pocv.errors import StorageError
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.limits import DIGEST_SIZE
from pocv.merkle import IncrementalTree
from pocv.store import save_keypair
from pocv.trace import PACK_NAME, Committer, TraceStore
from tests.helpers import Crash, CrashingProver

KEY = Keypair.from_seed(bytes([9]) * 32)
#: 40 steps of a small state (1 KiB: one 4 KiB slot each), quick on any CPU
SMALL = resolve_spec(JobSpec(kernel="gemm-int8", steps=40, seed=11, params={"n": 16, "layers": 1}))
EVERY = 8
HEAD = struct.Struct("<8sIQQQ")  # the pack header as protocol.md §14 describes it
TRAILER = struct.Struct("<8sQQ")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[bytes, list[bytes]]:
    """The root of an uninterrupted run and the canonical bytes of every state of SMALL."""
    root = Prover(trace_dir=tmp_path_factory.mktemp("ref") / "t", key=KEY, checkpoint_every=EVERY).run(SMALL).root
    k = kernel_for(SMALL)
    s = k.init_state(SMALL)
    states = [encode_state(s)]
    for i in range(1, SMALL.steps + 1):
        s = k.step(s, i, SMALL)
        states.append(encode_state(s))
    return root, states


def _slot_bytes(size: int) -> int:
    return -(-(size + TRAILER.size) // 4096) * 4096


def _offset(k: int, slot: int) -> int:
    return 4096 + k * slot


def _crash(tmp_path, crash_at: int = 30) -> TraceStore:
    """A run killed before step ``crash_at``, committing synchronously: every state before it is
    committed and every checkpoint before it written (slots 0, 8, 16, 24 for 30)."""
    with pytest.raises(Crash):
        CrashingProver(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=EVERY, crash_at=crash_at,
                       background=False).run(SMALL)
    return TraceStore.open(tmp_path / "t")


def _resume(tmp_path) -> bytes:
    return Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=EVERY).run(SMALL).root


def _assert_complete(tmp_path, states: list[bytes]) -> None:
    store = TraceStore.open(tmp_path / "t")
    assert store.checkpoints() == list(range(0, SMALL.steps + 1, EVERY))
    for j in store.checkpoints():
        assert store.read_checkpoint(j) == states[j]


def test_the_pack_holds_every_kept_state_in_its_slot(tmp_path, reference) -> None:
    root, states = reference
    assert Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=EVERY).run(SMALL).root == root
    t = tmp_path / "t"
    assert json.loads((t / "trace.json").read_text())["format"] == 2
    assert not os.listdir(t / "checkpoints")  # no file per state
    pack = (t / PACK_NAME).read_bytes()
    slot = _slot_bytes(len(states[0]))
    slots = SMALL.steps // EVERY + 1
    assert HEAD.unpack(pack[: HEAD.size]) == (b"POCVPACK", 1, EVERY, slot, slots)
    assert pack[HEAD.size : 4096] == bytes(4096 - HEAD.size)
    assert len(pack) == _offset(slots, slot)  # preallocated in full, nothing past the last slot
    for k in range(slots):
        j, body = k * EVERY, pack[_offset(k, slot) : _offset(k + 1, slot)]
        n = len(states[j])
        assert body[:n] == states[j]
        assert body[n : slot - TRAILER.size] == bytes(slot - TRAILER.size - n)
        assert TRAILER.unpack(body[slot - TRAILER.size :]) == (b"POCVSLOT", j, n)
    _assert_complete(tmp_path, states)


@pytest.mark.parametrize("damage", ["torn", "never-landed"])
def test_a_torn_slot_is_skipped_on_resume(tmp_path, reference, damage: str) -> None:
    root, states = reference
    store = _crash(tmp_path)
    assert store.checkpoints() == [0, 8, 16, 24]
    slot = _slot_bytes(len(states[0]))
    with open(tmp_path / "t" / PACK_NAME, "r+b") as f:
        if damage == "torn":  # the first half of slot 24 new, the rest from something else
            f.seek(_offset(3, slot) + len(states[24]) // 2)
            f.write(b"\xa5" * (len(states[24]) // 2))
        else:  # the trailer reached the disk, the state did not (a power cut)
            f.seek(_offset(3, slot))
            f.write(bytes(len(states[24])))
    store = TraceStore.open(tmp_path / "t")
    assert store.checkpoints() == [0, 8, 16, 24]  # listed by its trailer, found out by its leaf:
    assert store.resume_point() == (16, states[16])
    assert store.checkpoints() == [0, 8, 16]
    assert len(store.read_leaves()) == 17 * DIGEST_SIZE
    assert _resume(tmp_path) == root
    _assert_complete(tmp_path, states)


def test_a_slot_past_the_leaves_is_dropped_on_resume(tmp_path, reference) -> None:
    """Slot 24 whole, but the leaves after 17 lost (a power cut kept the pack's pages and not
    the leaves'): the resumed run starts from 16 and slot 24 is gone until it is written again."""
    root, states = reference
    _crash(tmp_path)
    leaves = tmp_path / "t" / "leaves.bin"
    leaves.write_bytes(leaves.read_bytes()[: 18 * DIGEST_SIZE])
    store = TraceStore.open(tmp_path / "t")
    assert store.resume_point() == (16, states[16])
    assert store.checkpoints() == [0, 8, 16]
    assert os.path.getsize(tmp_path / "t" / PACK_NAME) == _offset(SMALL.steps // EVERY + 1, _slot_bytes(len(states[0])))
    assert _resume(tmp_path) == root
    _assert_complete(tmp_path, states)


def test_a_stale_slot_of_an_earlier_run_is_not_trusted(tmp_path, reference) -> None:
    """A slot whose trailer names 16 but holds other bytes (a run of other code, or of an
    unreproducible kernel, wrote it): its digest does not match leaf 16, so 8 is the resume point."""
    root, states = reference
    store = _crash(tmp_path)
    store.write_checkpoint(16, states[8])
    store.close()
    store = TraceStore.open(tmp_path / "t")
    assert store.read_checkpoint(16) == states[8]
    leaves = store.read_leaves()
    assert digest_encoded(states[24]) == leaves[24 * DIGEST_SIZE : 25 * DIGEST_SIZE]
    # slot 24 is whole and matches: it is the resume point; cut the leaves before it to reach 16
    (tmp_path / "t" / "leaves.bin").write_bytes(leaves[: 20 * DIGEST_SIZE])
    assert store.resume_point() == (8, states[8])
    assert store.checkpoints() == [0, 8]
    assert _resume(tmp_path) == root
    _assert_complete(tmp_path, states)


def test_a_truncated_pack_resumes_from_its_last_whole_slot(tmp_path, reference) -> None:
    root, states = reference
    _crash(tmp_path)
    slot = _slot_bytes(len(states[0]))
    os.truncate(tmp_path / "t" / PACK_NAME, _offset(2, slot) + slot // 2)  # inside slot 2 (state 16)
    store = TraceStore.open(tmp_path / "t")
    assert store.checkpoints() == [0, 8]
    with pytest.raises(StorageError, match="checkpoint 16 is not in trace"):
        store.read_checkpoint(16)
    assert store.resume_point() == (8, states[8])
    assert _resume(tmp_path) == root
    _assert_complete(tmp_path, states)


@pytest.mark.parametrize("damage", ["magic", "short", "impossible"])
def test_a_pack_with_an_unreadable_header(tmp_path, reference, damage: str) -> None:
    """Reading from it is refused (StorageError, what was expected and what came); resuming
    starts the pack again and reaches the same root."""
    root, states = reference
    p = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=EVERY)
    c = p.run(SMALL)
    pack = tmp_path / "t" / PACK_NAME
    data = bytearray(pack.read_bytes())
    if damage == "magic":
        data[:8] = b"NOTAPACK"
        want = "is not a checkpoint pack of version 1"
    elif damage == "short":
        data = data[:10]
        want = "10 bytes, expected a 36-byte header"
    else:
        data[12:20] = (0).to_bytes(8, "little")  # an interval of 0
        want = "impossible header: interval 0"
    pack.write_bytes(bytes(data))
    with pytest.raises(StorageError, match=want):
        TraceStore.open(tmp_path / "t").read_checkpoint(0)
    ch = Verifier(key=Keypair()).challenge(c, beacon=bytes(32), k=10)
    with pytest.raises(StorageError, match=want):
        p.respond(ch)
    (tmp_path / "t" / "commitment.json").unlink()
    assert _resume(tmp_path) == root  # from s_0: the leaves are truncated with the pack
    _assert_complete(tmp_path, states)


def test_states_that_outgrow_their_slot_get_files_of_their_own(tmp_path) -> None:
    """The slot is sized by the first checkpoint; a larger state is written to a file of its own
    (and a slot of its index cleared, so it cannot shadow the file); a much smaller one is
    written in two calls (state, trailer). Every checkpoint reads back as written, and resume
    finds the newest whatever holds it."""
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=2)
    tree = IncrementalTree()
    committer = Committer(store, tree, background=False, async_writes=False)
    sizes = [5000, 5000, 5000, 5000, 20000, 20000, 100, 100, 5000, 5000, 40000]
    states = [{"x": torch.arange(n, dtype=torch.float32) + i} for i, n in enumerate(sizes)]
    for i, s in enumerate(states):
        committer.submit(i, s)
    committer.close()
    store.close()
    files = sorted(int(n.split(".")[0]) for n in os.listdir(tmp_path / "t" / "checkpoints"))
    assert files == [4, 10]
    store = TraceStore.open(tmp_path / "t")
    assert store.checkpoints() == [0, 2, 4, 6, 8, 10]
    for j in store.checkpoints():
        assert store.read_checkpoint(j) == encode_state(states[j])
    # slot 6 rewritten with a state that does not fit: its file wins, the slot no longer answers
    big = {"x": torch.ones(30000)}
    store.write_checkpoint(6, encode_state(big))
    assert store.read_checkpoint(6) == encode_state(big)
    # resume: the newest checkpoint is a file (10); with the leaves cut before it, a slot (8)
    assert store.resume_point() == (10, encode_state(states[10]))
    (tmp_path / "t" / "leaves.bin").write_bytes(store.read_leaves()[: 9 * DIGEST_SIZE])
    assert store.resume_point() == (8, encode_state(states[8]))
    assert store.checkpoints() == [0, 2, 4, 6, 8]
    assert not (tmp_path / "t" / "checkpoints" / f"{10:012d}.state").exists()  # dropped with its leaves


def test_direct_and_buffered_slots_are_the_same_bytes(tmp_path, monkeypatch) -> None:
    """From DIRECT_MIN_BYTES on a slot is written with O_DIRECT from an aligned buffer; through
    the page cache (POCV_NO_DIRECT_IO=1, or a file system that refuses O_DIRECT) the pack holds
    the same bytes."""
    n = trace_module.DIRECT_MIN_BYTES // 4 + 123
    states = [{"a": torch.randn(n) + i, "b": torch.arange(7, dtype=torch.int64)} for i in range(5)]
    packs = {}
    real_open = os.open
    refused: list[str] = []

    def open_refusing_direct(path, flags, *args, **kw):
        if flags & trace_module._O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args, **kw)

    for mode in ("direct", "buffered", "refused"):
        if mode == "buffered":
            monkeypatch.setenv("POCV_NO_DIRECT_IO", "1")
        if mode == "refused" and trace_module._O_DIRECT:
            monkeypatch.delenv("POCV_NO_DIRECT_IO")
            monkeypatch.setattr(os, "open", open_refusing_direct)
        store = TraceStore.open(tmp_path / mode, SMALL, checkpoint_every=1)
        committer = Committer(store, IncrementalTree(), background=True)
        for i, s in enumerate(states):
            committer.submit(i, s)
        committer.close()
        store.close()
        packs[mode] = (tmp_path / mode / PACK_NAME).read_bytes()
        for i, s in enumerate(states):
            assert TraceStore.open(tmp_path / mode).read_checkpoint(i) == encode_state(s)
    monkeypatch.undo()
    assert packs["direct"] == packs["buffered"] == packs["refused"]
    if trace_module._O_DIRECT:
        assert len(refused) == 1  # tried once, then the page cache only


def test_a_format_1_trace_is_resumed_and_answered_as_it_is(tmp_path, reference, monkeypatch) -> None:
    """A trace written by the previous version (a file per kept state, no pack) resumes with
    files and answers challenges; no pack is added to it."""
    root, states = reference
    monkeypatch.setattr(trace_module, "TRACE_FORMAT", 1)
    _crash(tmp_path)
    monkeypatch.undo()
    t = tmp_path / "t"
    assert json.loads((t / "trace.json").read_text())["format"] == 1
    p = Prover(trace_dir=t, key=KEY, checkpoint_every=EVERY)
    c = p.run(SMALL)
    assert c.root == root
    assert not (t / PACK_NAME).exists()
    assert sorted(os.listdir(t / "checkpoints")) == [f"{j:012d}.state" for j in range(0, SMALL.steps + 1, EVERY)]
    _assert_complete(tmp_path, states)
    v = Verifier(key=Keypair())
    ch = v.challenge(c, beacon=bytes(32), k=10)
    assert v.check(c, ch, p.respond(ch)).passed


def test_a_trace_of_a_newer_format_is_refused(tmp_path, capsys) -> None:
    from pocv.cli import main  # the CLI in this process: one line, exit 3

    Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=EVERY).run(SMALL)
    meta = json.loads((tmp_path / "t" / "trace.json").read_text())
    meta["format"] = 3
    (tmp_path / "t" / "trace.json").write_text(json.dumps(meta))
    with pytest.raises(StorageError, match="is format 3, written by a newer pocv; this one reads formats 1, 2"):
        TraceStore.open(tmp_path / "t")
    (tmp_path / "job.json").write_text(SMALL.to_json())
    save_keypair(KEY, tmp_path / "w.json")
    capsys.readouterr()
    code = main(["run", str(tmp_path / "job.json"), "--trace", str(tmp_path / "t"), "-k", str(tmp_path / "w.json")])
    err = capsys.readouterr().err.strip()
    assert code == 3
    assert len(err.splitlines()) == 1 and "is format 3, written by a newer pocv" in err
    meta["format"] = "two"
    (tmp_path / "t" / "trace.json").write_text(json.dumps(meta))
    with pytest.raises(StorageError, match="format two, expected one of 1, 2"):
        TraceStore.open(tmp_path / "t")


def test_no_room_for_the_pack_fails_at_the_first_checkpoint(tmp_path, monkeypatch) -> None:
    """The pack is preallocated at the first checkpoint, so a disk without room for every kept
    state fails then, with what was needed, and the run can be resumed once there is room. (The
    file system's answer is simulated: filling a shared disk to get a real ENOSPC is not an
    option on a test machine; the refusal of a file system without fallocate is too.)"""
    real = os.posix_fallocate
    answer = {"errno": errno.ENOSPC}

    def fallocate(fd, offset, length):
        raise OSError(answer["errno"], os.strerror(answer["errno"]))

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    with pytest.raises(StorageError, match=r"no room for the checkpoints of this job in .*: they need \d+ bytes"):
        Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=EVERY).run(SMALL)
    assert not (tmp_path / "t" / PACK_NAME).exists()
    answer["errno"] = errno.EOPNOTSUPP  # a file system without fallocate: the pack grows as it is written
    c = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=EVERY).run(SMALL)
    monkeypatch.setattr(os, "posix_fallocate", real)
    ref = Prover(trace_dir=tmp_path / "ref", key=KEY, checkpoint_every=EVERY).run(SMALL)
    assert c.root == ref.root
    assert (tmp_path / "t" / PACK_NAME).read_bytes() == (tmp_path / "ref" / PACK_NAME).read_bytes()


def test_writer_threads_fill_slots_out_of_order(tmp_path) -> None:
    """Checkpoints handed to writer threads land in any order; each slot holds its own state."""
    store = TraceStore.open(tmp_path / "t", SMALL, checkpoint_every=1)
    committer = Committer(store, IncrementalTree(), background=False, async_writes=True, writers=4)
    states = [{"w": torch.randn(64, 64) * i, "step": torch.tensor(i)} for i in range(SMALL.steps + 1)]
    for i, s in enumerate(states):
        committer.submit(i, s)
    committer.close()
    store.close()
    store = TraceStore.open(tmp_path / "t")
    assert store.checkpoints() == list(range(SMALL.steps + 1))
    leaves = store.read_leaves()
    for i, s in enumerate(states):
        data = store.read_checkpoint(i)
        assert data == encode_state(s)
        assert digest_encoded(data) == state_digest(s) == leaves[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE]
        assert decode_state(data).keys() == s.keys()


def test_a_slot_of_more_pieces_than_one_call_takes_is_written_in_order(tmp_path) -> None:
    """More buffers than one pwritev takes (IOV_MAX), zero-length ones among them: written in
    order, in several calls, each resuming where the previous one stopped."""
    bufs: list[bytes | bytearray | memoryview] = [bytes([i % 251]) * (i % 7) for i in range(3000)]
    bufs[5] = memoryview(torch.arange(10, dtype=torch.float64).numpy())  # a tensor's memory, not bytes
    total = sum(memoryview(b).nbytes for b in bufs)
    with open(tmp_path / "f", "wb") as f:
        trace_module._pwrite_all(f.fileno(), bufs, 100, total)
    assert (tmp_path / "f").read_bytes() == bytes(100) + b"".join(bytes(b) for b in bufs)
