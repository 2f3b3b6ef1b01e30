"""EZKL as a peer: a zk-SNARK of a tiny MLP's inference against pocv verifying the same inference.

Both sides compute the same thing: a ReLU MLP (``depth`` square ``width`` layers, a batch of
``batch`` inputs) whose weights and inputs are derived from one seed, so both sides hold the same
float32 numbers. bench/test_bench_ezkl.py measures, for each model, in one run:

EZKL (``pip install ezkl``; Halo2 with KZG commitments on BN254): export the torch model to ONNX,
``gen_settings`` + ``calibrate_settings`` (picks the fixed-point scale), ``compile_circuit``,
``gen_srs`` (a local *test* SRS: in production the SRS comes from a powers-of-tau ceremony, never
from the prover), ``setup`` (proving and verifying keys), ``gen_witness`` (the quantized forward
pass), ``prove`` and ``verify``. Setup, witness+prove and verify each run in a child process of
their own, which reports its time and its peak resident memory (``VmHWM``).

pocv: the same inference as a job of ``depth`` steps, one layer per step, the state being the
activations (a bench-local exact-mode kernel, registered only inside the benchmark's processes:
nothing is added to ``kernels/``). The worker runs it with ``Prover.run`` (steps, BLAKE3 state
digests, Merkle tree, trace on disk, signed root) and answers the challenge with
``Prover.respond`` (and, to separate the trace directory's fsyncs from the computation, the same
work in memory: steps, digests, Merkle root, signed commitment, opened states, multiproof); the
verifier issues the challenge (p = 0.999, f = 0.1: k = 66 steps, capped
at the job's n, so here every step is recomputed) and runs ``Verifier.check`` (multiproof,
``s_0`` re-derived, challenged steps recomputed and compared). Times are the minimum over
repetitions in the benchmark process; peak memory again comes from a child process per side.

Every figure in the section is a ratio EZKL / pocv measured in the same run, marked "met" when
pocv is at least as cheap (>= 1) and "missed" where it loses; the report also states what each
side's result is worth, which no ratio captures.

    pytest bench/test_bench_ezkl.py --benchmark-only -s      (POCV_BENCH_QUICK=1: one tiny model)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from bench.report import Figure, Plotter, Section, fmt, grouped_bars, table
from pocv.kernels import kernel_for, resolve_spec

ROOT: Final = Path(__file__).resolve().parent.parent
KERNEL_NAME: Final = "bench-mlp-infer"
_WEIGHT_CONTEXT: Final = "pocv 2026-11 bench mlp-infer v1 weights"
_INPUT_CONTEXT: Final = "pocv 2026-11 bench mlp-infer v1 inputs"
SEED: Final = 7
#: what calibrate_settings optimises for ("resources": the smallest circuit that keeps accuracy)
CALIBRATION_TARGET: Final = "resources"
#: ONNX opset for the legacy exporter; tract (EZKL's ONNX reader) is tested on opsets 9-18
ONNX_OPSET: Final = 18
#: pocv's challenge parameters (the library defaults)
CONFIDENCE: Final = 0.999
CHEAT_FRACTION: Final = 0.1
#: seconds a child process may take (one EZKL stage of the biggest model takes well under a minute)
CHILD_TIMEOUT_S: Final = 600
#: ratio figures: EZKL / pocv, "met" when pocv is at least as cheap
PARITY: Final = 1.0


@dataclass(frozen=True)
class Config:
    """One model. ``decomp_base ** decomp_legs`` is the range of EZKL's decompositions (ReLU's
    sign, rescaling): ezkl's default is 16384^2 = 2^28, which needs a 16,384-row range table and
    so at least 2^15 circuit rows; 128^4 is the same 2^28 range with a 128-row table, the tuning
    we give EZKL by default (it halves its circuit for these small models)."""

    width: int
    depth: int
    batch: int
    decomp_base: int = 128
    decomp_legs: int = 4

    @property
    def label(self) -> str:
        tail = "" if (self.decomp_base, self.decomp_legs) == (128, 4) else \
            f" ezkl-decomp {self.decomp_base}^{self.decomp_legs}"
        return f"w{self.width} d{self.depth} b{self.batch}{tail}"

    @property
    def n_params(self) -> int:
        return self.depth * (self.width * self.width + self.width)


#: the quick suite: one tiny model (EZKL's circuit at 2^11 rows)
QUICK_CONFIGS: Final = (Config(8, 2, 2),)
#: the full suite: three sizes, and the middle one again with EZKL's default decomposition
FULL_CONFIGS: Final = (Config(8, 2, 2), Config(16, 3, 4), Config(32, 3, 4), Config(16, 3, 4, 16384, 2))


# -- the model, shared by both sides --------------------------------------------------------------


def model_arrays(cfg: Config, seed: int = SEED) -> tuple[list[tuple[Any, Any]], Any]:
    """([(W_l float32[w, w] as nn.Linear holds it (out, in), b_l float32[w])], x float32[B, w]).

    Weights are uniform(-1, 1) / sqrt(w) and inputs uniform(-1, 1) on dyadic grids (from BLAKE3's
    XOF), exact in float32; the inputs sit on a 2^-7 grid, so EZKL's input quantization is exact.
    """
    import numpy as np

    from pocv.kernels._util import seeded_bytes

    w, depth, b = cfg.width, cfg.depth, cfg.batch
    e = max(0, ((w - 1).bit_length() + 1) // 2 - 1)
    raw = np.frombuffer(seeded_bytes(_WEIGHT_CONTEXT, seed, w, depth, length=2 * depth * (w * w + w)), "<u2")
    vals = (raw.astype(np.float32) - 32768.0) * np.float32(2.0 ** -(15 + e))
    layers, off = [], 0
    for _ in range(depth):
        wt = vals[off: off + w * w].reshape(w, w).copy()
        off += w * w
        bias = vals[off: off + w].copy()
        off += w
        layers.append((wt, bias))
    xr = np.frombuffer(seeded_bytes(_INPUT_CONTEXT, seed, w, b, length=b * w), np.int8)
    x = (xr.astype(np.float32) / np.float32(128.0)).reshape(b, w)
    return layers, x


def torch_model(cfg: Config) -> tuple[Any, Any]:
    """(nn.Sequential of Linear/ReLU with the seeded weights, x as a torch tensor)."""
    import torch

    layers, x = model_arrays(cfg)
    mods: list[Any] = []
    for li, (wt, bias) in enumerate(layers):
        lin = torch.nn.Linear(cfg.width, cfg.width)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(wt))
            lin.bias.copy_(torch.from_numpy(bias))
        mods.append(lin)
        if li < cfg.depth - 1:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods).eval(), torch.from_numpy(x)


_KERNEL_CLASS: Any = None


def kernel_class() -> Any:
    """The bench-local kernel: one MLP layer per step, state ``{"h": float32[B, w]}``, exact mode.

    Defined on first use so that importing this module (the report does) imports neither torch
    nor the kernel registry. Exact mode is right here because the verifier recomputes on the same
    CPU and torch build; across devices a float kernel uses tolerance mode (see kernels/mlp_sgd.py),
    which adds one elementwise comparison pass to the verifier's cost.
    """
    global _KERNEL_CLASS
    if _KERNEL_CLASS is not None:
        return _KERNEL_CLASS
    from typing import ClassVar

    import torch

    from pocv.errors import StateError
    from pocv.kernels.base import Kernel

    class MlpInfer(Kernel):
        name: ClassVar[str] = KERNEL_NAME
        version: ClassVar[int] = 1
        mode: ClassVar[Any] = "exact"
        summary: ClassVar[str] = "inference of a seeded ReLU MLP, one layer per step (bench only)"
        int_params: ClassVar[dict[str, tuple[int, int, int]]] = {"width": (16, 2, 256), "batch": (4, 1, 64)}

        def __init__(self) -> None:
            self._cache: dict[tuple[int, int, int, int], tuple[list[Any], Any]] = {}

        def _arrays(self, spec: Any) -> tuple[list[Any], Any]:
            key = (spec.seed, int(spec.params["width"]), spec.steps, int(spec.params["batch"]))
            if key not in self._cache:
                layers, x = model_arrays(Config(key[1], key[2], key[3]), seed=key[0])
                self._cache = {key: ([(torch.from_numpy(wt), torch.from_numpy(b)) for wt, b in layers],
                                     torch.from_numpy(x))}
            return self._cache[key]

        def schema(self, spec: Any) -> dict[str, tuple[str, tuple[int, ...]]]:
            return {"h": ("float32", (int(spec.params["batch"]), int(spec.params["width"])))}

        def init_state(self, spec: Any, device: str = "cpu") -> dict[str, Any]:
            self.check_device(device)
            return {"h": self._arrays(spec)[1].clone()}

        def step(self, state: Any, i: int, spec: Any, device: str = "cpu") -> dict[str, Any]:
            self.check_device(device)
            if not 1 <= i <= spec.steps:
                raise StateError(f"{KERNEL_NAME} has steps 1..{spec.steps}, got {i}")
            wt, b = self._arrays(spec)[0][i - 1]
            h = state["h"] if isinstance(state["h"], torch.Tensor) else torch.from_numpy(state["h"])
            z = torch.nn.functional.linear(h, wt, b)  # the op nn.Linear runs: the same bits
            return {"h": torch.relu(z) if i < spec.steps else z}

    _KERNEL_CLASS = MlpInfer
    return MlpInfer


def register_kernel() -> None:
    """Make ``bench-mlp-infer`` known to the kernel registry of this process only."""
    from pocv import kernels

    cls = kernel_class()
    kernels._MODULES.setdefault(KERNEL_NAME, __name__)
    if (KERNEL_NAME, cls.version) not in kernels._REGISTRY:
        kernels.register(cls)


def job_spec(cfg: Config) -> Any:
    from pocv import JobSpec

    register_kernel()
    return resolve_spec(JobSpec(kernel=KERNEL_NAME, steps=cfg.depth, seed=SEED,
                   params={"width": cfg.width, "batch": cfg.batch}))


# -- child processes (time and peak memory of one stage) ------------------------------------------


def _status_bytes(field: str) -> int | None:
    """``VmRSS``/``VmHWM`` of this process in bytes (Linux), else ru_maxrss for the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if field == "VmHWM":
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    return None


