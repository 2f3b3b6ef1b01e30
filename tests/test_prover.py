"""The prover: trace layout, resume after a crash, answering from checkpoints."""

from __future__ import annotations

import json

import pytest
from solders.keypair import Keypair

from pocv import Prover, Verifier
from pocv.errors import InputError, ProviderMismatch, StorageError
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec
from pocv.limits import DIGEST_SIZE
from pocv.merkle import MerkleTree
from pocv.trace import TraceStore
from tests.helpers import SMALL, Crash, CrashingProver

KEY = Keypair.from_seed(bytes([8]) * 32)


@pytest.fixture(scope="module")
def reference_root(tmp_path_factory) -> bytes:
    return Prover(trace_dir=tmp_path_factory.mktemp("ref") / "t", key=KEY, checkpoint_every=8).run(SMALL).root


def test_trace_layout(tmp_path) -> None:
    c = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL)
    store = TraceStore.open(tmp_path / "t")
    leaves = store.read_leaves()
    assert len(leaves) == DIGEST_SIZE * (SMALL.steps + 1)
    assert MerkleTree(leaves).root == c.root
    assert store.checkpoints() == list(range(0, SMALL.steps + 1, 8))
    assert json.loads((tmp_path / "t" / "commitment.json").read_text())["root"] == c.root.hex()
    assert c.environment["device"] == "cpu"
    assert "accelerator" in c.fingerprint or c.fingerprint


@pytest.mark.parametrize("crash_at", [1, 7, 8, 9, 23, SMALL.steps])
def test_crash_then_resume_reaches_the_same_root(tmp_path, reference_root, crash_at) -> None:
    with pytest.raises(Crash):
        CrashingProver(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8, crash_at=crash_at).run(SMALL)
    assert not (tmp_path / "t" / "commitment.json").exists()
    assert Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL).root == reference_root


def test_resume_survives_torn_leaves_and_a_corrupt_checkpoint(tmp_path, reference_root) -> None:
    with pytest.raises(Crash):
        CrashingProver(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8, crash_at=30).run(SMALL)
    store = TraceStore.open(tmp_path / "t")
    with store.leaves_path.open("ab") as f:
        f.write(b"\x01" * 13)  # a torn append
    # bit rot in the newest checkpoint on disk (written behind the run: the crash may come before
    # the writer reached checkpoint 24): its last byte flipped, in its slot of the checkpoint pack
    newest = max(store.checkpoints())
    data = store.read_checkpoint(newest)
    store.write_checkpoint(newest, data[:-1] + bytes([data[-1] ^ 0xFF]))
    store.close()
    assert Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL).root == reference_root


def test_resume_removes_temporaries_of_killed_writes(tmp_path, reference_root) -> None:
    with pytest.raises(Crash):
        CrashingProver(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8, crash_at=20).run(SMALL)
    stale = [tmp_path / "t" / "checkpoints" / ".000000000016.state.x1.tmp", tmp_path / "t" / ".commitment.json.x2.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    assert Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL).root == reference_root
    assert not any(p.exists() for p in stale)


def test_run_refuses_a_trace_of_another_job(tmp_path) -> None:
    Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL)
    other = resolve_spec(JobSpec(kernel="gemm-int8", steps=SMALL.steps, seed=SMALL.seed + 1, params={"n": 32}))
    with pytest.raises(InputError, match="holds job"):
        Prover(trace_dir=tmp_path / "t", key=KEY).run(other)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x").write_text("x")
    with pytest.raises(InputError, match="not an empty directory"):
        Prover(trace_dir=tmp_path / "junk", key=KEY).run(SMALL)


@pytest.mark.parametrize("every", [1, 3, 64])
def test_answers_from_checkpoints_at_any_interval(tmp_path, reference_root, every) -> None:
    p = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=every)
    c = p.run(SMALL)
    assert c.root == reference_root  # the interval does not change what is committed
    v = Verifier(key=Keypair())
    ch = v.challenge(c, beacon=bytes(32), k=10)
    assert v.check(c, ch, p.respond(ch)).passed


