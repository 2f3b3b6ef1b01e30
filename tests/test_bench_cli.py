"""`pocv bench`: help, and `--report-only` on synthetic results (no benchmark runs here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pocv.cli import main
from pocv.cli._bench import bench_dir


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True

CORE = {
    "machine": {"cpu": "Test CPU", "cores": 2, "torch_threads": 2, "python": "3.11", "torch": "2.x", "gpu": None,
                "when": "2026-01-01T00:00:00Z"},
    "overhead/gemm-int8": {"params": {"n": 64}, "steps": 10, "bare_s": 1.0, "proved_s": 1.02, "ratio": 1.02},
    "verifier_over_prover/gemm-int8": {"params": {"n": 64}, "steps": 1000, "k": 66, "prover_s": 10.0,
                                       "verifier_s": 0.9, "ratio": 0.09, "bundle_bytes": 1000},
}


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--report-only" in out and "--suite" in out


def test_the_worker_suite_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16: the worker's whole cost (run + commit + respond) is a suite of its own."""
    import pocv.cli._bench as bc

    assert bc.SUITES["worker"] == ("test_bench_worker.py", ("--benchmark-only",))
    assert main(["bench", "--help"]) == 0
    assert "worker" in capsys.readouterr().out


def test_bench_dir_found() -> None:
    d = bench_dir()
    assert d is not None and (d / "report.py").is_file()


