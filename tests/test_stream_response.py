"""A response streams (issue 11 point 5, stage 4; issue 16 point 2): the worker writes the
bundle state by state as each is read or recomputed (``Prover.respond_to``, pocv.bundle's
BundleWriter), and the verifier reads a bundle file in place (``Response.read_from(lazy=True)``,
pocv.bundle.FileStates), so neither holds more than a few states, whatever k.

The memory bound is measured, not assumed: worker and verifier run in child processes and their
peak RSS (VmHWM) is compared between a small and a large k on 1 MiB states; the in-memory
``respond`` in the same harness grows with k, which shows the harness can see the difference.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from solders.keypair import Keypair

from pocv import JobSpec, Prover, Verifier
from pocv.bundle import BundleWriter, FileStates, Response
from pocv.errors import InputError, StorageError
from pocv.kernels import resolve_spec

WORKER = Keypair.from_seed(bytes([1]) * 32)
V = Verifier(key=Keypair.from_seed(bytes([2]) * 32))
EXACT = resolve_spec(JobSpec(kernel="gemm-int8", steps=48, seed=4, params={"n": 64, "layers": 1}))
TOLERANT = resolve_spec(JobSpec(kernel="mlp-sgd", steps=24, seed=4, params={"width": 16, "depth": 1, "batch": 4}))


@pytest.fixture(scope="module", params=[EXACT, TOLERANT], ids=["exact", "tolerance"])
def job(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    p = Prover(trace_dir=tmp_path_factory.mktemp("s") / "t", key=WORKER, checkpoint="every:4")
    return p, p.run(request.param)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_streamed_bundle_is_the_in_memory_one_byte_for_byte(job, workers: int) -> None:
    p, c = job
    ch = V.challenge(c, beacon=bytes([workers]) * 32, k=12)
    p.respond_workers = workers
    seen: list[tuple[int, int]] = []
    p.progress = lambda done, total: seen.append((done, total))
    out = io.BytesIO()
    summary = p.respond_to(ch, out)
    p.progress = None
    in_memory = p.respond(ch)
    reference = in_memory.to_bytes()
    assert out.getvalue() == reference
    # respond builds its Response from the writer's parts, not by parsing the bundle back: the same
    # record, field for field, as the parser makes of the streamed bytes
    assert in_memory == Response.from_bytes(out.getvalue())
    assert summary.size == len(reference) and summary.indices == ch.indices
    assert summary.digest == Response.from_bytes(reference).digest()
    assert seen and seen[-1][0] == seen[-1][1] == summary.states  # progress per opened state, in order
    assert [d for d, _ in seen] == list(range(1, summary.states + 1))


def test_a_bundle_read_in_place_gives_the_same_verdict(job, tmp_path: Path) -> None:
    p, c = job
    ch = V.challenge(c, beacon=bytes([7]) * 32, k=10)
    path = tmp_path / "r.pocv"
    with path.open("wb") as f:
        p.respond_to(ch, f)
    data = path.read_bytes()
    with path.open("rb") as f:
        lazy = Response.read_from(f, expect=None, lazy=True)
        assert isinstance(lazy.states, FileStates)
        eager = Response.from_bytes(data)
        assert dict(lazy.states) == dict(eager.states)
        assert lazy.leaf_values() == eager.leaf_values()
        assert lazy.digest() == eager.digest()
    with path.open("rb") as f:  # the verifier reads a real file in place
        in_place = V.check(c, ch, f)
    in_memory = V.check(c, ch, data)
    assert in_place.passed and in_memory.passed
    assert in_place.bundle == in_memory.bundle and in_place.outcomes == in_memory.outcomes


def test_a_bundle_file_changed_after_reading_is_the_readers_error(job, tmp_path: Path) -> None:
    p, c = job
    ch = V.challenge(c, beacon=bytes([8]) * 32, k=6)
    path = tmp_path / "r.pocv"
    with path.open("wb") as f:
        p.respond_to(ch, f)
    with path.open("r+b") as f:
        r = Response.read_from(f, lazy=True)
        leaf = next(iter(r.states))
        offset = r.states._spans[leaf][0]  # type: ignore[attr-defined]
        f.seek(offset + 200)
        f.write(b"\xff")
        f.flush()
        with pytest.raises(StorageError, match=f"state {leaf} of the bundle file changed"):
            r.states[leaf]
        f.truncate(offset + 10)
        with pytest.raises(StorageError, match="ended inside state"):
            r.states[leaf]


def test_a_lazy_read_needs_a_real_file() -> None:
    with pytest.raises(InputError, match="real, seekable file"):
        Response.read_from(io.BytesIO(b"x" * 200), lazy=True)


def test_the_writer_refuses_states_out_of_order_missing_or_unasked() -> None:
    def writer() -> BundleWriter:
        return BundleWriter(io.BytesIO(), job_id=bytes(32), root=bytes(32), tree_size=10, indices=[3, 6],
                            whole=[2, 5])
    w = writer()
    with pytest.raises(InputError, match="expected state 2 next, got 5"):
        w.state(5, b"x")
    w = writer()
    w.state(2, b"x")
    with pytest.raises(InputError, match="1 whole states not written"):
        w.end_body([], {})
    w = writer()
    w.state(2, b"x")
    w.state(5, b"y")
    with pytest.raises(InputError, match="expected state none next, got 7"):
        w.state(7, b"z")
    with pytest.raises(InputError, match="body is not complete"):
        w.trailer(bytes(32), bytes(64))


# -- peak memory, measured in child processes ---------------------------------------------------

#: heat2d at n = 512: 1 MiB states (exact kernel: s_(i-1) whole per run of consecutive challenged
#: steps, docs/protocol.md §8); 512 steps so that k = 64 leaves about 56 runs, an answer of ~56 MiB
BIG = {"kernel": "heat2d", "steps": 512, "seed": 5, "params": {"n": 512, "substeps": 1}}

_CHILD = r"""
import json, sys
from pathlib import Path
from solders.keypair import Keypair
from pocv import JobSpec, Prover, Verifier
from pocv.kernels import resolve_spec
from pocv.store import load_commitment

