"""Canonical state encoding: vectors on file, device/layout independence, strict decoding."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from blake3 import blake3
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pocv.encoding import (
    CHUNK_BYTES,
    DTYPE_CODES,
    FORMAT_VERSION,
    MAGIC,
    MAX_TENSORS,
    STATE_TREE_VERSION,
    ChunkLayout,
    decode_state,
    digest_encoded,
    encode_state,
    state_digest,
    state_schema,
)
from pocv.errors import EncodingError, LimitExceeded, MalformedError

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
from make_encoding_vectors import build  # noqa: E402

from tests.state_tree_ref import naive_state_root  # noqa: E402

ALL_DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]


def _vectors() -> list[dict]:
    return json.loads((VECTORS / "encoding.json").read_text())["vectors"]


@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: v["name"])
def test_vectors_on_file(vec: dict) -> None:
    state = build(vec)
    data = encode_state(state)
    if "encoding" in vec:
        assert data.hex() == vec["encoding"]
    else:  # a multi-chunk vector: its bytes are pinned by their BLAKE3
        assert blake3(data).hexdigest() == vec["encoding_blake3"]
    assert state_digest(state).hex() == vec["digest"]
    assert digest_encoded(data).hex() == vec["digest"]
    assert naive_state_root(data).hex() == vec["digest"]  # the spec's definition, written out
    assert ChunkLayout.from_schema(state_schema(state)).size == vec["subtree_leaves"]
    assert encode_state(decode_state(data)) == data


def test_vectors_file_names_the_formats() -> None:
    head = json.loads((VECTORS / "encoding.json").read_text())
    assert (head["format_version"], head["state_tree_version"], head["chunk_bytes"]) == (
        FORMAT_VERSION, STATE_TREE_VERSION, CHUNK_BYTES)
    assert max(v["subtree_leaves"] for v in head["vectors"]) > 3  # a vector spans several chunks


def test_vectors_cover_every_dtype() -> None:
    seen = {t["dtype"] for v in _vectors() for t in v["tensors"].values()}
    assert seen == set(ALL_DTYPES) == set(DTYPE_CODES)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_transposed_view_encodes_like_contiguous_copy(dtype: str) -> None:
    base = torch.arange(12).reshape(3, 4)
    t = (base % 2).bool() if dtype == "bool" else base.to(getattr(torch, dtype))
    view = t.t()
    assert not view.is_contiguous()
    assert encode_state({"a": view}) == encode_state({"a": view.contiguous()})
    assert state_digest({"a": view}) == state_digest({"a": view.clone(memory_format=torch.contiguous_format)})


@pytest.mark.parametrize("dtype", [d for d in ALL_DTYPES if d != "bfloat16"])
def test_numpy_and_torch_encode_alike(dtype: str) -> None:
    t = torch.arange(10).reshape(2, 5)
    t = (t % 2).bool() if dtype == "bool" else t.to(getattr(torch, dtype))
    arr = t.numpy()
    assert encode_state({"x": arr}) == encode_state({"x": t})
    # strided numpy (every other column) and a Fortran-ordered copy
    assert encode_state({"x": arr[:, ::2]}) == encode_state({"x": np.ascontiguousarray(arr[:, ::2])})
    assert encode_state({"x": np.asfortranarray(arr)}) == encode_state({"x": arr})


def test_big_endian_numpy_encodes_as_little_endian() -> None:
    a = np.arange(6, dtype=">i4")
    assert encode_state({"a": a}) == encode_state({"a": a.astype("<i4")})
    f = np.linspace(0, 1, 5, dtype=">f8")
    assert state_digest({"f": f}) == state_digest({"f": f.astype("<f8")})


def test_mapping_order_does_not_matter() -> None:
    a, b = torch.ones(2), torch.zeros(3, dtype=torch.int32)
    assert encode_state({"a": a, "b": b}) == encode_state({"b": b, "a": a})


def test_values_dtype_and_shape_all_change_the_digest() -> None:
    base = {"x": torch.zeros(4, dtype=torch.int32)}
    variants = [
        {"x": torch.tensor([0, 0, 0, 1], dtype=torch.int32)},
        {"x": torch.zeros(4, dtype=torch.int64)},
        {"x": torch.zeros(2, 2, dtype=torch.int32)},
        {"y": torch.zeros(4, dtype=torch.int32)},
        {"x": torch.zeros(4, dtype=torch.float32)},
    ]
    digests = {state_digest(base)} | {state_digest(v) for v in variants}
    assert len(digests) == 1 + len(variants)


def test_negative_zero_and_nan_payloads_are_distinct_bits() -> None:
    # exact mode compares bits: -0.0 and 0.0 are different states
    assert state_digest({"x": torch.tensor([0.0])}) != state_digest({"x": torch.tensor([-0.0])})


@given(st.sampled_from([d for d in ALL_DTYPES if d != "bfloat16"]).flatmap(
    lambda d: hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))))
def test_roundtrip_property(arr: np.ndarray) -> None:
    data = encode_state({"t": arr})
    back = decode_state(data)["t"]
    assert back.numpy().tobytes() == np.ascontiguousarray(arr).tobytes()
    assert tuple(back.shape) == arr.shape
    assert digest_encoded(data) == state_digest({"t": arr})


@given(st.binary(max_size=300))
def test_decoder_never_crashes_on_junk(data: bytes) -> None:
    try:
        decode_state(data)
    except MalformedError:
        pass


@given(st.data())
def test_decoder_rejects_any_truncation_or_extension(data: st.DataObject) -> None:
    enc = encode_state({"a": torch.arange(6, dtype=torch.int16), "b": torch.ones(2, 2)})
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(MalformedError):
        decode_state(enc[:cut])
    with pytest.raises(MalformedError, match="trailing"):
        decode_state(enc + data.draw(st.binary(min_size=1, max_size=8)))


def _header(count: int) -> bytes:
    return MAGIC + struct.pack("<BH", 1, count)


BAD = {
    "wrong-magic": (b"XXXX" + b"\x01\x00\x00", MalformedError, "magic"),
    "wrong-version": (MAGIC + struct.pack("<BH", 9, 0), MalformedError, "version"),
    "too-many-tensors": (_header(MAX_TENSORS + 1), LimitExceeded, "at most"),
    "unknown-dtype": (_header(1) + b"\x01a" + bytes([99, 0]), EncodingError, "unknown dtype"),
    "too-many-dims": (_header(1) + b"\x01a" + bytes([3, 9]), LimitExceeded, "dimensions"),
    "huge-shape": (_header(1) + b"\x01a" + bytes([9, 2]) + struct.pack("<QQ", 1 << 10, 1 << 10),
                   LimitExceeded, "needs more bytes"),
    "huge-dimension": (_header(1) + b"\x01a" + bytes([9, 2]) + struct.pack("<QQ", 0, 1 << 63),
                       LimitExceeded, "larger than any state"),
    "empty-with-huge-dims": (_header(1) + b"\x01a" + bytes([3, 3]) + struct.pack("<3Q", 0, 1 << 32, 1 << 32),
                             LimitExceeded, "larger than any state"),
    "unsorted-names": (_header(2) + b"\x01b" + bytes([3, 0]) + b"\x00" + b"\x01a" + bytes([3, 0]) + b"\x00",
                       MalformedError, "ascending"),
    "duplicate-names": (_header(2) + b"\x01a" + bytes([3, 0]) + b"\x00" + b"\x01a" + bytes([3, 0]) + b"\x00",
                        MalformedError, "ascending"),
    "bad-name": (_header(1) + b"\x02a " + bytes([3, 0]) + b"\x00", EncodingError, "name"),
    "bool-not-0-1": (_header(1) + b"\x01a" + bytes([1, 1]) + struct.pack("<Q", 1) + b"\x02",
                     EncodingError, "bool"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_encodings_are_refused_with_reason(case: str) -> None:
    data, exc, match = BAD[case]
    with pytest.raises(exc, match=match):
        decode_state(data)


def test_unencodable_inputs() -> None:
    with pytest.raises(EncodingError, match="no canonical encoding"):
        encode_state({"c": torch.zeros(2, dtype=torch.complex64)})
    with pytest.raises(EncodingError, match="name"):
        encode_state({"bad name": torch.zeros(1)})
    with pytest.raises(EncodingError, match="torch.Tensor or numpy"):
        encode_state({"x": [1, 2, 3]})  # type: ignore[dict-item]


def test_decoded_tensors_are_independent_copies() -> None:
    data = encode_state({"x": torch.zeros(3)})
    a = decode_state(data)["x"]
    a += 1
    assert decode_state(data)["x"].sum().item() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_tensor_encodes_as_cpu_copy() -> None:
    t = torch.arange(100, dtype=torch.float32).reshape(10, 10)
    assert encode_state({"t": t.cuda().t()}) == encode_state({"t": t.t()})
