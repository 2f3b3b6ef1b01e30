"""``pocv-digits``: the example's helper commands.

    pocv-digits prepare -o digits.safetensors        the data set, from scikit-learn (no download)
    pocv-digits job --data REF --calibration REF [--steps N] [--seed S] -o job.json
    pocv-digits cheat job.json --trace DIR -k worker.json --attack lr-1%-off   a worker that cheats
    pocv-digits accuracy TRACE                        accuracy of the trained model on the data set

(pocv job digits-cnn --steps N --param data=REF --param calibration=REF writes the same job spec.)
The cheating worker keeps every state in its trace, so pocv respond answers from it with the
states it lied about instead of recomputing honest ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

ATTACKS = ("lr-1%-off", "bf16-autocast", "fp16-autocast", "no-weight-decay", "skip")


def digits_tensors() -> dict[str, object]:
    """x float32[1797, 1, 8, 8] in [0, 1], y int64[1797]: scikit-learn's digits, as shipped."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8).copy())
    y = torch.from_numpy(d.target.astype(np.int64))
    return {"x": x, "y": y}


def _prepare(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    save_file(digits_tensors(), args.output)
    print(args.output)
    return 0


def _job(args: argparse.Namespace) -> int:
    params: dict[str, object] = {"data": args.data, "calibration": args.calibration}
    for item in args.param:
        k, _, v = item.partition("=")
        params[k] = int(v) if v.lstrip("-").isdigit() else v
    job = {"kernel": "digits-cnn", "steps": args.steps, "seed": args.seed, "params": params}
    text = json.dumps(job, indent=2, sort_keys=True) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def _cheat(args: argparse.Namespace) -> int:
    import torch

    from pocv.artifacts import ArtifactStore
    from pocv.kernels.training import Variant
    from pocv.store import load_keypair, load_spec
    from pocv.testing import LyingProver, Strategy

    variants = {"lr-1%-off": Variant(lr_scale=1.01), "bf16-autocast": Variant(autocast=torch.bfloat16),
                "fp16-autocast": Variant(autocast=torch.float16), "no-weight-decay": Variant(drop_weight_decay=True)}

    def fake(p, kernel, state, i, spec, device):  # type: ignore[no-untyped-def]
        if args.attack == "skip":
            return {**state, "cursor": torch.tensor(i * int(spec.params["batch"]) * int(spec.params["micro_batches"]))}
        return kernel.step_with(state, i, spec, device, variants[args.attack])

    liar = LyingProver(strategy=Strategy(args.attack, False, 1.0, kernels=("digits-cnn",), fake=fake, all_steps=True),
                       trace_dir=args.trace, key=load_keypair(args.keypair), checkpoint_every=args.checkpoint_every,
                       artifacts=ArtifactStore(args.artifacts))
    c = liar.run(load_spec(args.job))
    out = c.to_json() + "\n"
    if args.output:
        Path(args.output).write_text(out)
    else:
        sys.stdout.write(out)
    return 0


def _accuracy(args: argparse.Namespace) -> int:
    import torch

    from pocv.artifacts import ArtifactStore
    from pocv.encoding import decode_state
    from pocv.kernels import kernel_for
    from pocv.kernels.params import use_artifacts
    from pocv.trace import TraceStore

    store = TraceStore.open(args.trace)
    spec = store.spec
    kernel = kernel_for(spec)
    last = store.nearest_checkpoint(spec.steps)
    state = decode_state(store.read_checkpoint(last))
    with use_artifacts(ArtifactStore(args.artifacts)):
        m = kernel._module(spec)
        x, y = kernel._dataset(str(spec.params["data"]))
    params = {n: state[f"param.{n}"] for n, _ in m.named_parameters()}
    with torch.no_grad():
        pred = torch.func.functional_call(m, params, (x,)).argmax(1)
    print(f"after step {last}: accuracy {(pred == y).float().mean().item():.3f} on {len(y)} digits")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pocv-digits", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write the digits data set as safetensors")
    p.add_argument("-o", "--output", default="digits.safetensors")
    p.set_defaults(fn=_prepare)
    p = sub.add_parser("job", help="write a digits-cnn job spec")
    p.add_argument("--data", required=True, help="the data set's artifact reference (pocv artifact add)")
    p.add_argument("--calibration", default="", help="the calibration record's artifact reference")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("-o", "--output", default="-")
    p.set_defaults(fn=_job)
    p = sub.add_parser("cheat", help="run the job as a cheating worker (for a FAIL)")
    p.add_argument("job")
    p.add_argument("--trace", required=True)
    p.add_argument("-k", "--keypair", required=True)
    p.add_argument("--attack", choices=ATTACKS, default="lr-1%-off")
    p.add_argument("--checkpoint-every", type=int, default=1,
                   help="keep every C-th state (default 1: pocv respond then answers with the lies, never "
                        "recomputing honest states)")
    p.add_argument("--artifacts", default=None, help="artifact store (default: $POCV_ARTIFACTS or ~/.cache)")
    p.add_argument("-o", "--output", default=None, help="commitment JSON to write (default: stdout)")
    p.set_defaults(fn=_cheat)
    p = sub.add_parser("accuracy", help="accuracy of a trace's last checkpoint on the data set")
    p.add_argument("trace")
    p.add_argument("--artifacts", default=None)
    p.set_defaults(fn=_accuracy)
    args = ap.parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
