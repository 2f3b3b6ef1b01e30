"""The package's structure (docs/architecture.md §2, §4, §5): layers, no import cycles, light imports.

The import graph is read from the source with ``ast`` (module-level imports, outside
``if TYPE_CHECKING:``), so a cycle or a layer violation fails here even when no test happens
to import the modules in the order that would break.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: import name prefix -> source folder (pyproject.toml's package-dir)
PACKAGE_DIRS = {"pocv": ROOT / "verifier", "pocv.kernels": ROOT / "kernels"}
HEAVY = ("torch", "numba", "solders", "solana")

#: layers, lowest first; a module may import only its own layer and those below it
LAYERS: list[tuple[str, set[str]]] = [
    ("wire", {"pocv", "pocv.errors", "pocv.limits", "pocv.keys", "pocv._fields"}),
    ("core", {"pocv.encoding", "pocv.merkle", "pocv.challenge", "pocv.jobs", "pocv.records", "pocv.bundle"}),
    ("kernels", {"pocv.device", "pocv.kernels"}),
    ("verification", {"pocv.check", "pocv.dispute"}),
    ("io", {"pocv.store", "pocv._commitproc", "pocv.trace", "pocv.prover", "pocv.artifacts", "pocv._http", "pocv.serve", "pocv.client", "pocv.batch",
            "pocv.ray_backend"}),
    ("market", {"pocv.market"}),
    ("apps", {"pocv.demo", "pocv.testing", "pocv.cli", "pocv.__main__", "pocv.market.demo"}),
]


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for prefix, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "pocv" and parts[:1] == ["kernels"]:
                continue  # pragma: no cover - kernels live in their own folder
            out[name] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    best, depth = -1, -1
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            if (module == m or module.startswith(m + ".")) and len(m) > depth:
                best, depth = i, len(m)
    if best < 0:
        raise AssertionError(f"module {module} is in no layer of tests/test_architecture.py (and docs/architecture.md)")
    return best


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    # "from pocv.market import memo" imports the submodule pocv.market.memo; like any submodule
    # import it needs its parent package, an edge every submodule has and the graph leaves out
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return subs if len(subs) == len(node.names) else [base, *subs]


def _imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(pocv modules imported at module level, [(line, text)] of function-local imports)."""
    path = MODULES[module]
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    top: set[str] = set()
    local: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                if in_function:
                    local.append((child.lineno, lines[child.lineno - 1]))
                else:
                    top.update(n for n in _resolve(module, child) if n.split(".")[0] == "pocv")
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(tree, False)
    return {m for m in top if m in MODULES and m != module}, local


GRAPH = {m: _imports(m)[0] for m in MODULES}


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = [*stack[stack.index(n):], n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                dfs(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            dfs(m)


def test_layers_import_only_downwards() -> None:
    bad = [f"{m} ({LAYERS[_layer(m)][0]}) imports {n} ({LAYERS[_layer(n)][0]})"
           for m, deps in sorted(GRAPH.items()) for n in sorted(deps)
           if _layer(n) > _layer(m) and n != "pocv"]
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_the_market_knows_no_kernels() -> None:
    bad = [f"{m} imports {n}" for m, deps in GRAPH.items() if _layer(m) == 5 for n in deps
           if n.startswith(("pocv.kernels", "pocv.check", "pocv.prover", "pocv.encoding"))]
    assert not bad, bad


def test_every_function_local_import_says_why() -> None:
    bare = [f"{MODULES[m].relative_to(ROOT)}:{line}: {text.strip()}"
            for m in sorted(MODULES) for line, text in _imports(m)[1] if "#" not in text]
    assert not bare, "function-local imports need a one-line '# reason':\n" + "\n".join(bare)


def test_the_graph_sees_every_module() -> None:
    # guards the test itself: a broken walk would make the cycle test pass vacuously
    assert {"pocv", "pocv.records", "pocv.check", "pocv.kernels", "pocv.kernels.base"} <= set(MODULES)
    assert "pocv.records" in GRAPH["pocv.check"] and "pocv.errors" in GRAPH["pocv.records"]


def _fresh(code: str) -> dict[str, list[str]]:
    probe = ("import sys, json\n" + code + "\nprint(json.dumps({'heavy': sorted({m.split('.')[0] for m in sys.modules} & "
             f"{set(HEAVY)!r}), 'kernels': sorted(m for m in sys.modules if m.startswith('pocv.kernels.'))}}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_import_pocv_loads_nothing_heavy() -> None:
    got = _fresh("import pocv; dir(pocv)")
    assert got == {"heavy": [], "kernels": []}


def test_records_parse_light(tmp_path: Path) -> None:
    from pocv import JobSpec
    from pocv.kernels import resolve_spec
    from pocv.keys import Keypair
    from pocv.records import Challenge, Commitment, Outcome, Verdict

    key = Keypair.from_seed(bytes([4]) * 32)
    spec = resolve_spec(JobSpec(kernel="gemm-int8", steps=10, seed=1, params={"n": 64}))
    c = Commitment.create(spec=spec, root=bytes(32), key=key)
    ch = Challenge(job_id=spec.job_id, root=bytes(32), steps=10, beacon=bytes(32), indices=(1, 5),
                   confidence=0.5, cheat_fraction=0.1).signed(key)
    v = Verdict.create(job_id=spec.job_id, root=bytes(32), beacon=bytes(32), kernel=spec.kernel_ref,
                       outcomes=[Outcome(1, "OK"), Outcome(5, "MISMATCH", "x")], cheat_fraction=0.1, key=key)
    files = {"spec": spec.to_json(), "commitment": c.to_json(), "challenge": ch.to_json(), "verdict": v.to_json()}
    for name, text in files.items():
        (tmp_path / f"{name}.json").write_text(text)
    code = (f"from pathlib import Path\nfrom pocv import JobSpec, Commitment, Challenge, Verdict\nd = Path({str(tmp_path)!r})\n"
            "JobSpec.from_json((d / 'spec.json').read_text()).job_id\n"
            "Commitment.from_json((d / 'commitment.json').read_text())\n"
            "Challenge.from_json((d / 'challenge.json').read_text())\n"
            "Verdict.from_json((d / 'verdict.json').read_text())")
    assert _fresh(code) == {"heavy": [], "kernels": []}


@pytest.mark.parametrize("name", ["Verifier", "Prover", "Response", "resolve_spec", "load_keypair", "Reason"])
def test_public_names_resolve_lazily(name: str) -> None:
    import pocv

    assert name in pocv.__all__
    assert getattr(pocv, name) is not None