def run_child(task: str, args: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run ``_TASKS[task](args)`` in a fresh interpreter; its result plus ``peak_rss`` (bytes)."""
    out = workdir / f".{task}.{time.monotonic_ns()}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    req = json.dumps({"task": task, "args": args, "out": str(out)})
    p = subprocess.run([sys.executable, "-c", "import bench.peer_ezkl as m; m.child_main()"], input=req,
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=CHILD_TIMEOUT_S)
    if p.returncode != 0 or not out.is_file():
        tail = (p.stderr or p.stdout or "").strip()[-1500:]
        raise RuntimeError(f"{task} child process failed (exit {p.returncode}): {tail}")
    res: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return res


def child_main() -> None:
    req = json.loads(sys.stdin.read())
    res = _TASKS[req["task"]](req["args"])
    res["peak_rss"] = _status_bytes("VmHWM")
    Path(req["out"]).write_text(json.dumps(res))


def _timed(fn: Any, *a: Any, **kw: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t0


def _task_ezkl_prep(a: dict[str, Any]) -> dict[str, Any]:
    import ezkl

    d = Path(a["dir"])
    ra = ezkl.PyRunArgs()
    ra.variables = [("batch_size", a["batch"])]
    ra.decomp_base, ra.decomp_legs = a["decomp_base"], a["decomp_legs"]
    ok1, t_set = _timed(ezkl.gen_settings, str(d / "model.onnx"), str(d / "settings.json"), py_run_args=ra)
    ok2, t_cal = _timed(ezkl.calibrate_settings, str(d / "input.json"), str(d / "model.onnx"),
                        str(d / "settings.json"), CALIBRATION_TARGET)
    ok3, t_comp = _timed(ezkl.compile_circuit, str(d / "model.onnx"), str(d / "model.compiled"),
                         str(d / "settings.json"))
    if not (ok1 and ok2 and ok3):
        raise RuntimeError(f"ezkl gen_settings/calibrate_settings/compile_circuit returned {ok1}/{ok2}/{ok3}")
    return {"gen_settings_s": t_set, "calibrate_s": t_cal, "compile_s": t_comp}


def _task_ezkl_srs(a: dict[str, Any]) -> dict[str, Any]:
    import ezkl

    _, t = _timed(ezkl.gen_srs, a["srs"], a["logrows"])
    return {"gen_srs_s": t}


def _task_ezkl_setup(a: dict[str, Any]) -> dict[str, Any]:
    import ezkl

    d = Path(a["dir"])
    base = _status_bytes("VmRSS")
    ok, t = _timed(ezkl.setup, str(d / "model.compiled"), str(d / "vk.key"), str(d / "pk.key"), srs_path=a["srs"])
    if not ok:
        raise RuntimeError("ezkl.setup returned False")
    return {"setup_s": t, "base_rss": base}


def _task_ezkl_prove(a: dict[str, Any]) -> dict[str, Any]:
    import ezkl

    d = Path(a["dir"])
    base = _status_bytes("VmRSS")
    _, t_wit = _timed(ezkl.gen_witness, str(d / "input.json"), str(d / "model.compiled"), str(d / "witness.json"))
    _, t_prove = _timed(ezkl.prove, str(d / "witness.json"), str(d / "model.compiled"), str(d / "pk.key"),
                        str(d / "proof.json"), srs_path=a["srs"])
    return {"witness_s": t_wit, "prove_s": t_prove, "base_rss": base}


def _task_ezkl_verify(a: dict[str, Any]) -> dict[str, Any]:
    import ezkl

    d = Path(a["dir"])
    base = _status_bytes("VmRSS")
    ok, t = _timed(ezkl.verify, str(d / "proof.json"), str(d / "settings.json"), str(d / "vk.key"),
                   srs_path=a["srs"])
    return {"verify_s": t, "verified": bool(ok), "base_rss": base}


def _keys(a: dict[str, Any]) -> tuple[Any, Any]:
    from solders.keypair import Keypair

    return Keypair.from_seed(bytes.fromhex(a["worker_seed"])), Keypair.from_seed(bytes.fromhex(a["verifier_seed"]))


def _task_pocv_worker(a: dict[str, Any]) -> dict[str, Any]:
    """The worker's side, challenge included (issuing it is the verifier's, and costs microseconds)."""
    from pocv import Prover, Verifier

    d = Path(a["dir"])
    spec = job_spec(Config(a["width"], a["depth"], a["batch"]))
    wk, vk = _keys(a)
    base = _status_bytes("VmRSS")
    prover = Prover(trace_dir=d / "child-trace", key=wk)
    commitment, t_run = _timed(prover.run, spec)
    challenge = Verifier(key=vk).challenge(commitment, beacon=bytes.fromhex(a["beacon"]), confidence=CONFIDENCE,
                                           cheat_fraction=CHEAT_FRACTION)
    response, t_resp = _timed(lambda: prover.respond(challenge).to_bytes())
    (d / "commitment.json").write_text(commitment.to_json())
    (d / "challenge.json").write_text(challenge.to_json())
    (d / "response.bin").write_bytes(response)
    return {"run_s": t_run, "respond_s": t_resp, "base_rss": base}


def _task_pocv_verifier(a: dict[str, Any]) -> dict[str, Any]:
    from pocv import Verifier
    from pocv.records import Challenge, Commitment

    d = Path(a["dir"])
    job_spec(Config(a["width"], a["depth"], a["batch"]))  # registers the kernel in this process
    _, vk = _keys(a)
    commitment = Commitment.from_json((d / "commitment.json").read_bytes())
    challenge = Challenge.from_json((d / "challenge.json").read_bytes())
    response = (d / "response.bin").read_bytes()
    verifier = Verifier(key=vk)
    base = _status_bytes("VmRSS")
    verdict, t = _timed(verifier.check, commitment, challenge, response)
    return {"check_s": t, "passed": verdict.passed, "base_rss": base}


_TASKS: Final = {
    "ezkl_prep": _task_ezkl_prep,
    "ezkl_srs": _task_ezkl_srs,
    "ezkl_setup": _task_ezkl_setup,
    "ezkl_prove": _task_ezkl_prove,
    "ezkl_verify": _task_ezkl_verify,
    "pocv_worker": _task_pocv_worker,
    "pocv_verifier": _task_pocv_verifier,
}


# -- measurement ----------------------------------------------------------------------------------


def _size(p: Path) -> int | None:
    return p.stat().st_size if p.is_file() else None


def float_inference_s(cfg: Config, reps: int) -> tuple[float, Any]:
    """(min seconds of the bare float32 forward pass, its output) in this process."""
    import torch

    model, x = torch_model(cfg)
    with torch.no_grad():
        y = model(x)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t0)
    return min(ts), y


def measure_ezkl(cfg: Config, d: Path, srs_cache: dict[int, tuple[Path, float]], prove_reps: int,
                 y_float: Any) -> dict[str, Any]:
    """EZKL's pipeline for ``cfg`` in directory ``d``; ``srs_cache`` maps logrows -> (SRS, gen seconds)."""
    import ezkl
    import torch

    d.mkdir(parents=True, exist_ok=True)
    model, x = torch_model(cfg)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(model, (x,), str(d / "model.onnx"), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["input"], output_names=["output"])
    t_export = time.perf_counter() - t0
    (d / "input.json").write_text(json.dumps({"input_data": [x.reshape(-1).tolist()]}))
    args = {"dir": str(d), "batch": cfg.batch, "decomp_base": cfg.decomp_base, "decomp_legs": cfg.decomp_legs}
    prep = run_child("ezkl_prep", args, d)
    settings = json.loads((d / "settings.json").read_text())
    ra = settings["run_args"]
    logrows = int(ra["logrows"])
    if logrows not in srs_cache:
        srs = d.parent / f"kzg-{logrows}.srs"
        srs_cache[logrows] = (srs, run_child("ezkl_srs", {"srs": str(srs), "logrows": logrows}, d)["gen_srs_s"])
    srs_path, t_srs = srs_cache[logrows]
    args["srs"] = str(srs_path)
    setup = run_child("ezkl_setup", args, d)
    proves = [run_child("ezkl_prove", args, d) for _ in range(prove_reps)]
    best = min(proves, key=lambda r: r["witness_s"] + r["prove_s"])
    verify = run_child("ezkl_verify", args, d)
    if not verify["verified"]:
        raise RuntimeError(f"ezkl.verify rejected its own proof for {cfg.label}")
    proof = json.loads((d / "proof.json").read_text())
    proof_bytes = len(bytes.fromhex(proof["hex_proof"].removeprefix("0x")))
    n_instances = sum(len(col) for col in proof["instances"])
    pretty = proof.get("pretty_public_inputs") or {}
    out_q = [float(v) for col in pretty.get("rescaled_outputs", []) for v in col]
    in_q = [float(v) for col in pretty.get("rescaled_inputs", []) for v in col]
    y = y_float.reshape(-1).tolist()
    xs = x.reshape(-1).tolist()
    dev = max(abs(a - b) for a, b in zip(out_q, y, strict=True)) if len(out_q) == len(y) else None
    in_dev = max(abs(a - b) for a, b in zip(in_q, xs, strict=True)) if len(in_q) == len(xs) else None
    return {
        "version": getattr(ezkl, "__version__", "?"),
        "settings": {"input_scale": ra.get("input_scale"), "param_scale": ra.get("param_scale"),
                     "logrows": logrows, "num_rows": settings.get("num_rows"),
                     "decomp_base": ra.get("decomp_base"), "decomp_legs": ra.get("decomp_legs"),
                     "check_mode": settings.get("check_mode", ra.get("check_mode")),
                     "input_visibility": ra.get("input_visibility"), "output_visibility": ra.get("output_visibility"),
                     "param_visibility": ra.get("param_visibility"), "calibration_target": CALIBRATION_TARGET},
        "times_s": {"export_onnx": t_export, **{k.removesuffix("_s"): v for k, v in prep.items() if k.endswith("_s")},
                    "gen_srs": t_srs, "setup": setup["setup_s"], "witness": best["witness_s"],
                    "prove": best["prove_s"], "prove_total": best["witness_s"] + best["prove_s"],
                    "verify": verify["verify_s"]},
        "prove_total_samples_s": [r["witness_s"] + r["prove_s"] for r in proves],
        "bytes": {"proof": proof_bytes, "instances": 32 * n_instances, "n_instances": n_instances,
                  "proof_json": _size(d / "proof.json"), "vk": _size(d / "vk.key"), "pk": _size(d / "pk.key"),
                  "srs": _size(srs_path), "compiled": _size(d / "model.compiled"), "onnx": _size(d / "model.onnx")},
        "peak_rss": {"setup": setup["peak_rss"], "prove": max(r["peak_rss"] or 0 for r in proves) or None,
                     "verify": verify["peak_rss"]},
        "base_rss": {"setup": setup["base_rss"], "prove": best["base_rss"], "verify": verify["base_rss"]},
        "verified": True,
        "max_abs_dev": dev,
        "max_abs_input_dev": in_dev,
        "max_abs_output": max(abs(v) for v in y),
    }


