"""gemm-int8: the fast path equals the int64 numpy reference bit for bit, at any thread count."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pocv.encoding import state_digest
from pocv.errors import SpecError
from pocv.jobs import JobSpec
from pocv.kernels import kernel_for, resolve_spec


@pytest.mark.parametrize(("n", "layers"), [(16, 1), (24, 3), (64, 4), (136, 2)])
def test_fast_path_equals_reference(n: int, layers: int) -> None:
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=300, seed=n, params={"n": n, "layers": layers}))
    k = kernel_for(spec)
    x = k.init_state(spec)
    for i in [1, 2, 3, 250, 251, 252, 300]:  # i mod 251 wraps
        fast, ref = k.step(x, i, spec), k.reference_step(x, i, spec)
        assert state_digest(fast) == state_digest(ref)
        x = fast


def test_state_does_not_collapse() -> None:
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=50, seed=1, params={"n": 64}))
    k = kernel_for(spec)
    x = k.init_state(spec)
    for i in range(1, 51):
        x = k.step(x, i, spec)
    values = x["x"].numpy()
    assert len(np.unique(values)) > 200  # still spread over the int8 range
    assert values.std() > 40


def test_products_are_formed_in_int32_not_int8() -> None:
    # int8 @ int8 would wrap; the kernel must not do that: compare with a wrapped product
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=1, seed=3, params={"n": 32}))
    k = kernel_for(spec)
    x = k.init_state(spec)["x"]
    w = k.weights(spec)[0]
    wrapped = (x.numpy() @ w.numpy()).astype(np.int8)  # numpy int8 matmul wraps
    exact = x.numpy().astype(np.int64) @ w.numpy().astype(np.int64)
    assert not np.array_equal(wrapped.astype(np.int64), exact)
    assert np.array_equal(torch._int_mm(x, w).numpy(), exact)


def test_thread_count_does_not_change_the_bits() -> None:
    code = ("import sys, torch; torch.set_num_threads(int(sys.argv[1])); from pocv.jobs import JobSpec;from pocv.kernels import kernel_for, resolve_spec;"
            "from pocv.encoding import state_digest;"
            "s=resolve_spec(JobSpec(kernel='gemm-int8',steps=5,seed=9,params={'n':256})); k=kernel_for(s); x=k.init_state(s)\n"
            "for i in range(1,6): x=k.step(x,i,s)\n"
            "print(state_digest(x).hex())")
    outs = {subprocess.run([sys.executable, "-c", code, str(t)], capture_output=True, text=True,
                           check=True).stdout for t in (1, 2)}
    assert len(outs) == 1


def test_layers_change_the_step() -> None:
    one = resolve_spec(JobSpec(kernel="gemm-int8", steps=1, seed=1, params={"n": 32, "layers": 1}))
    two = resolve_spec(JobSpec(kernel="gemm-int8", steps=1, seed=1, params={"n": 32, "layers": 2}))
    k = kernel_for(one)
    assert state_digest(k.step(k.init_state(one), 1, one)) != state_digest(k.step(k.init_state(two), 1, two))


def test_init_depends_on_seed_and_size() -> None:
    a = resolve_spec(JobSpec(kernel="gemm-int8", steps=1, seed=1, params={"n": 32}))
    b = resolve_spec(JobSpec(kernel="gemm-int8", steps=1, seed=2, params={"n": 32}))
    k = kernel_for(a)
    assert state_digest(k.init_state(a)) != state_digest(k.init_state(b))
    assert state_digest(k.init_state(a)) == state_digest(k.init_state(a))


@pytest.mark.parametrize("n", [8, 20, 8192])
def test_bad_sizes_are_refused(n: int) -> None:
    with pytest.raises(SpecError):
        resolve_spec(JobSpec(kernel="gemm-int8", steps=1, seed=1, params={"n": n}))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu() -> None:
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=3, seed=5, params={"n": 512}))
    k = kernel_for(spec)
    c, g = k.init_state(spec), k.init_state(spec, "cuda")
    for i in range(1, 4):
        c, g = k.step(c, i, spec), k.step(g, i, spec, "cuda")
        assert state_digest(c) == state_digest(g)
