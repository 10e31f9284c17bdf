"""ray_cluster.yaml and every variant in its comments pass Ray's own schema check."""

import copy
from pathlib import Path

import pytest
import yaml
from helpers import CLUSTER_CONFIG, check_cluster_config, cluster_variants, uncomment_variant
from ray.autoscaler._private.util import prepare_config


def test_the_default_cluster_passes_rays_schema():
    config = yaml.safe_load(CLUSTER_CONFIG.read_text())
    check_cluster_config(config)
    assert config["provider"]["type"] == "aws"
    workers = config["available_node_types"]["gpu_8x"]
    assert workers["min_workers"] == 0 and workers["max_workers"] >= 1  # autoscaling GPU nodes
    assert any("constraints.txt" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", ["gcp", "local"])
def test_every_variant_in_the_comments_passes(name):
    base = yaml.safe_load(CLUSTER_CONFIG.read_text())
    override, remove = uncomment_variant(cluster_variants()[name])
    config = {k: v for k, v in base.items() if k not in remove}
    config.update(override)
    check_cluster_config(config)
    assert config["provider"]["type"] == name


def test_kuberay_variant_is_a_raycluster_resource():
    override, _ = uncomment_variant(cluster_variants()["kuberay"])
    assert override["kind"] == "RayCluster" and override["apiVersion"].startswith("ray.io/")
    groups = override["spec"]["workerGroupSpecs"]
    assert groups[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    # KubeRay configs pass through prepare_config untouched (KubeRay generates the autoscaler's).
    assert prepare_config({"provider": {"type": "kuberay"}}) == {"provider": {"type": "kuberay"}}


def test_invalid_variants_are_rejected():
    base = yaml.safe_load(CLUSTER_CONFIG.read_text())
    misspelled = {**copy.deepcopy(base), "max_wrokers": 4}
    with pytest.raises(Exception, match="max_wrokers"):
        check_cluster_config(misspelled)
    wrong_type = copy.deepcopy(base)
    wrong_type["available_node_types"]["gpu_8x"]["max_workers"] = "four"
    with pytest.raises(Exception, match="four"):
        check_cluster_config(wrong_type)


def test_the_variants_are_all_found():
    assert set(cluster_variants()) == {"gcp", "local", "kuberay"}


def test_a_job_ships_every_module_of_the_package_and_no_run_folder():
    """`ray job submit --working-dir .` leaves out what .rayignore names, with Ray's own matcher:
    an unanchored `results/` once left `mlit/results/` out of every job."""
    from ray._private.runtime_env.packaging import _get_ignore_file

    root = Path(__file__).resolve().parents[2]
    ignored = _get_ignore_file(root, ".rayignore")
    shipped = [p for p in (root / "mlit").rglob("*.py") if not ignored(p)]
    assert len(shipped) == len(list((root / "mlit").rglob("*.py")))
    for left_out in ("results/language_count/run.json", "tests/conftest.py", "benchmarks/host.py"):
        assert ignored(root / left_out), left_out