def worker_in_memory(spec: Any, key: Any, issue: Any) -> tuple[Any, Any, bytes, float, float]:
    """The worker's work without the trace directory (whose fsyncs dominate ``Prover.run`` on a
    job of a few steps): steps, canonical encodings, BLAKE3 digests, Merkle root, signed commitment; then,
    for the challenge ``issue(commitment)`` returns, the opened states and one multiproof.
    Returns (commitment, challenge, response bytes, commit seconds, respond seconds)."""
    from pocv.bundle import Response
    from pocv.device import deterministic, environment, fingerprint
    from pocv.encoding import digest_encoded, encode_state
    from pocv.merkle import MerkleTree
    from pocv.records import Commitment

    t0 = time.perf_counter()
    kernel = kernel_for(spec)
    with deterministic():
        state = kernel.init_state(spec)
        encoded = [encode_state(state)]
        for i in range(1, spec.steps + 1):
            state = kernel.step(state, i, spec)
            encoded.append(encode_state(state))
        env = environment()
    tree = MerkleTree(b"".join(digest_encoded(e) for e in encoded))
    commitment = Commitment.create(spec=spec, root=tree.root, key=key, fingerprint=fingerprint(),
                                   environment={**env, "device": "cpu"})
    t_commit = time.perf_counter() - t0
    challenge = issue(commitment)
    t1 = time.perf_counter()
    wanted = Response.opened_leaves(list(challenge.indices))
    response = Response(job_id=commitment.job_id, root=commitment.root, tree_size=commitment.tree_size,
                        indices=challenge.indices, states={j: encoded[j] for j in wanted},
                        proof=tuple(tree.multiproof(wanted))).to_bytes()
    return commitment, challenge, response, t_commit, time.perf_counter() - t1


