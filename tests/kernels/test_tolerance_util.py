"""pocv.kernels._tolerance and pocv.kernels._util helpers: TF32 rounding, thread and precision contexts."""

from __future__ import annotations

import numpy as np
import torch

from pocv.kernels._tolerance import round_tf32, torch_threads
from pocv.kernels._util import strict_fp32


def test_round_tf32_keeps_10_mantissa_bits_nearest_even() -> None:
    x = torch.tensor([1.0, 1 + 2**-10, 1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20, -3.14159, 0.0],
                     dtype=torch.float32)
    got = round_tf32(x)
    want = torch.tensor([1.0, 1 + 2**-10, 1.0, 1 + 2**-9, 1 + 2**-10, -3.140625, 0.0], dtype=torch.float32)
    assert torch.equal(got, want)
    r = round_tf32(torch.randn(10_000))
    assert bool((r.view(torch.int32) & 0x1FFF == 0).all())


def test_round_tf32_error_is_half_a_tf32_ulp() -> None:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal(100_000).astype(np.float32))
    rel = ((round_tf32(x) - x).abs() / x.abs()).max()
    assert 2**-12 * 0.9 < float(rel) <= 2**-11


def test_torch_threads_restores() -> None:
    n = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n
    with torch_threads(None):
        assert torch.get_num_threads() == n


def test_strict_fp32_sets_and_restores() -> None:
    cm = torch.backends.cuda.matmul
    cm.allow_tf32 = True
    torch.set_float32_matmul_precision("medium")
    try:
        with strict_fp32():
            assert not cm.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
            assert not cm.allow_fp16_reduced_precision_reduction
            assert not cm.allow_bf16_reduced_precision_reduction
            assert torch.get_float32_matmul_precision() == "highest"
        assert cm.allow_tf32
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        cm.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
