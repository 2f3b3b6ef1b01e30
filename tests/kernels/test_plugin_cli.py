"""The plugin test kernel (tests/plugin, pip-installed by the test setup) end to end through the
``pocv`` command line: kernels (provider), calibrate --add, artifact add/list/verify, job, run,
challenge, respond, verify (PASS), a tampered bundle and a cheating worker (FAIL), dispute (the
referee names the lied step), and exit 3 for a worker whose kernel provider differs from the
verifier's (both named) and for a missing or altered artifact (its hash named).

The commands run through :func:`pocv.cli.main` in this process (torch loads once; the
separate-process flow is tests/test_cli.py's); the cheating worker and the worker with another
plugin version write their traces and commitments through the library (the CLI never cheats).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pocv.jobs import JobSpec
from pocv.store import load_keypair
from tests.helpers import StepCheater
from tests.kernels.conftest import install_plugins

STEPS = 24
LIED = 7  # the cheating worker trains step 7 with a learning rate 1% off, every other step honestly


class Out:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout: {self.out[-2000:]}\nstderr: {self.err[-2000:]}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    install_plugins()
    root = tmp_path_factory.mktemp("plugin-cli")
    return {"root": root, "store": root / "store", "book": root / "book"}


@pytest.fixture
def pocv(capsys: pytest.CaptureFixture[str]) -> Callable[..., Out]:
    from pocv.cli import main

    def run(*args: str | Path) -> Out:
        capsys.readouterr()
        code = main([str(a) for a in args])
        got = capsys.readouterr()
        return Out(code, got.out, got.err)

    return run


@pytest.fixture(scope="module")
def flow(env: dict[str, Any]) -> dict[str, Any]:
    """keygen, calibrate --add, job, run: the honest worker's commitment (module-wide)."""
    import contextlib
    import io

    from pocv.cli import main

    root, store = env["root"], env["store"]

    def call(*args: str | Path) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
        assert code == 0, (args, code, err.getvalue()[-2000:])
        return code, out.getvalue()

    for who in ("worker", "verifier", "referee", "cheat"):
        call("keygen", "-o", root / f"{who}.json")
    _, ref = call("calibrate", "plugin-mlp", "--trials", "3", "--max-walk", "2", "--add", "--artifacts", store)
    cal = ref.strip()
    call("job", "plugin-mlp", "--steps", str(STEPS), "--seed", "3", "--param", f"calibration={cal}",
         "--param", "lr=5e-2", "--param", "width=16", "-o", root / "job.json")
    call("run", root / "job.json", "--trace", root / "T", "-k", root / "worker.json", "--checkpoint", "every:4",
         "--artifacts", store, "-q", "-o", root / "c.json")
    return {**env, "cal": cal, "job": root / "job.json", "c": root / "c.json", "trace": root / "T"}


def test_kernels_lists_plugins_with_their_provider(flow: dict[str, Any], pocv: Callable[..., Out]) -> None:
    r = pocv("kernels", "--output", "json")
    assert r.code == 0, r
    rows = {k["name"]: k for k in json.loads(r.out)}
    assert rows["plugin-mlp"]["provider"] == "pocv-plugin-test==0.1.0"
    assert rows["gemm-int8"]["provider"] == "pocv"
    r = pocv("kernels")
    line = next(ln for ln in r.out.splitlines() if ln.startswith("plugin-mlp@1"))
    assert "pocv-plugin-test==0.1.0" in line and "tolerance" in line
    r = pocv("kernels", "plugin-mlp")
    assert "lr               float in 0..10, default 0.05" in r.out and "calibration" in r.out


def test_calibration_record_is_an_artifact_and_part_of_the_job(flow: dict[str, Any], pocv: Callable[..., Out]) -> None:
    spec = JobSpec.from_json(flow["job"].read_text())
    assert spec.params["calibration"] == flow["cal"] and spec.params["lr"] == "0.05" and spec.version == 1
    assert json.loads(flow["c"].read_text())["provider"] == "pocv-plugin-test==0.1.0"
    r = pocv("artifact", "list", "--artifacts", flow["store"])
    assert r.code == 0 and flow["cal"] in r.out, r
    r = pocv("artifact", "verify", flow["cal"], "--artifacts", flow["store"])
    assert r.code == 0 and r.out.split() == ["ok", flow["cal"]], r
    rec = json.loads((flow["store"] / "blake3" / flow["cal"].removeprefix("blake3:")).read_bytes())
    assert rec["type"] == "pocv calibration record" and rec["false_fails"] == 0 and rec["kernel"] == "plugin-mlp@1"
    # --record FILE: the record's bytes, whose hash is the reference printed (and stored nowhere)
    record = flow["root"] / "record.json"
    r = pocv("calibrate", "plugin-mlp", "--trials", "2", "--max-walk", "1", "--seed", "5", "--record", record,
             "--artifacts", flow["root"] / "unused-store", "-q")
    assert r.code == 0 and r.err == "", r
    assert r.out.strip() == pocv("artifact", "hash", record).out.strip() != flow["cal"]
    assert not (flow["root"] / "unused-store").exists()


