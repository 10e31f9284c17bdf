"""ray_cluster.yaml and every variant in its comments pass Ray's own schema check."""

import copy
import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).parent.parent / "ray_cluster.yaml"


def variants() -> dict[str, str]:
    text = CONFIG.read_text()
    found = re.findall(r"# --- variant: (\w+) -+\n(.*?)# --- end variant ---", text, re.S)
    return {name: body for name, body in found}


def _uncomment(body: str) -> tuple[dict, list[str]]:
    lines = [line[2:] if line.startswith("# ") else line[1:] for line in body.splitlines()]
    remove = []
    keep = []
    for line in lines:
        if line.startswith("remove:"):
            remove = [k.strip() for k in line.split(":", 1)[1].split(",")]
        elif re.match(r"^[a-zA-Z_]+:|^  |^- |^\s*$", line):
            keep.append(line)
    return yaml.safe_load("\n".join(keep)) or {}, remove


def _check(config: dict) -> None:
    validate_config(prepare_config(copy.deepcopy(config)))


def test_the_default_cluster_passes_rays_schema():
    config = yaml.safe_load(CONFIG.read_text())
    _check(config)
    assert config["provider"]["type"] == "aws"
    workers = config["available_node_types"]["gpu_8x"]
    assert workers["min_workers"] == 0 and workers["max_workers"] >= 1  # autoscaling GPU nodes
    assert any("constraints.txt" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", ["gcp", "local"])
def test_every_variant_in_the_comments_passes(name):
    base = yaml.safe_load(CONFIG.read_text())
    override, remove = _uncomment(variants()[name])
    config = {k: v for k, v in base.items() if k not in remove}
    config.update(override)
    _check(config)
    assert config["provider"]["type"] == name


def test_kuberay_variant_is_a_raycluster_resource():
    override, _ = _uncomment(variants()["kuberay"])
    assert override["kind"] == "RayCluster" and override["apiVersion"].startswith("ray.io/")
    groups = override["spec"]["workerGroupSpecs"]
    assert groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    # KubeRay configs pass through prepare_config untouched (KubeRay generates the autoscaler's).
    assert prepare_config({"provider": {"type": "kuberay"}}) == {"provider": {"type": "kuberay"}}


def test_invalid_variants_are_rejected():
    base = yaml.safe_load(CONFIG.read_text())
    misspelled = {**copy.deepcopy(base), "max_wrokers": 4}
    with pytest.raises(Exception, match="max_wrokers"):
        _check(misspelled)
    wrong_type = copy.deepcopy(base)
    wrong_type["available_node_types"]["gpu_8x"]["max_workers"] = "four"
    with pytest.raises(Exception, match="four"):
        _check(wrong_type)


def test_the_variants_are_all_found():
    assert set(variants()) == {"gcp", "local", "kuberay"}