def test_respond_detects_a_corrupted_trace(tmp_path) -> None:
    p = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8)
    c = p.run(SMALL)
    store = TraceStore.open(tmp_path / "t")
    data = bytearray(store.read_leaves())
    data[5 * DIGEST_SIZE] ^= 1
    store.leaves_path.write_bytes(bytes(data))
    ch = Verifier(key=Keypair()).challenge(c, beacon=bytes(32), k=5)
    with pytest.raises(StorageError, match="corrupt"):
        p.respond(ch)


def test_progress_is_reported(tmp_path) -> None:
    seen: list[tuple[int, int]] = []
    Prover(trace_dir=tmp_path / "t", key=KEY, progress=lambda d, n: seen.append((d, n))).run(SMALL)
    assert seen[-1] == (SMALL.steps, SMALL.steps)


def test_a_worker_answers_at_most_max_answer_steps(tmp_path) -> None:
    # issue 15 class 8: a hostile verifier cannot make the worker redo the whole job
    p = Prover(trace_dir=tmp_path / "t", key=KEY, max_answer=8)
    c = p.run(SMALL)
    v = Verifier(key=Keypair())
    ch = v.challenge(c, beacon=bytes(32), k=8)
    assert v.check(c, ch, p.respond(ch)).passed
    greedy = v.challenge(c, beacon=bytes(32), k=SMALL.steps)
    with pytest.raises(InputError, match=f"asks for {SMALL.steps} steps; this worker answers at most 8"):
        p.respond(greedy)
    with pytest.raises(InputError, match="max_answer"):
        Prover(trace_dir=tmp_path / "u", key=KEY, max_answer=0)


# -- the provider of the kernel is checked when a trace is reused (issue 16) ---------------------

OTHER_PROVIDER = "other-kernels==2.0"

# "another distribution installed" is the registry's instance with another provider: the
# registry sets ``provider`` on the instance it hands out (tests/kernels/test_plugin_cli.py
# checks that part with a real plugin)


def test_trace_records_the_provider(tmp_path) -> None:
    Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL)
    assert json.loads((tmp_path / "t" / "trace.json").read_text())["provider"] == "pocv"
    assert TraceStore.open(tmp_path / "t").provider == "pocv"


def test_a_finished_trace_of_another_provider_is_not_reused(tmp_path, monkeypatch) -> None:
    Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL)
    monkeypatch.setattr(kernel_for(SMALL), "provider", OTHER_PROVIDER)
    with pytest.raises(ProviderMismatch, match=r"computed with kernel gemm-int8@1 from pocv, but other-kernels==2.0"):
        Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL)
    # the commitment alone says pocv as well (a trace.json without the field: an older trace)
    meta = json.loads((tmp_path / "t" / "trace.json").read_text())
    del meta["provider"]
    (tmp_path / "t" / "trace.json").write_text(json.dumps(meta))
    with pytest.raises(ProviderMismatch, match="holds a commitment computed with kernel gemm-int8@1 from pocv"):
        Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL)


def test_a_partial_trace_of_another_provider_is_not_resumed(tmp_path, monkeypatch, reference_root) -> None:
    with pytest.raises(Crash):
        CrashingProver(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8, crash_at=20).run(SMALL)
    leaves = (tmp_path / "t" / "leaves.bin").read_bytes()
    monkeypatch.setattr(kernel_for(SMALL), "provider", OTHER_PROVIDER)
    with pytest.raises(ProviderMismatch, match="from pocv, but other-kernels==2.0 is installed"):
        Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL)
    assert (tmp_path / "t" / "leaves.bin").read_bytes() == leaves  # refused before touching the trace
    monkeypatch.undo()
    assert Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8).run(SMALL).root == reference_root


def test_respond_refuses_when_another_provider_is_installed(tmp_path, monkeypatch) -> None:
    p = Prover(trace_dir=tmp_path / "t", key=KEY, checkpoint_every=8)
    c = p.run(SMALL)
    ch = Verifier(key=Keypair()).challenge(c, beacon=bytes(32))
    monkeypatch.setattr(kernel_for(SMALL), "provider", OTHER_PROVIDER)
    with pytest.raises(ProviderMismatch, match="install pocv to resume or answer it"):
        p.respond(ch)