def _challenge(flow: dict[str, Any], pocv: Callable[..., Out], c: Path, out: Path, *extra: str | Path) -> Out:
    return pocv("challenge", c, "--beacon", "random", "-k", flow["root"] / "verifier.json", "--book", flow["book"],
                "--artifacts", flow["store"], "-o", out, *extra)


def test_run_challenge_respond_verify_pass(flow: dict[str, Any], pocv: Callable[..., Out]) -> None:
    root = flow["root"]
    r = _challenge(flow, pocv, flow["c"], root / "ch.json", "--job", flow["job"])
    assert r.code == 0, r
    r = pocv("respond", flow["trace"], root / "ch.json", "-k", root / "worker.json", "--workers", "2",
             "--artifacts", flow["store"], "-o", root / "r.pocv", "-q")
    assert r.code == 0, r
    r = pocv("verify", flow["c"], root / "ch.json", root / "r.pocv", "-k", root / "verifier.json", "--book",
             flow["book"], "--artifacts", flow["store"], "--output", "text", "-q")
    assert r.code == 0 and r.out.startswith("PASS"), r
    # a bundle altered on the way: a FAIL verdict, on a bundle the worker did not sign (exit 4)
    bundle = bytearray((root / "r.pocv").read_bytes())
    bundle[len(bundle) // 2] ^= 0x10
    (root / "tampered.pocv").write_bytes(bundle)
    r = pocv("verify", flow["c"], root / "ch.json", root / "tampered.pocv", "-k", root / "verifier.json",
             "--book", flow["book"], "--artifacts", flow["store"], "-q")
    assert r.code in (1, 4), r
    verdict = json.loads(r.out)
    assert verdict["result"] == "FAIL" and verdict["bundle_signed"] is (r.code == 1)


@pytest.fixture(scope="module")
def cheat(flow: dict[str, Any]) -> dict[str, Any]:
    """A worker that trains step LIED with a learning rate 1% off (and every other step honestly):
    a real trace and a signed commitment, through the library (the CLI never cheats)."""
    from pocv.artifacts import ArtifactStore
    from pocv.kernels import kernel_for, resolve_spec
    from pocv.kernels.training import Variant

    spec = resolve_spec(JobSpec.from_json(flow["job"].read_text()))
    kernel: Any = kernel_for(spec)
    liar = StepCheater(when=lambda i: i == LIED,
                       fake=lambda s, i: kernel.step_with(s, i, spec, "cpu", Variant(lr_scale=1.01)),
                       trace_dir=flow["root"] / "T-cheat", key=load_keypair(flow["root"] / "cheat.json"),
                       checkpoint_every=1, artifacts=ArtifactStore(flow["store"]))  # pocv respond recomputes nothing
    c = liar.run(spec)
    (flow["root"] / "c-cheat.json").write_text(c.to_json())
    return {"c": flow["root"] / "c-cheat.json", "trace": flow["root"] / "T-cheat"}


def test_a_cheating_worker_fails(flow: dict[str, Any], cheat: dict[str, Any], pocv: Callable[..., Out]) -> None:
    root = flow["root"]
    r = _challenge(flow, pocv, cheat["c"], root / "ch-cheat.json", "-n", str(STEPS))  # every step
    assert r.code == 0, r
    r = pocv("respond", cheat["trace"], root / "ch-cheat.json", "-k", root / "cheat.json", "-o",
             root / "r-cheat.pocv", "-q")
    assert r.code == 0, r
    r = pocv("verify", cheat["c"], root / "ch-cheat.json", root / "r-cheat.pocv", "-k", root / "verifier.json",
             "--book", flow["book"], "--artifacts", flow["store"], "--job", flow["job"], "-q")
    assert r.code == 1, r
    verdict = json.loads(r.out)
    assert verdict["bundle_signed"] is True
    assert [o["index"] for o in verdict["outcomes"] if o["reason"] != "OK"] == [LIED], verdict["outcomes"]
    assert len(r.err.strip().splitlines()) == 1 and "FAIL" in r.err, r


def test_dispute_names_the_lied_step(flow: dict[str, Any], cheat: dict[str, Any], pocv: Callable[..., Out]) -> None:
    root = flow["root"]
    r = pocv("dispute", "run", flow["c"], cheat["c"], "--trace-a", flow["trace"], "--trace-b", cheat["trace"],
             "-k", root / "referee.json", "--artifacts", flow["store"], "--verdicts", root / "verdicts", "--quiet")
    assert r.code == 0, r
    outcome = json.loads(r.out)
    assert outcome["step"] == LIED and outcome["liars"] == ["B"], outcome
    assert json.loads((root / "verdicts" / "verdict-B.json").read_text())["result"] == "FAIL"
    # the referee needs the calibration record too: without it, exit 3 naming the hash
    r = pocv("dispute", "run", flow["c"], cheat["c"], "--trace-a", flow["trace"], "--trace-b", cheat["trace"],
             "-k", root / "referee.json", "--artifacts", root / "no-store", "--quiet")
    assert r.code == 3 and flow["cal"] in r.err, r


def test_another_provider_is_refused_naming_both(flow: dict[str, Any], pocv: Callable[..., Out]) -> None:
    """A worker that ran version 0.2.0 of the plugin signs that provider into its commitment (the
    run records its installed provider: 0.1.0 in c.json); this verifier, with 0.1.0, refuses with
    exit 3 naming both, and writes nothing."""
    from pocv.records import Commitment
    from pocv.store import load_commitment

    root = flow["root"]
    honest = load_commitment(flow["c"])
    assert honest.provider == "pocv-plugin-test==0.1.0"
    other = Commitment.create(spec=honest.spec, root=honest.root, key=load_keypair(root / "worker.json"),
                              fingerprint=honest.fingerprint, environment=honest.environment,
                              provider="pocv-plugin-test==0.2.0")
    (root / "c-v2.json").write_text(other.to_json())
    got = _challenge(flow, pocv, root / "c-v2.json", root / "ch-v2.json")
    assert got.code == 3, got
    assert "pocv-plugin-test==0.2.0" in got.err and "pocv-plugin-test==0.1.0" in got.err, got
    assert len(got.err.strip().splitlines()) == 1 and not (root / "ch-v2.json").exists()
    got = pocv("verify", root / "c-v2.json", root / "ch.json", root / "r.pocv", "-k", root / "verifier.json",
               "--book", flow["book"], "--artifacts", flow["store"], "-q")
    assert got.code == 3 and "pocv-plugin-test==0.2.0" in got.err and got.out == "", got


def test_a_missing_or_altered_artifact_is_exit_3_naming_its_hash(flow: dict[str, Any], pocv: Callable[..., Out],
                                                                 tmp_path: Path) -> None:
    root, cal = flow["root"], flow["cal"]
    r = _challenge(flow, pocv, flow["c"], tmp_path / "ch.json", "--artifacts", tmp_path / "empty")
    assert r.code == 3 and cal in r.err and "not in the artifact store" in r.err, r
    altered = tmp_path / "altered"
    shutil.copytree(flow["store"], altered)
    stored = altered / "blake3" / cal.removeprefix("blake3:")
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes().replace(b'"tau":{', b'"tau":{"param":1e9,"x":', 1))
    r = pocv("verify", flow["c"], root / "ch.json", root / "r.pocv", "-k", root / "verifier.json",
             "--book", flow["book"], "--artifacts", altered, "-q")
    assert r.code == 3 and cal in r.err and "altered" in r.err and r.out == "", r
    r = pocv("run", flow["job"], "--trace", tmp_path / "T", "-k", root / "worker.json", "--artifacts", altered, "-q")
    assert r.code == 3 and cal in r.err and not (tmp_path / "T" / "commitment.json").exists(), r
    r = pocv("artifact", "verify", "--artifacts", altered)
    assert r.code == 3 and r.out.split() == ["altered", cal] and cal in r.err, r


def test_a_bad_param_names_the_parameter_its_type_and_the_value(flow: dict[str, Any], pocv: Callable[..., Out]) -> None:
    for item, want in (("lr=fast", "'lr' must be a float in 0..10, got 'fast'"),
                       ("width=2", "'width' must be an integer in 4..256, got 2"),
                       ("optimizer=adam", "'optimizer' must be one of ['sgd', 'adamw'], got 'adam'"),
                       ("calibration=abc", "'calibration' (calibration record: pocv calibrate KERNEL --add) must be an artifact reference"),
                       ("depth=3", "has no parameter 'depth'")):
        r = pocv("job", "plugin-mlp", "--steps", "4", "--param", item)
        assert r.code == 2 and want in r.err and r.out == "", (item, r)
