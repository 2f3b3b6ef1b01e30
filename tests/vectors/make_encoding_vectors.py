"""Regenerate tests/vectors/encoding.json: `python tests/vectors/make_encoding_vectors.py`.

Each vector is built from a small recipe (so the test can rebuild it independently of the
stored bytes); the file stores the canonical encoding (its BLAKE3 for the multi-chunk vectors,
whose bytes would be megabytes of hex), the state digest (the root of the state's subtree,
state commitment format 2) and the subtree's leaf count. The test fails if the code drifts from
the file; regenerate only for a deliberate format change (and bump FORMAT_VERSION for the
canonical bytes, STATE_TREE_VERSION for how they are committed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

RECIPES: list[dict[str, Any]] = [
    {"name": "empty-state", "tensors": {}},
    {"name": "scalar-int64", "tensors": {"cursor": {"dtype": "int64", "shape": [], "start": 42}}},
    {"name": "bool-vector", "tensors": {"mask": {"dtype": "bool", "shape": [5], "start": 0}}},
    {"name": "uint8-matrix", "tensors": {"m": {"dtype": "uint8", "shape": [2, 3], "start": 250}}},
    {"name": "int8-negative", "tensors": {"x": {"dtype": "int8", "shape": [4], "start": -2}}},
    {"name": "int16-int32", "tensors": {"a": {"dtype": "int16", "shape": [3], "start": -1},
                                        "b": {"dtype": "int32", "shape": [2, 2], "start": 65536}}},
    {"name": "float16", "tensors": {"h": {"dtype": "float16", "shape": [3], "start": 1}}},
    {"name": "bfloat16", "tensors": {"bf": {"dtype": "bfloat16", "shape": [2, 2], "start": -3}}},
    {"name": "float32-3d", "tensors": {"w": {"dtype": "float32", "shape": [2, 2, 2], "start": 0}}},
    {"name": "float64-and-empty", "tensors": {"d": {"dtype": "float64", "shape": [2], "start": 1},
                                              "z": {"dtype": "float32", "shape": [0, 3], "start": 0}}},
    {"name": "mixed-order", "tensors": {"z.last": {"dtype": "int32", "shape": [1], "start": 7},
                                        "A-first": {"dtype": "float32", "shape": [1], "start": 1},
                                        "m_mid": {"dtype": "uint8", "shape": [1], "start": 9}}},
    # more than one chunk: a tensor of exactly one chunk, one of 2 chunks + 4 bytes, one of 3 chunks
    # (the leaf count is odd, so the subtree promotes a node), and a small one between them
    {"name": "multi-chunk", "large": True,
     "tensors": {"a": {"dtype": "float32", "shape": [65536], "start": 0},
                 "b": {"dtype": "int64", "shape": [65536 + 1], "start": -5},
                 "c": {"dtype": "uint8", "shape": [3], "start": 1},
                 "d": {"dtype": "int8", "shape": [3, 262144], "start": 0}}},
]


def build(recipe: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Values start, start+1, ... (bool: alternating from False; floats: value / 4; integers wrap)."""
    out = {}
    for name, t in recipe["tensors"].items():
        count = int(np.prod(t["shape"])) if t["shape"] else 1
        vals = np.arange(t["start"], t["start"] + count)
        dt = t["dtype"]
        if dt == "bool":
            arr = torch.from_numpy((vals % 2).astype(bool))
        elif dt in ("float16", "bfloat16", "float32", "float64"):
            arr = torch.tensor((vals / 4.0).tolist(), dtype=getattr(torch, dt))
        elif dt == "uint8":
            arr = torch.from_numpy((vals % 256).astype(np.uint8))
        else:  # integers wrap around at the dtype's range (none of the small recipes reaches it)
            arr = torch.from_numpy(vals.astype(np.dtype(dt)))
        out[name] = arr.reshape(t["shape"])
    return out


def main() -> None:
    from blake3 import blake3

    from pocv.encoding import (
        CHUNK_BYTES,
        FORMAT_VERSION,
        STATE_TREE_VERSION,
        ChunkLayout,
        encode_state,
        state_digest,
        state_schema,
    )

    vectors = []
    for r in RECIPES:
        state = build(r)
        data = encode_state(state)
        enc = {"encoding_blake3": blake3(data).hexdigest()} if r.get("large") else {"encoding": data.hex()}
        vectors.append({**r, **enc, "digest": state_digest(state).hex(),
                        "subtree_leaves": ChunkLayout.from_schema(state_schema(state)).size})
    path = Path(__file__).with_name("encoding.json")
    path.write_text(json.dumps({"format_version": FORMAT_VERSION, "state_tree_version": STATE_TREE_VERSION,
                                "chunk_bytes": CHUNK_BYTES, "vectors": vectors}, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {path}")


if __name__ == "__main__":
    main()
