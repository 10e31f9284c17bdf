"""serve/config.yaml is a valid Ray Serve config whose app builds from its own args."""

from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from mlit.serving import app as serving

CONFIG = Path(__file__).parents[2] / "serve" / "config.yaml"


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


def _python(code: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_ingress_environment_fits_haproxy_to_the_file_limit_and_keeps_what_is_set():
    code = (
        "import os, resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))\n"
        "from mlit.plumbing import ingress\n"
        "ingress.install()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], *(os.environ[k] for k in (\n"
        "    'RAY_SERVE_HAPROXY_MAXCONN', 'RAY_SERVE_ENABLE_HA_PROXY',\n"
        "    'RAY_SERVE_HAPROXY_STATS_PORT', 'RAY_SERVE_HAPROXY_METRICS_PORT')))\n"
    )
    soft, maxconn, haproxy, stats, metrics = _python(code).split()
    assert soft == "4096" and int(maxconn) == int((4096 - 200) / 2.5) and haproxy == "1"
    assert stats != metrics and "8404" not in (stats, metrics)  # a second Ray finds its own
    kept = _python(code, RAY_SERVE_ENABLE_HA_PROXY="0").split()
    assert kept[2] == "0"


def test_the_driver_reads_the_ingress_environment_when_it_imports_the_app():
    """Serve reads its environment once, as it is imported: the handles the driver makes take
    their transport from that reading, so it has to come after the environment is set."""
    code = (
        "import mlit.serving.app\n"
        "from ray.serve._private import constants\n"
        "print(constants.RAY_SERVE_ENABLE_HA_PROXY, constants.RAY_SERVE_USE_GRPC_BY_DEFAULT)\n"
    )
    assert _python(code) == "True True"


def _deployments(app) -> dict:
    """Deployment name -> its options, from a built app: the ingress and what it is bound to."""
    ingress = app._bound_deployment
    found = {ingress.name: ingress}
    for arg in ingress.init_args[0]:
        if type(arg).__name__ == "Application":
            found[arg._bound_deployment.name] = arg._bound_deployment
    return found


def test_one_hf_replica_runs_in_the_gateway_and_more_are_deployments(tiny_base, monkeypatch):
    """One model server with nothing to route to runs in the gateway's replica, with the
    resources it would have had; several shards or replicas, or autoscaling, are deployments."""
    import os

    import ray

    from mlit.serving import shards

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    models = {"a": str(tiny_base), "b": str(tiny_base)}
    one = _deployments(serving.build_app(serving.ServeConfig(models=models)))
    assert list(one) == ["Gateway"]
    assert one["Gateway"].ray_actor_options["num_cpus"] == 2
    [spec] = one["Gateway"].init_args[0]
    assert spec == shards.InProcess(models, 4, 64, "hf")
    for split in ({"replicas": 2}, {"shards": 2}, {"autoscaling": {"max_replicas": 3}}):
        app = serving.build_app(serving.ServeConfig(models=models, **split))
        names = sorted(_deployments(app))
        assert names[0] == "Gateway" and names[1].startswith("ModelServer"), (split, names)
        assert _deployments(app)["Gateway"].ray_actor_options["num_cpus"] == 0


def test_the_serve_config_builds_one_replica_in_the_gateway(tiny_base):
    args = yaml.safe_load(CONFIG.read_text())["applications"][0]["args"]
    args["models"] = {"tiny": str(tiny_base)}
    assert list(_deployments(serving.app_builder(args))) == ["Gateway"]
    app = serving.app_builder(dict(args, replicas=2))
    assert "ModelServer" in _deployments(app)
