"""The package's layering: no import cycle (imports inside functions count), no job module importing another,
and every job's ``--help`` without torch (the configs live in modules that do not import it)."""
import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braintune_dist.config import JOB_CONFIGS

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "braintune_dist").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports anywhere in its source (top level or inside functions)."""
    mods = _modules()

    def owner(name: str) -> str | None:             # 'a.b.C' (a name in module a.b) → 'a.b'
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[m] |= {owner(t) for t in targets if t.startswith("braintune_dist")} - {None, m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_counting_imports_inside_functions():
    graph = import_graph()
    assert cycles(graph) == []
    # the check sees a cycle when there is one
    assert cycles({**graph, "braintune_dist.io": graph["braintune_dist.io"] | {"braintune_dist.config"}}) != []


def test_no_job_module_imports_another():
    jobs = {m.rpartition(":")[0] for m in JOB_CONFIGS.values()}
    on_disk = {m for m in _modules() if m.startswith("braintune_dist.jobs.")}
    assert jobs == on_disk, "every module in braintune_dist/jobs is a job (shared code lives in experiment/)"
    for job, imports in import_graph().items():
        if job in jobs:
            assert not imports & (jobs - {job}), f"{job} imports {sorted(imports & jobs)}"


@pytest.mark.parametrize("job", sorted(JOB_CONFIGS))
def test_help_without_torch(job):
    """``jobs/<job>.py --help`` prints every field without importing torch (nor Ray); the time is printed."""
    probe = (f"import runpy, sys, time; sys.argv = ['{job}', '--help']; t = time.perf_counter()\n"
             f"try:\n    runpy.run_path('jobs/{job}.py', run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print('torch' in sys.modules, 'ray' in sys.modules, code, round(time.perf_counter() - t, 2), "
             "file=sys.stderr)")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    torch_loaded, ray_loaded, code, seconds = proc.stderr.strip().splitlines()[-1].split()
    print(f"{job} --help: {seconds} s in the interpreter, {time.perf_counter() - t:.2f} s with its start")
    assert code in ("0", "None") and "--config" in proc.stdout, proc.stderr[-2000:]
    assert (torch_loaded, ray_loaded) == ("False", "False")
