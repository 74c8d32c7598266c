"""The CUDA sources of kernels/ ship as package data: in the wheel, and loadable from an install outside
the checkout (a fresh venv, PYTHONPATH unset), the way ridge/kernels.py loads them."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from braintune_dist.ridge.kernels import kernel_source

REPO = Path(__file__).resolve().parents[1]
SOURCES = {p.name: p.read_text(encoding="utf-8") for p in sorted((REPO / "kernels").glob("*.cu"))}

# Standard library only: the fresh venv has none of the project's dependencies.
RESOURCES_PROBE = """
import importlib.resources, json
folder = importlib.resources.files("braintune_dist.kernels")
print(json.dumps({p.name: p.read_text(encoding="utf-8") for p in folder.iterdir() if p.name.endswith(".cu")}))
"""
# Needs numpy and co. (ridge/kernels.py imports them), reached through a .pth file.
MODULE_PROBE = """
import json, sys, braintune_dist, braintune_dist.ridge.kernels as k
print(json.dumps({"package": braintune_dist.__file__, "read": str(k._kernel_dir() / (sys.argv[1] + ".cu")),
                  "sources": {n + ".cu": k.kernel_source(n) for n in sys.argv[1:]}}))
"""


def _run(python, code, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run([str(python), "-c", code, *args], cwd=cwd, env={**env, "PYTHONNOUSERSITE": "1"},
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.splitlines()[-1])


def _venv(path):
    """A venv without pip or the project's dependencies; returns its python and site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    return python, Path(purelib)


def _install(python, wheel):
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True)


def _share_dependencies(purelib):
    """Appends the site-packages folders on this interpreter's path to the venv's; a folder named in a
    .pth file has its own .pth files skipped, so an editable braintune_dist there is not installed."""
    dirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (purelib / "deps.pth").write_text("".join(f"{d}\n" for d in dirs))


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A copy of the project (building in the checkout would leave build/ behind, and stale files in it
    would reach the wheel) and a folder for wheels."""
    tmp = tmp_path_factory.mktemp("package_data")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for d in ("braintune_dist", "kernels"):
        shutil.copytree(REPO / d, tmp / "src" / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / f, tmp / "src" / f)
    return tmp


@pytest.fixture(scope="module")
def wheel(build):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(build / "dist"), str(build / "src")], check=True)
    (whl,) = (build / "dist").glob("braintune_dist-*.whl")
    return whl


def test_checkout_loads_sources():
    assert SOURCES, "kernels/ holds no .cu file"
    for name, text in SOURCES.items():
        assert kernel_source(name.removesuffix(".cu")) == text
    with pytest.raises(FileNotFoundError, match="no_such_kernel.cu"):
        kernel_source("no_such_kernel")


def test_wheel_lists_sources_and_modules(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"braintune_dist/kernels/{n}" for n in SOURCES} <= names
    # the package list in pyproject.toml is explicit: a subpackage missing from it misses the wheel
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "braintune_dist").rglob("*.py")}
    assert not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"


def test_wheel_install_loads_sources(wheel, tmp_path):
    python, purelib = _venv(tmp_path / "venv")
    _install(python, wheel)
    assert _run(python, RESOURCES_PROBE, cwd=tmp_path) == SOURCES
    _share_dependencies(purelib)
    got = _run(python, MODULE_PROBE, *(n.removesuffix(".cu") for n in SOURCES), cwd=tmp_path)
    assert Path(got["package"]).is_relative_to(tmp_path / "venv"), got["package"]
    assert Path(got["read"]).parent == purelib / "braintune_dist" / "kernels", got["read"]   # not a checkout
    assert got["sources"] == SOURCES


def test_editable_install_loads_sources(build, tmp_path):
    """setuptools' default editable install maps braintune_dist.kernels but cannot import it (a namespace
    package outside braintune_dist/): kernel_source reads the project's kernels/ in place."""
    out = build / "editable"
    out.mkdir()
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_editable({str(out)!r})"],
                   cwd=build / "src", check=True)
    (whl,) = out.glob("braintune_dist-*.whl")
    python, purelib = _venv(tmp_path / "venv")
    _install(python, whl)
    _share_dependencies(purelib)
    got = _run(python, MODULE_PROBE, *(n.removesuffix(".cu") for n in SOURCES), cwd=tmp_path)
    assert Path(got["package"]).is_relative_to(build / "src"), got["package"]
    assert got["sources"] == SOURCES