def measure_pocv(cfg: Config, d: Path, reps: int, y_float: Any) -> dict[str, Any]:
    """pocv's worker and verifier on the same inference: times in this process (min of ``reps``),
    peak memory from one child process per side."""
    from blake3 import blake3
    from solders.keypair import Keypair

    from pocv import Prover, Verifier
    from pocv.bundle import Response
    from pocv.encoding import decode_state

    d.mkdir(parents=True, exist_ok=True)
    spec = job_spec(cfg)
    wseed, vseed = blake3(b"bench ezkl worker").digest(), blake3(b"bench ezkl verifier").digest()
    beacon = blake3(b"bench ezkl beacon").digest()
    wk, vk = Keypair.from_seed(wseed), Keypair.from_seed(vseed)
    verifier = Verifier(key=vk)
    t: dict[str, list[float]] = {"run": [], "respond": [], "challenge": [], "check": [], "commit_mem": [],
                                 "respond_mem": []}

    def issue(c: Any) -> Any:
        return verifier.challenge(c, beacon=beacon, confidence=CONFIDENCE, cheat_fraction=CHEAT_FRACTION)

    for r in range(reps):
        c_mem, ch_mem, resp_mem, t_cm, t_rm = worker_in_memory(spec, wk, issue)
        if not verifier.check(c_mem, ch_mem, resp_mem).passed:
            raise RuntimeError(f"pocv rejected the in-memory worker's response on {cfg.label}")
        t["commit_mem"].append(t_cm)
        t["respond_mem"].append(t_rm)
        trace = d / f"trace-{r}"
        prover = Prover(trace_dir=trace, key=wk)
        commitment, t_run = _timed(prover.run, spec)
        challenge, t_ch = _timed(issue, commitment)
        response, t_resp = _timed(lambda p=prover, c=challenge: p.respond(c).to_bytes())
        verdict, t_check = _timed(verifier.check, commitment, challenge, response)
        if not verdict.passed:
            raise RuntimeError(f"pocv rejected an honest worker on {cfg.label}: {verdict.failures[:1]}")
        for k, v in (("run", t_run), ("respond", t_resp), ("challenge", t_ch), ("check", t_check)):
            t[k].append(v)
        shutil.rmtree(trace)
    final = decode_state(Response.from_bytes(response).states[cfg.depth])["h"]
    dev = float((final - y_float).abs().max()) if final.shape == y_float.shape else None
    args = {"dir": str(d), "width": cfg.width, "depth": cfg.depth, "batch": cfg.batch,
            "worker_seed": wseed.hex(), "verifier_seed": vseed.hex(), "beacon": beacon.hex()}
    wchild = run_child("pocv_worker", args, d)
    vchild = run_child("pocv_verifier", args, d)
    if not vchild["passed"]:
        raise RuntimeError(f"pocv verifier child rejected the worker child's response on {cfg.label}")
    best = {k: min(v) for k, v in t.items()}
    commit_b, chal_b = len(commitment.to_json().encode()), len(challenge.to_json().encode())
    return {
        "steps": spec.steps, "k": challenge.k, "detection": challenge.detection,
        "confidence": CONFIDENCE, "cheat_fraction": CHEAT_FRACTION, "reps": reps,
        "times_s": {**best, "worker": best["run"] + best["respond"], "verifier": best["challenge"] + best["check"],
                    "worker_mem": best["commit_mem"] + best["respond_mem"]},
        "samples_s": t,
        "child_times_s": {"run": wchild["run_s"], "respond": wchild["respond_s"], "check": vchild["check_s"]},
        "bytes": {"commitment": commit_b, "challenge": chal_b, "response": len(response),
                  "worker_sent": commit_b + len(response), "total": commit_b + chal_b + len(response)},
        "peak_rss": {"worker": wchild["peak_rss"], "verifier": vchild["peak_rss"]},
        "base_rss": {"worker": wchild["base_rss"], "verifier": vchild["base_rss"]},
        "passed": True,
        "max_abs_dev": dev,
    }


