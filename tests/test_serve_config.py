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
