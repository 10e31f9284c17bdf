"""serve/config.yaml is a valid Ray Serve config whose app builds from its own args."""

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from mlit.serving import app as serving

CONFIG = Path(__file__).parent.parent / "serve" / "config.yaml"


def test_the_serve_config_validates_and_binds_to_loopback():
    config = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.host == "127.0.0.1"
    [app] = schema.applications
    assert app.import_path == "mlit.serving.app:app_builder"
    assert {d.name for d in app.deployments} <= {"ModelServer", "Gateway"}


def test_the_app_builder_builds_the_app_from_the_config_args(tiny_base, monkeypatch):
    args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]
    args["models"] = {"tiny": str(tiny_base)}
    monkeypatch.setenv("MLIT_TEST_SERVE_KEY", "k")
    args["api_key_env"] = "MLIT_TEST_SERVE_KEY"
    app = serving.app_builder(args)
    assert type(app).__name__ == "Application"


def test_a_cpu_replica_takes_its_nodes_cores_unless_told(monkeypatch):
    import dataclasses
    import os

    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # started on this machine
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    cfg = serving.ServeConfig(models={"a": "x"})
    assert serving.replica_cpus(cfg) == 8  # and so 8 torch threads in its engine
    assert serving.replica_cpus(dataclasses.replace(cfg, replicas=3)) == 2
    assert serving.replica_cpus(dataclasses.replace(cfg, num_gpus=1)) == 1
    assert serving.replica_cpus(dataclasses.replace(cfg, num_cpus=0.5)) == 0.5
