"""hf-causal-lm (issue 12) on a small random Llama built from a config: what verification costs.

(a) worker: pocv's steps (generation with the KV cache kept across steps, fingerprints, encoding
    and hashing every state) over plain ``model.generate`` of the same number of tokens;
(b) verifier: judging k challenged steps in ONE teacher-forced pass (``CausalLM.judge_steps``) and
    one pass per step (today's Verifier path), per challenged position, over the worker's time per
    generated token;
(c) bytes: committed state per generated token, opened per challenged position (with and without
    the token sequence, which the consumer receives anyway);
(d) detection: int8 / int4 weights and bf16 / fp16 inference when fp32 was ordered, per job.

    pytest bench/test_bench_llm.py --benchmark-only -s       (POCV_BENCH_QUICK=1: smaller)

Not here (issue 12 point 5, not done): TOPLOC 0.1.6 and token-difr side by side on the same model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from bench.conftest import QUICK, quick, write_result

transformers = pytest.importorskip("transformers", reason="pip install transformers (the LLM kernel's dependency)")

import torch  # noqa: E402

from pocv.artifacts import ArtifactStore  # noqa: E402
from pocv.encoding import digest_encoded, encode_state, encoded_size  # noqa: E402
from pocv.jobs import JobSpec  # noqa: E402
from pocv.kernels import get_kernel, resolve_spec  # noqa: E402
from pocv.kernels.causal_lm import CausalLM, Variant, calibrate_record, make_record  # noqa: E402
from pocv.kernels.params import use_artifacts  # noqa: E402

pytestmark = pytest.mark.bench
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CFG: dict[str, Any] = {"vocab": 2048, "width": quick(64, 128), "layers": quick(2, 4), "heads": 4,
                       "prompt_tokens": 32, "new_tokens": quick(128, 1024), "block": 16, "fingerprint_k": 4,
                       "challenged_steps": quick(2, 5), "detection_jobs": quick(2, 4), "threads": 1}
RESULTS: dict[str, Any] = {"config": {**CFG, "quick": QUICK}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root: Path = tmp_path_factory.mktemp("llm-bench")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=CFG["vocab"], hidden_size=CFG["width"],
                                   intermediate_size=2 * CFG["width"], num_hidden_layers=CFG["layers"],
                                   num_attention_heads=CFG["heads"], num_key_value_heads=CFG["heads"],
                                   max_position_embeddings=2048)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)  # peaked next-token distributions, like a trained model
    model.save_pretrained(str(root / "model"))
    store = ArtifactStore(root / "store")
    ref = store.add(root / "model")
    with use_artifacts(store):
        report = calibrate_record({"model": ref, "block": CFG["block"]}, trials=1, steps=2, batch=2)
    RESULTS["calibration"] = {k: report[k] for k in ("tau_by_group", "false_fails", "checks", "downgrades")}
    cal = store.add_bytes(make_record(report))
    prompt = ",".join(str((7 * i + 3) % CFG["vocab"]) for i in range(CFG["prompt_tokens"]))
    params = {"model": ref, "prompt": prompt, "block": CFG["block"], "fingerprint_k": CFG["fingerprint_k"],
              "calibration": cal}
    steps = CFG["new_tokens"] // CFG["block"]
    with use_artifacts(store):
        spec = resolve_spec(JobSpec(kernel="hf-causal-lm", steps=steps, seed=1, params=params))
    return {"store": store, "spec": spec, "model_dir": root / "model", "prompt": prompt}


def _worker(setup: dict[str, Any], variant: Variant = Variant()) -> tuple[list[Any], float]:
    k = get_kernel("hf-causal-lm")
    assert isinstance(k, CausalLM)
    spec = setup["spec"]
    with use_artifacts(setup["store"]):
        k.model(str(spec.params["model"]), "float32")  # loaded before the clock starts
        start = time.perf_counter()
        states = [k.init_state(spec)]
        for i in range(1, spec.steps + 1):
            states.append(k.step_with(states[-1], i, spec, "cpu", variant))
            digest_encoded(encode_state(states[-1]))  # what the prover does with each state
        return states, time.perf_counter() - start


def test_costs(setup: dict[str, Any], benchmark: Any) -> None:
    from pocv.kernels._tolerance import torch_threads  # reason: the measurement's thread count

    spec = setup["spec"]
    k = get_kernel("hf-causal-lm")
    assert isinstance(k, CausalLM)
    n = CFG["new_tokens"]
    with torch_threads(CFG["threads"]):
        states, t_worker = _worker(setup)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(setup["model_dir"]), dtype=torch.float32)
        ids = torch.tensor([[int(t) for t in setup["prompt"].split(",")]])
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        t_plain = time.perf_counter() - start
        same = int((out[0, ids.shape[1]:].numpy() == states[-1]["tokens"].numpy()[0]).sum())
        steps = spec.steps
        chosen = [steps - 2 * j for j in range(CFG["challenged_steps"])]  # the last ones: the longest prefixes
        items = [(states[i - 1], states[i], i) for i in chosen]
        with use_artifacts(setup["store"]):
            start = time.perf_counter()
            one = benchmark.pedantic(k.judge_steps, args=(items, spec), rounds=1, iterations=1)
            t_one = time.perf_counter() - start
            start = time.perf_counter()
            per = [k.judge_steps([it], spec)[0] for it in items]
            t_per = time.perf_counter() - start
    assert all(c.ok for c in one)
    assert all(c.ok for c in per)
    positions = len(items) * CFG["block"]
    state_bytes = encoded_size(k.schema(spec))
    token_bytes = 4 * n
    fp_bytes = state_bytes - token_bytes
    RESULTS["costs"] = {
        "tokens_equal_to_plain_generate": f"{same}/{n}",
        "worker_s": t_worker, "plain_generate_s": t_plain, "commit_overhead": t_worker / t_plain,
        "worker_s_per_token": t_worker / n,
        "challenged_steps": len(items), "challenged_positions": positions,
        "verify_one_pass_s": t_one, "verify_per_step_s": t_per,
        "verify_s_per_challenged_position_one_pass": t_one / positions,
        "verifier_per_position_over_worker_per_token": (t_one / positions) / (t_worker / n),
        "verify_all_challenged_over_generate": t_one / t_worker,
        "state_bytes": state_bytes, "token_buffer_bytes": token_bytes,
        "fingerprint_bytes_per_position": fp_bytes / CFG["block"],
        "opened_bytes_per_challenged_position": 2 * state_bytes / CFG["block"],
        "opened_bytes_per_challenged_position_beyond_tokens": 2 * fp_bytes / CFG["block"],
        "worker_stored_bytes_per_generated_token": state_bytes * (steps + 1) / n,
    }
    write_result("llm", RESULTS)
    print(RESULTS["costs"])


@pytest.mark.parametrize("cheat", ["int8", "int4", "bfloat16", "float16"])
def test_detection(setup: dict[str, Any], cheat: str, benchmark: Any) -> None:
    import dataclasses  # reason: one spec per job seed

    k = get_kernel("hf-causal-lm")
    assert isinstance(k, CausalLM)
    v = Variant(quant=cheat, cache=False) if cheat.startswith("int") else Variant(dtype=cheat, cache=False)
    jobs = CFG["detection_jobs"]
    base = setup["spec"]

    def detect() -> int:
        caught = 0
        for seed in range(jobs):
            spec = dataclasses.replace(base, seed=100 + seed, steps=min(base.steps, 4))
            with use_artifacts(setup["store"]):
                states = [k.init_state(spec)]
                for i in range(1, spec.steps + 1):
                    states.append(k.step_with(states[-1], i, spec, "cpu", v))
                verdicts = k.judge_steps([(states[i - 1], states[i], i) for i in range(1, spec.steps + 1)], spec)
            caught += any(not c.ok for c in verdicts)
        return caught

    caught = benchmark.pedantic(detect, rounds=1, iterations=1)
    RESULTS.setdefault("detection", {})[cheat] = {"caught_jobs": caught, "of": jobs,
                                                  "tokens_per_job": 4 * CFG["block"]}
    write_result("llm", RESULTS)
    assert caught == jobs
