"""Regenerate tests/vectors/encoding.json: `python tests/vectors/make_encoding_vectors.py`.

Each vector is built from a small recipe (so the test can rebuild it independently of the
stored bytes); the file stores the canonical encoding and the state digest. The test fails if
the code drifts from the file; regenerate only for a deliberate format change (and bump
FORMAT_VERSION).
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
]


def build(recipe: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Values start, start+1, ... (bool: alternating from False; floats: value / 4)."""
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
        else:
            arr = torch.tensor(vals.tolist(), dtype=getattr(torch, dt))
        out[name] = arr.reshape(t["shape"])
    return out


def main() -> None:
    from pocv.encoding import encode_state, state_digest

    vectors = []
    for r in RECIPES:
        state = build(r)
        vectors.append({**r, "encoding": encode_state(state).hex(), "digest": state_digest(state).hex()})
    path = Path(__file__).with_name("encoding.json")
    path.write_text(json.dumps({"format_version": 1, "vectors": vectors}, indent=1) + "\n")
    print(f"wrote {len(vectors)} vectors to {path}")


if __name__ == "__main__":
    main()