def test_report_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "core.json").write_text(json.dumps(CORE))
    (tmp_path / "broken.json").write_text('{"machine": ')  # a partial write: skipped with a note
    (tmp_path / "kernels.json").write_text(json.dumps({"x": {"ratio": float("nan"), "target_max": 1}}))
    (tmp_path / "other.json").write_text(json.dumps({"y": {"ratio": 3, "target_min": 2}}))
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    report = tmp_path / "REPORT.md"
    assert out.out.strip() == str(report)
    text = report.read_text()
    assert "Test CPU, 2 cores" in text
    assert "| 1.02 | <= 1.05 | met |" in text, text
    assert "| 0.09 | 0.066 | <= 0.08 | **missed** |" in text
    assert "`broken.json`: cannot be read as JSON" in text
    assert "the `kernels` layout was not recognised" in text  # partial: shown generically, with a note
    assert "other (generic)" in text and "| y | 3 | >= 2 | met |" in text
    if _have_matplotlib():  # in the bench extra; without it the report says so and has no plots
        assert "![core: report-core-ratios](report-core-ratios.png)" in text
        assert (tmp_path / "report-core-ratios.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in text
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_report_only_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "core.json").write_text(json.dumps(CORE))
    assert main(["bench", "--report-only", "--out", str(tmp_path), "--output", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["suites"] == []
    assert summary["met"] == 1 and summary["missed"] == 1
    assert summary["report"] == str(tmp_path / "REPORT.md")


def test_missing_bench_dir(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import pocv.cli._bench as bc

    monkeypatch.setattr(bc, "bench_dir", lambda: None)
    assert main(["bench", "--report-only"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bench/ not found" in err


def _stand_in_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suite: str, source: str) -> Path:
    """A bench/ of the real report.py, an empty conftest and one suite file, in place of the real one."""
    import shutil

    import pocv.cli._bench as bc

    real = bench_dir()
    assert real is not None
    fake = tmp_path / "bench"
    fake.mkdir()
    shutil.copy(real / "report.py", fake / "report.py")
    (fake / "conftest.py").write_text("")
    (fake / suite).write_text(source)
    monkeypatch.setattr(bc, "bench_dir", lambda: fake)
    return fake


def test_failing_suite_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """A stand-in bench/ whose merkle suite fails: the report is still written, the exit is 3."""
    fake = _stand_in_bench(tmp_path, monkeypatch, "test_bench_merkle.py",
                           "def test_fails(benchmark):\n    benchmark(int)\n    assert False\n")
    assert main(["bench", "--suite", "merkle", "--output", "json"]) == 3
    out = capsys.readouterr()
    summary = json.loads(out.out)  # pytest's own output went to stderr
    assert summary["ok"] is False
    assert [(r["suite"], r["status"], r["returncode"]) for r in summary["suites"]] == [("merkle", "failed", 1)]
    report = Path(summary["report"])  # a partial run: its report is in its scratch directory
    assert report.is_file() and report.parent.parent == fake / "out"
    assert not (fake / "REPORT.md").exists() and not (fake / "results").exists()  # the committed ones: untouched
    assert main(["bench", "--suite", "kernels"]) == 3  # selected by name but not present
    assert "not present" in capsys.readouterr().err


MACHINE = {"cpu": "Test CPU", "cores": 2, "torch_threads": 2, "python": "3.11", "torch": "2.x", "gpu": None,
           "commit": "abc123def456", "quick": False, "versions": {"blake3": "1.0", "torch": "2.x"},
           "when": "2026-01-01T00:00:00Z"}


def test_report_header_and_new_sections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The header names commit, machine, GPU and versions; hashing and scaling render with readings."""
    hashing = {"machine": MACHINE}
    for size, digest in ((4096, 0.5), (1 << 20, 4.0)):
        hashing[f"size/{size}"] = {"bytes": size, "gbps": {"memcpy": 10.0, "read": 20.0, "state_digest": digest,
                                                           "blake3_1thread": 5.0, "blake3_all_cores": 6.0},
                                   "digest_over_memcpy": digest / 10.0}
    scaling = {"machine": {**MACHINE, "quick": True}, "params": {"kernel": "gemm-int8", "n": 64},
               "ratio/n=100/p=0.9": {"steps": 100, "p": 0.9, "k": 22, "prover_s": 1.0, "verifier_s": 0.25,
                                     "ratio": 0.25, "floor": 0.22, "commitment_bytes": 900, "bundle_bytes": 5000,
                                     "proof_bytes": 640, "opened_states": 45, "state_bytes": 100},
               "proof/100": {"leaves": 100, "k": 66, "hashes_mean": 9.0, "hashes_max": 10, "bytes_mean": 288.0},
               "proof/1000": {"leaves": 1000, "k": 66, "hashes_mean": 90.0, "hashes_max": 99, "bytes_mean": 2880.0}}
    (tmp_path / "hashing.json").write_text(json.dumps(hashing))
    (tmp_path / "scaling.json").write_text(json.dumps(scaling))
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "| commit | abc123def456 |" in text
    assert "| GPU | none (no NVIDIA driver: CPU figures only) |" in text
    assert "blake3 1.0" in text and "quick (`--quick`) for scaling" in text
    assert "State hashing vs memory bandwidth" in text and "| 1 MiB | 10 | 20 | 4 | 5 | 6 | 0.4 |" in text
    assert "peaks at 4 GB/s (1 MiB states)" in text  # the reading is written from the figures
    assert "| 100 | 0.9 | 22 | 1 | 0.25 | 0.25 | 0.22 |" in text
    assert "288 bytes at 100 leaves, 2,880 at 1,000" in text
    assert "**quick run**" in text


def test_the_net_section_states_each_target(tmp_path: Path) -> None:
    """net.json (bench/test_bench_net.py) renders its three targets, met or missed, with the detail."""
    net = {"machine": MACHINE, "targets": {"remote_over_file_max": 1.2, "batch_efficiency_min": 0.8,
                                           "ray_overhead_ms_max": 10.0},
           "remote": {"bundle_mb": [12.6, 29.4], "rounds": 11, "ratio_median": 0.77, "ratio_min": 0.8,
                      "ratio_median_no_fsync": 1.1, "load": [[0.5, 0.6, 0.7], [0.6, 0.6, 0.7]]},
           "batch": {"cores": 2, "jobs": 100, "single_jobs_per_s": 12.0, "batch_jobs_per_s": 18.0,
                     "efficiency": 0.75, "load": [[1.0, 1.0, 1.0], [1.1, 1.0, 1.0]]},
           "ray": {"tasks": 30, "bytes": {"ray_ms_median": 20.5, "pool_ms_median": 12.0, "overhead_ms": 8.5},
                   "overhead_ms": 8.5}}
    (tmp_path / "net.json").write_text(json.dumps(net))
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "## Across machines and at scale (`net`)" in text
    assert "| remote / file verification, bundles 12.6-29.4 MB (median of 11 rounds) | 0.77 | <= 1.2 | met |" in text
    assert "| batch throughput / (2 x one job at a time), 100 jobs on LocalPool | 0.75 | >= 0.8 | **missed** |" in text
    assert "| Ray adds per task over a warm local pool | 8.5 ms | <= 10 ms | met |" in text
    assert "| Ray (bytes): ms per task / local pool ms per task | 20.5 / 12 |" in text


def test_the_llm_section_states_targets_detection_and_peers(tmp_path: Path) -> None:
    """llm.json (bench/test_bench_llm.py): the three cost targets, detection summed over the
    architectures with each peer's count, and the side-by-side table."""
    det = {"jobs": 8, "pocv_flagged": 8, "toploc_flagged": 1, "difr_flagged": 4, "pocv_worst_ratio_min": 17.0}
    llm = {"machine": MACHINE, "config": {"new_tokens": 1024, "width": 128, "layers": 4, "threads": 1},
           "costs": {"commit_overhead": 0.94, "tokens_equal_to_plain_generate": "1024/1024", "challenged_positions": 80,
                     "verify_all_challenged_over_generate": 0.2,
                     "opened_bytes_per_challenged_position_beyond_tokens": 99.6},
           "detection": {"llama": {"honest": {**det, "pocv_flagged": 0, "pocv_worst_ratio_min": 0.2}, "int8-weights": det},
                         "gpt2": {"honest": {**det, "pocv_flagged": 0}, "int8-weights": {**det, "pocv_flagged": 7}}},
           "side_by_side": {"tokens": 256, "pocv": {"checked_positions": 64}, "toploc": {"checked_positions": 256}}}
    (tmp_path / "llm.json").write_text(json.dumps(llm))
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "| worker / plain generate of the same 1024 tokens (1024/1024 equal) | 0.94 | <= 1.05 | met |" in text
    assert "| checking 80 positions in one pass / generating | 0.2 | <= 0.1 | **missed** |" in text
    assert "| int8-weights | 15/16 | 2/16 | 8/16 | 17 |" in text
    assert "| pocv flags int8-weights (share of jobs) | 0.9375 | >= 1 | **missed** |" in text
    assert "| positions checked | 64 | 256 |" in text


def test_peer_section_renders_itself(tmp_path: Path) -> None:
    """A results file <stem>.json whose bench/peer_<stem>.py exists is rendered by that module."""
    real = bench_dir()
    assert real is not None
    peers = sorted(p.stem.removeprefix("peer_") for p in real.glob("peer_*.py"))
    if not peers:
        pytest.skip("no peer suite in bench/")
    import pocv.cli._bench as bc

    module = bc._load_report_module(real)
    (tmp_path / f"{peers[0]}.json").write_text(json.dumps({"machine": MACHINE}))  # an empty run: layout not found
    report = module.generate(tmp_path)
    sec = report.sections[0]
    assert sec.suite == peers[0]
    # the peer's renderer ran (it raised on the empty file and the generic renderer took over with a note),
    # or it rendered a title of its own; either way the report was written
    assert report.path.is_file() and (sec.title != f"{peers[0]} (generic)" or sec.notes)


def test_quick_and_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--quick reaches the suites as POCV_BENCH_QUICK=1; --strict exits 1 on a missed target."""
    fake = _stand_in_bench(tmp_path, monkeypatch, "test_bench_core.py",
        "import json, os, pathlib\n"
        "def test_writes(benchmark):\n"
        "    benchmark(int)\n"
        "    out = pathlib.Path(os.environ['POCV_BENCH_OUT'])\n"
        "    out.mkdir(parents=True, exist_ok=True)\n"
        "    quick = os.environ['POCV_BENCH_QUICK'] == '1'\n"
        "    (out / 'other.json').write_text(json.dumps({'machine': {'quick': quick}, 'y': {'ratio': 3, 'target_min': 5}}))\n")
    assert main(["bench", "--suite", "core", "--quick"]) == 0  # a missed target alone is not an error
    out = capsys.readouterr()
    text = Path(out.out.strip()).read_text()  # stdout: the report's path (a scratch one: a partial run)
    assert "**quick run**" in text and "| y | 3 | >= 5 | **missed** |" in text
    assert "partial run (--quick)" in out.err
    assert main(["bench", "--suite", "core", "--strict"]) == 1
    out = capsys.readouterr()
    assert "1 target(s) missed (--strict)" in out.err
    assert "**quick run**" not in Path(out.out.strip()).read_text()
    assert not (fake / "REPORT.md").exists()


def test_every_bench_suite_collects() -> None:
    """The benchmark suites are not run by the test command, but they must import and collect
    (a peer whose library is missing skips at collection, with its reason)."""
    import subprocess
    import sys

    real = bench_dir()
    assert real is not None
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", "bench or not bench", str(real)], cwd=real.parent, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    import pocv.cli._bench as bc

    for suite, (name, _) in bc.SUITES.items():
        assert (real / name).is_file(), f"suite {suite}: {name} missing"


def test_a_suite_skipped_as_a_whole_is_not_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A peer whose library is missing skips at import (pytest exit 5): status skipped, it says what is
    missing and exits 3; the committed results and report stay as they were."""
    fake = _stand_in_bench(tmp_path, monkeypatch, "test_bench_ezkl.py",
                           "import pytest\npytest.importorskip('no_such_peer_library', reason='peer not installed')\n")
    committed = _committed(fake)
    for args in (["--suite", "ezkl"], [], ["--update-report"]):
        assert main(["bench", *args, "--output", "json"]) == 3
        out = capsys.readouterr()
        summary = json.loads(out.out)
        assert [(r["suite"], r["status"], r["returncode"]) for r in summary["suites"]] == [("ezkl", "skipped", 5)]
        assert summary["ok"] is False
        assert "could not run" in out.err and "peer not installed" in out.err
        assert _snapshot(fake) == committed, args


def _committed(fake: Path) -> dict[str, bytes]:
    """A committed report and results in a stand-in bench/; returns their bytes."""
    (fake / "results").mkdir()
    (fake / "results" / "core.json").write_text(json.dumps(CORE))
    (fake / "results" / "ezkl.json").write_text(json.dumps({"machine": MACHINE, "z": {"ratio": 1, "target_max": 2}}))
    (fake / "REPORT.md").write_text("the committed report\n")
    return _snapshot(fake)


def _snapshot(fake: Path) -> dict[str, bytes]:
    files = [fake / "REPORT.md", *sorted((fake / "results").iterdir())]
    return {str(f.relative_to(fake)): f.read_bytes() for f in files}


CORE_SUITE = ("import json, os, pathlib\n"
              "def test_writes(benchmark):\n"
              "    benchmark(int)\n"
              "    out = pathlib.Path(os.environ['POCV_BENCH_OUT'])\n"
              "    out.mkdir(parents=True, exist_ok=True)\n"
              "    (out / 'core.json').write_text(json.dumps({'machine': {'cpu': 'New CPU'}, 'y': {'ratio': 7}}))\n")


def test_partial_run_leaves_the_committed_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--suite S and --quick write to a scratch directory; --update-report merges the suites that passed
    into bench/results (the others' figures stay) and rewrites bench/REPORT.md."""
    fake = _stand_in_bench(tmp_path, monkeypatch, "test_bench_core.py", CORE_SUITE)
    committed = _committed(fake)
    for args in (["--suite", "core"], ["--quick"], ["--suite", "core", "--quick"]):
        assert main(["bench", *args]) == 0, args
        out = capsys.readouterr()
        assert _snapshot(fake) == committed, args
        scratch = Path(out.out.strip())
        assert scratch.parent.parent == fake / "out" and "New CPU" in scratch.read_text()
    assert main(["bench", "--suite", "core", "--update-report"]) == 0
    assert Path(capsys.readouterr().out.strip()) == fake / "REPORT.md"
    assert json.loads((fake / "results" / "core.json").read_text())["y"] == {"ratio": 7}
    assert (fake / "results" / "ezkl.json").read_bytes() == committed["results/ezkl.json"]  # kept
    assert "New CPU" in (fake / "REPORT.md").read_text()


def test_complete_run_updates_the_committed_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every suite present ran, full size, none skipped: the committed report is rewritten."""
    fake = _stand_in_bench(tmp_path, monkeypatch, "test_bench_core.py", CORE_SUITE)
    _committed(fake)
    assert main(["bench"]) == 0
    assert Path(capsys.readouterr().out.strip()) == fake / "REPORT.md"
    assert "New CPU" in (fake / "REPORT.md").read_text()


def test_out_dir_keeps_everything_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    fake = _stand_in_bench(tmp_path, monkeypatch, "test_bench_core.py", CORE_SUITE)
    committed = _committed(fake)
    out = tmp_path / "elsewhere"
    assert main(["bench", "--out", str(out)]) == 0
    assert Path(capsys.readouterr().out.strip()) == out / "REPORT.md"
    assert (out / "core.json").is_file() and _snapshot(fake) == committed
