"""The shipped cluster configs (cluster/): Ray's own `ray up` validation, KubeRay manifest structure,
paths that exist, a comment on every field, and cluster/local_head.sh's syntax
(a real start, job submission and stop: test_job_submit.py)."""
import re
import subprocess
from pathlib import Path

import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
AWS = CLUSTER / "aws-gpu.yaml"
KUBE = {"RayCluster": CLUSTER / "kuberay" / "raycluster.yaml", "RayJob": CLUSTER / "kuberay" / "rayjob.yaml"}
YAMLS = [AWS, *KUBE.values()]
RAY_MM = ".".join(ray.__version__.split(".")[:2])                  # e.g. "2.60"
KEY = re.compile(r"^\s*(?:-\s+)?[\w./\"'-]+\s*:(?:\s|$)")          # a line that sets a mapping key


def load(p):
    return yaml.safe_load(p.read_text())


# ---- `ray up` config: Ray's own schema + semantic checks, offline ----------------------------------

def test_aws_config_passes_ray_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = prepare_config(load(AWS))   # merges ray/autoscaler/aws/defaults.yaml; no cloud call (bootstrap is separate)
    validate_config(cfg)              # jsonschema against ray/autoscaler/ray-schema.json + head/min-worker checks
    assert cfg["provider"]["type"] == "aws"
    gpu_types = [t for t, n in cfg["available_node_types"].items() if t != cfg["head_node_type"]]
    assert gpu_types and all(cfg["available_node_types"][t]["node_config"]["InstanceType"].split(".")[0] in
                             {"g5", "g6", "p4d", "p5"} for t in gpu_types)


def test_ray_validation_is_not_a_no_op():
    from ray.autoscaler._private.util import prepare_config, validate_config
    bad = dict(load(AWS), no_such_field=1)
    with pytest.raises(Exception, match="no_such_field"):
        validate_config(prepare_config(bad))


def test_aws_config_installs_this_repo_with_gpu_extra():
    cfg = load(AWS)
    src = cfg["file_mounts"]["/home/ray/braintune_dist"]
    assert (REPO / src / "pyproject.toml").is_file()                # "." = repo root (`ray up` runs there)
    assert 'gpu = ["cupy' in (REPO / "pyproject.toml").read_text()
    assert any('pip install' in c and '-e ".[gpu]"' in c and "/home/ray/braintune_dist" in c
               for c in cfg["setup_commands"])
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-py311")
    assert not any("RAY_AUTH_MODE=disabled" in o for o in cfg["docker"]["run_options"])


# ---- KubeRay manifests: structure ---------------------------------------------------------------

def _check_cluster_spec(spec, where):
    assert spec["rayVersion"].startswith(RAY_MM + "."), f"{where}: rayVersion != installed Ray {RAY_MM}"
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth off"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    groups = [("head", head, False)] + [(g["groupName"], g, True) for g in spec["workerGroupSpecs"]]
    assert len(groups) >= 2, f"{where}: no worker group"
    for name, g, is_worker in groups:
        pod = g["template"]["spec"]
        c = pod["containers"][0]
        assert c["name"] and c["image"], f"{where}/{name}: container without name/image"
        assert re.search(rf"ray{re.escape(ray.__version__)}", c["image"]), f"{where}/{name}: image not for Ray {ray.__version__}"
        for part in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][part]), f"{where}/{name}: {part} lacks cpu/memory"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/data", "/shared"} <= mounts, f"{where}/{name}: shards/checkpoint volume not mounted"
        vols = {v["name"] for v in pod["volumes"]}
        assert {m["name"] for m in c["volumeMounts"]} <= vols, f"{where}/{name}: mount of an undeclared volume"
        if is_worker:
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1, f"{where}/{name}: no GPU limit"
            assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"]
            assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        else:
            assert {p["name"] for p in c["ports"]} >= {"gcs-server", "dashboard"}


def test_kuberay_raycluster_structure():
    doc = load(KUBE["RayCluster"])
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster") and doc["metadata"]["name"]
    _check_cluster_spec(doc["spec"], "RayCluster")


def test_kuberay_rayjob_structure_and_entrypoint():
    doc = load(KUBE["RayJob"])
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob") and doc["metadata"]["name"]
    spec = doc["spec"]
    assert "python jobs/multi_brain.py --config jobs/configs/multi_brain/paper_hubert.yaml" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    _check_cluster_spec(spec["rayClusterSpec"], "RayJob")
    # the in-image code path the entrypoint cd's into is where cluster/Dockerfile installs the repo
    assert "WORKDIR /home/ray/braintune_dist" in (CLUSTER / "Dockerfile").read_text()
    assert "cd /home/ray/braintune_dist" in spec["entrypoint"]


def test_kuberay_worker_gpus_cover_the_preset():
    preset = load(REPO / "jobs/configs/multi_brain/paper_hubert.yaml")
    g = load(KUBE["RayJob"])["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    lim = g["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert g["maxReplicas"] * int(lim["nvidia.com/gpu"]) >= preset["fit"]["ray"]["num_workers"]
    assert int(lim["cpu"]) >= int(lim["nvidia.com/gpu"]) * preset["fit"]["ray"]["cpus_per_worker"]


# ---- everything the files name exists; every field is commented --------------------------------

@pytest.mark.parametrize("path", [*YAMLS, CLUSTER / "local_head.sh", CLUSTER / "Dockerfile"], ids=lambda p: p.name)
def test_named_repo_paths_exist(path):
    text = path.read_text()
    named = set(re.findall(r"\b((?:jobs|cluster|braintune_dist|kernels)/[\w./-]+\.(?:py|ya?ml|sh))\b", text))
    named |= {m for m in re.findall(r"^COPY \S+ ([^\n]+?) \S+$", text, re.M) for m in m.split()}
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"{path.name} names missing paths: {missing}"


def test_dockerfile_base_matches_installed_ray():
    assert f"FROM rayproject/ray:{ray.__version__}-py311-gpu" in (CLUSTER / "Dockerfile").read_text()


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_field_is_commented(path):
    lines = path.read_text().splitlines()
    bare, prev = [], ""
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if KEY.match(line) and "#" not in line and not prev.startswith("#"):
            bare.append(f"{i}: {s}")
        prev = s
    assert not bare, f"{path.name}: fields without a comment:\n" + "\n".join(bare)


# ---- cluster/local_head.sh ----------------------------------------------------------------------

def test_local_head_script_syntax():
    sh = CLUSTER / "local_head.sh"
    subprocess.run(["bash", "-n", str(sh)], check=True)
    text = sh.read_text()
    assert "set -euo pipefail" in text and ".venv/bin/ray" in text and "127.0.0.1" in text
    assert not re.search(r"^[^#]*\bray\"? stop\b", text, re.M)       # never `ray stop` (kills other instances)
    assert "RAY_AUTH_MODE=disabled" not in text