def _div(a: Any, b: Any) -> float | None:
    try:
        return float(a) / float(b) if a is not None and b else None
    except (TypeError, ValueError):
        return None


def ratios(ez: dict[str, Any], pv: dict[str, Any], bare_s: float) -> dict[str, float | None]:
    """Every ratio is EZKL / pocv (> 1: pocv is cheaper), except the two ``*_over_inference``."""
    et, pt, eb, pb = ez["times_s"], pv["times_s"], ez["bytes"], pv["bytes"]
    ep, pp, e0, p0 = ez["peak_rss"], pv["peak_rss"], ez["base_rss"], pv["base_rss"]

    def delta(peak: Any, base: Any) -> Any:
        return peak - base if peak is not None and base is not None else None

    return {
        "prove_over_worker": _div(et["prove_total"], pt["worker"]),
        "prove_over_worker_mem": _div(et["prove_total"], pt.get("worker_mem")),
        "verify_over_verifier": _div(et["verify"], pt["verifier"]),
        "bytes_over_bytes": _div(eb["proof"] + eb["instances"], pb["worker_sent"]),
        "peak_prove_over_worker": _div(ep["prove"], pp["worker"]),
        "peak_delta_prove_over_worker": _div(delta(ep["prove"], e0["prove"]), delta(pp["worker"], p0["worker"])),
        "peak_verify_over_verifier": _div(ep["verify"], pp["verifier"]),
        "peak_delta_verify_over_verifier": _div(delta(ep["verify"], e0["verify"]),
                                                delta(pp["verifier"], p0["verifier"])),
        "ezkl_prove_over_inference": _div(et["prove_total"], bare_s),
        "pocv_worker_over_inference": _div(pt["worker"], bare_s),
    }