mode, trace, k, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
worker, verifier = Keypair.from_seed(bytes([1]) * 32), Verifier(key=Keypair.from_seed(bytes([2]) * 32))
c = load_commitment(trace / "commitment.json")
ch = verifier.challenge(c, beacon=bytes([9]) * 32, k=k)
p = Prover(trace_dir=trace, key=worker)
def hwm():  # KiB; this process image's peak RSS (ru_maxrss would keep the parent's across exec)
    return int(next(x for x in open("/proc/self/status") if x.startswith("VmHWM:")).split()[1])
base = hwm()
if mode == "stream":
    with out.open("wb") as f:
        p.respond_to(ch, f)
elif mode == "memory":
    out.write_bytes(p.respond(ch).to_bytes())
else:
    with out.open("rb") as f:
        assert verifier.check(c, ch, f).passed
peak = hwm()
print(json.dumps({"base_kib": base, "peak_kib": peak, "bytes": out.stat().st_size}))
"""


def _child(mode: str, trace: Path, k: int, out: Path) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(trace), str(k), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trace = tmp_path_factory.mktemp("big") / "t"
    Prover(trace_dir=trace, key=WORKER, checkpoint="every:8").run(resolve_spec(JobSpec.from_dict(BIG)))
    return trace


def test_peak_memory_of_worker_and_verifier_does_not_grow_with_k(big_trace: Path, tmp_path: Path) -> None:
    mib = 1024  # VmHWM is in KiB
    small, large = 4, 64
    grow = {}
    for mode in ("stream", "verify"):
        runs = {}
        for k in (small, large):
            out = tmp_path / f"r{k}.pocv"
            runs[k] = _child("stream" if mode == "stream" else "verify", big_trace, k, out)
        grow[mode] = runs[large]["peak_kib"] - runs[small]["peak_kib"]
        assert runs[large]["bytes"] > 45 * 1024 * 1024  # the large answer holds ~50 states of 1 MiB
    memory = {k: _child("memory", big_trace, k, tmp_path / f"m{k}.pocv") for k in (small, large)}
    grow["memory"] = memory[large]["peak_kib"] - memory[small]["peak_kib"]
    # the harness sees an answer held in memory (~50 MiB more at k = 64) ...
    assert grow["memory"] > 35 * mib, grow
    # ... and sees none for the streamed answer or the verifier reading in place (a few states)
    assert grow["stream"] < 12 * mib, grow
    assert grow["verify"] < 12 * mib, grow