def measure(cfg: Config, workdir: Path, *, quick: bool, srs_cache: dict[int, tuple[Path, float]]) -> dict[str, Any]:
    """Everything for one model, in one run: the entry ``configs[cfg.label]`` of ezkl.json."""
    register_kernel()
    d = workdir / cfg.label.replace(" ", "_").replace("^", "p")
    bare_s, y = float_inference_s(cfg, 50 if quick else 200)
    pv = measure_pocv(cfg, d / "pocv", 5 if quick else 30, y)
    try:
        ez = measure_ezkl(cfg, d / "ezkl", srs_cache, 1 if quick else 2, y)
    finally:
        with contextlib.suppress(OSError):  # proving keys are 16-520 MiB: do not leave them behind
            (d / "ezkl" / "pk.key").unlink()
    return {"model": {**asdict(cfg), "params": cfg.n_params, "activation": "relu", "seed": SEED},
            "float_inference_s": bare_s, "ezkl": ez, "pocv": pv, "ratios": ratios(ez, pv, bare_s)}


# -- the report section ---------------------------------------------------------------------------

_RATIO_NAMES: Final = [
    ("prove_over_worker", "prove time: EZKL witness+prove / pocv Prover.run+respond (trace on disk)"),
    ("prove_over_worker_mem", "prove time: EZKL witness+prove / pocv worker in memory (no trace files)"),
    ("verify_over_verifier", "verify time: EZKL verify / pocv challenge+check"),
    ("bytes_over_bytes", "bytes to the verifier: EZKL proof+instances / pocv commitment+response"),
    ("peak_prove_over_worker", "peak RSS: EZKL prove process / pocv worker process"),
    ("peak_delta_prove_over_worker", "peak RSS above the process's imports: EZKL prove / pocv worker"),
    ("peak_verify_over_verifier", "peak RSS: EZKL verify process / pocv verifier process"),
    ("peak_delta_verify_over_verifier", "peak RSS above the process's imports: EZKL verify / pocv verifier"),
]


def _mb(v: Any) -> float | None:
    return v / 2**20 if isinstance(v, int | float) and not isinstance(v, bool) else None


def _ms(v: Any) -> float | None:
    return v * 1e3 if isinstance(v, int | float) and not isinstance(v, bool) else None


def render(sec: Section, data: dict[str, Any], plot: Plotter) -> None:
    sec.title = "EZKL vs pocv on a tiny MLP's inference (`ezkl`)"
    configs = data["configs"]
    if not isinstance(configs, dict) or not configs:
        raise KeyError("configs")
    if data.get("quick"):
        sec.notes.append("quick mode (POCV_BENCH_QUICK=1): one tiny model, one proving run; "
                         "run without it for three sizes and EZKL's default settings")
    labels = list(configs)
    first = configs[labels[0]]
    ez0 = first["ezkl"]
    st = ez0["settings"]
    devs = [c["ezkl"].get("max_abs_dev") for c in configs.values()]
    devs_f = [v for v in devs if isinstance(v, int | float)]
    pv_devs = [c["pocv"].get("max_abs_dev") for c in configs.values()]
    sec.blocks.append(
        f"The same computation on both sides: a ReLU MLP (width × depth × batch below; seeded float32 weights and "
        f"inputs shared by both), EZKL {ez0.get('version')} (Halo2, KZG on BN254) against pocv with the library's "
        f"challenge defaults (p = {CONFIDENCE}, f = {CHEAT_FRACTION}: k = 66, capped at the job's n = depth steps, "
        f"so here the verifier recomputes every layer). Each figure is EZKL / pocv from the same run; "
        f"the mark says whether pocv is at least as cheap (target >= 1 means 'pocv does not lose here', not a "
        f"design target).")
    sec.blocks.append("**What each side's answer is worth** (no ratio captures this)")
    sec.blocks.append(table(["", "EZKL (zk-SNARK)", "pocv (spot-checked commitment)"], [
        ["what is established",
         "the quantized circuit of the model was evaluated correctly on the public inputs, giving the public outputs",
         "the worker committed (signed Merkle root) to every state of the float job; the challenged steps recompute"],
        ["soundness",
         "cryptographic (KZG / pairing assumptions on BN254, given an honest SRS): a false proof passes with "
         "negligible probability, whatever the prover spends",
         "probabilistic: a worker faking a fraction f of n steps is caught with probability >= 1-(1-f)^k; "
         "enforced economically (bond slashed on FAIL). Here k = n: every step recomputed, any faked step caught"],
        ["who can check, and how",
         "anyone holding the vk and the SRS, offline, any time; the verifier never runs the model",
         "a verifier recomputes the k challenged steps (anyone with the spec and the response can redo the check); "
         "interactive: the challenge must come after the commitment, from a beacon"],
        ["verifier work as the model grows",
         "constant-size pairing check, the proof is the same size at every width",
         "recomputes k steps: grows with the model; the response carries the opened states"],
        ["zero knowledge",
         "available (inputs, outputs or weights can be private; here inputs/outputs public, weights fixed)",
         "none: every opened state is revealed to the verifier"],
        ["fidelity to the float model",
         f"fixed point at input scale 2^{st.get('input_scale')}, param scale 2^{st.get('param_scale')} (calibrated, "
         f"target '{st.get('calibration_target')}'): max |EZKL output - torch float32| = "
         f"{fmt(max(devs_f)) if devs_f else '—'}",
         f"the float32 model itself: max |pocv output - torch float32| = "
         f"{fmt(max((v for v in pv_devs if isinstance(v, int | float)), default=None))} (exact kernel on one CPU; "
         f"across GPUs a tolerance kernel with a calibrated bound)"],
        ["setup",
         "per model: proving key + verifying key; a universal SRS that must come from a powers-of-tau ceremony "
         "(this run used ezkl.gen_srs, a local test SRS that is insecure: whoever made it can forge proofs)",
         "none beyond the versioned kernel code"],
        ["worker speed", "a constraint system over a 254-bit field: see 'EZKL prove / float inference' below",
         "the native float kernel (GPU speed on a GPU) plus BLAKE3 hashing of each state"],
    ]))

    figs: list[Figure] = []
    rows = []
    for key, what in _RATIO_NAMES:
        row: list[Any] = [what]
        for lab in labels:
            f = Figure(f"{lab}: {what}", configs[lab]["ratios"].get(key), PARITY, ">=")
            figs.append(f)
            row.append(f"{fmt(f.value)} {f.mark}" if f.met is not None else fmt(f.value))
        rows.append(row)
    sec.figures += figs
    sec.blocks.append("**Ratios, EZKL / pocv** (> 1: pocv cheaper; target >= 1 each: met where pocv is at least as "
                      "cheap, missed where it loses)")
    sec.blocks.append(table(["EZKL / pocv", *labels], rows))
    lost = [f.name for f in figs if f.met is False]
    won = [f for f in figs if f.met is True]
    measured = [f for f in figs if f.met is not None]
    sec.blocks.append(
        f"pocv is at least as cheap on {len(won)} of {len(measured)} measured ratios. Where it loses"
        + (": " + "; ".join(lost) + "." if lost else " on a measured ratio: none in this run.")
        + " Where it loses regardless of the numbers: its verifier must recompute the challenged steps (EZKL's "
          "verifier never runs the model), its response grows with the state while EZKL's proof is the same size "
          "at every width, it reveals every opened state (no zero knowledge), and its soundness is probabilistic "
          "and economic (for k < n a cheater faking few steps can slip through with probability (1-f)^k) where "
          "EZKL's is cryptographic.")

    rows = []
    for lab in labels:
        c = configs[lab]
        et, pt = c["ezkl"]["times_s"], c["pocv"]["times_s"]
        r = c["ratios"]
        cold = c["pocv"].get("child_times_s", {})
        rows.append([lab, c["model"].get("params"), _ms(c.get("float_inference_s")), et.get("gen_srs"),
                     et.get("setup"), et.get("witness"), et.get("prove"), _ms(et.get("verify")),
                     _ms(pt.get("run")), _ms(pt.get("respond")), _ms(pt.get("worker_mem")), _ms(cold.get("run")),
                     _ms(pt.get("challenge")), _ms(pt.get("check")),
                     r.get("ezkl_prove_over_inference"), r.get("pocv_worker_over_inference")])
    sec.blocks.append("**Times** (EZKL stages each in a fresh child process: one run of setup and verify, the best "
                      "of the proving runs; pocv the best of its repetitions in the benchmark process, and its first "
                      "run in a fresh process as 'cold'; most of Prover.run on a job of a few steps is the fsyncs of "
                      "its trace directory, which 'in memory' leaves out; SRS generation and setup are one-time per circuit "
                      "size / per model and in no ratio)")
    sec.blocks.append(table(["model", "params", "float inference ms", "EZKL gen_srs s", "EZKL setup s",
                             "EZKL witness s", "EZKL prove s", "EZKL verify ms", "pocv run ms", "pocv respond ms",
                             "pocv worker in memory ms", "pocv run cold ms", "pocv challenge ms", "pocv check ms",
                             "EZKL prove / float inference", "pocv worker / float inference"], rows))
    rows = []
    for lab in labels:
        c = configs[lab]
        eb, pb, s = c["ezkl"]["bytes"], c["pocv"]["bytes"], c["ezkl"]["settings"]
        rows.append([lab, s.get("logrows"), s.get("num_rows"), eb.get("proof"), eb.get("instances"),
                     eb.get("proof_json"), eb.get("vk"), _mb(eb.get("pk")), _mb(eb.get("srs")),
                     pb.get("commitment"), pb.get("challenge"), pb.get("response"), c["pocv"].get("k"),
                     c["pocv"].get("steps")])
    sec.blocks.append("**Sizes** (bytes unless marked; EZKL instances = public inputs and outputs as 32-byte field "
                      "elements; the vk and SRS reach the verifier once per model, the pk stays with the prover)")
    sec.blocks.append(table(["model", "EZKL logrows", "EZKL rows used", "EZKL proof", "EZKL instances",
                             "EZKL proof.json", "EZKL vk", "EZKL pk MiB", "SRS MiB", "pocv commitment",
                             "pocv challenge", "pocv response", "pocv k", "pocv n"], rows))
    rows = []
    for lab in labels:
        c = configs[lab]
        ep, e0, pp, p0 = c["ezkl"]["peak_rss"], c["ezkl"]["base_rss"], c["pocv"]["peak_rss"], c["pocv"]["base_rss"]
        rows.append([lab, _mb(ep.get("setup")), _mb(ep.get("prove")), _mb(e0.get("prove")), _mb(ep.get("verify")),
                     _mb(pp.get("worker")), _mb(p0.get("worker")), _mb(pp.get("verifier"))])
    sec.blocks.append("**Peak resident memory** (MiB, VmHWM of a child process per stage; 'after imports' is the "
                      "process's RSS before the work: torch for pocv, the ezkl extension for EZKL)")
    sec.blocks.append(table(["model", "EZKL setup", "EZKL prove", "EZKL prove, after imports", "EZKL verify",
                             "pocv worker", "pocv worker, after imports", "pocv verifier"], rows))
    rows = []
    for lab in labels:
        e = configs[lab]["ezkl"]
        s = e["settings"]
        rows.append([lab, s.get("input_scale"), s.get("param_scale"), f"{s.get('decomp_base')}^{s.get('decomp_legs')}",
                     s.get("check_mode"), e.get("max_abs_output"), e.get("max_abs_dev"), e.get("max_abs_input_dev"),
                     configs[lab]["pocv"].get("max_abs_dev")])
    sec.blocks.append("**EZKL's quantization** (scales are log2; deviation from the torch float32 output)")
    sec.blocks.append(table(["model", "input scale", "param scale", "decomposition", "check mode",
                             "max |float output|", "max |EZKL - float|", "max |EZKL input - float input|",
                             "max |pocv - float|"], rows))
    sizes = [configs[lab]["pocv"]["bytes"].get("worker_sent") for lab in labels]
    proofs = sorted({configs[lab]["ezkl"]["bytes"].get("proof") for lab in labels} - {None})
    sec.blocks.append(
        f"On bytes pocv wins only because these models are tiny: its commitment+response grows with the opened "
        f"states ({fmt(min(sizes))}-{fmt(max(sizes))} B here), while EZKL's proof is "
        f"{', '.join(fmt(v) for v in proofs)} B at every size; the rest of EZKL's message is its public instances "
        f"(32 B per input and output element), which EZKL can replace by a Poseidon hash (hashed visibility) to "
        f"stay near the bare proof: a model with larger activations makes pocv send more. All EZKL settings not "
        f"named here (check mode, visibilities) are ezkl's defaults.")
    sec.notes.append("The SRS here was generated locally with ezkl.gen_srs (for testing only: its maker could forge "
                     "proofs); a production SRS comes from a powers-of-tau ceremony and is downloaded, not made.")

    with plot.figure(sec, "costs", ncols=3, figsize=(16, 4.2)) as fa:
        if fa:
            ax1, ax2, ax3 = fa[1]
            grouped_bars(ax1, labels, {
                "EZKL witness+prove": [configs[lab]["ezkl"]["times_s"]["prove_total"] for lab in labels],
                "pocv worker": [configs[lab]["pocv"]["times_s"]["worker"] for lab in labels],
                "EZKL verify": [configs[lab]["ezkl"]["times_s"]["verify"] for lab in labels],
                "pocv verifier": [configs[lab]["pocv"]["times_s"]["verifier"] for lab in labels],
            }, "time per inference", ylabel="seconds (log)", log=True)
            grouped_bars(ax2, labels, {
                "EZKL proof+instances": [configs[lab]["ezkl"]["bytes"]["proof"] + configs[lab]["ezkl"]["bytes"]
                                         ["instances"] for lab in labels],
                "pocv commitment+response": [configs[lab]["pocv"]["bytes"]["worker_sent"] for lab in labels],
            }, "bytes sent to the verifier", ylabel="bytes")
            grouped_bars(ax3, labels, {
                "EZKL prove": [_mb(configs[lab]["ezkl"]["peak_rss"]["prove"]) or 0.0 for lab in labels],
                "pocv worker": [_mb(configs[lab]["pocv"]["peak_rss"]["worker"]) or 0.0 for lab in labels],
                "EZKL verify": [_mb(configs[lab]["ezkl"]["peak_rss"]["verify"]) or 0.0 for lab in labels],
                "pocv verifier": [_mb(configs[lab]["pocv"]["peak_rss"]["verifier"]) or 0.0 for lab in labels],
            }, "peak resident memory", ylabel="MiB")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in devs):
        sec.notes.append("EZKL's output could not be read back from proof.json for some model: deviation not shown")
