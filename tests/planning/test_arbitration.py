"""Tune trials and Serve replicas never wait on each other's GPUs (fake GPUs on local Ray)."""

import socket
import time

import pytest

from mlit.serving import app as serving
from mlit.training import trials


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_holding_gpus_gives_a_clear_error_in_bounded_time_then_frees_them(
    ray_session, tiny_base
):
    import ray

    cfg = serving.ServeConfig(models={"m": str(tiny_base)}, port=_port(), num_cpus=0, num_gpus=1)
    serving.start(cfg)
    try:
        assert ray.available_resources().get("GPU", 0) <= 1  # the replica holds a fake GPU
        trial = trials.Compute(workers=2, gpus_per_worker=1, cpus_per_worker=0.5)
        assert trials.check_resources(trial) == 1  # it fits the cluster...
        start = time.monotonic()
        with pytest.raises(trials.ResourceError, match="held by other work"):
            trials.wait_for_resources(trial, timeout_s=2)  # ...but not while Serve holds a GPU
        assert time.monotonic() - start < 10
    finally:
        assert serving.stop_if_running()  # what the pipeline does before every training phase
    trials.wait_for_resources(trial, timeout_s=30)  # now the trial can be placed
    assert not serving.stop_if_running()


def test_a_trial_larger_than_any_node_fails_before_anything_starts(ray_session):
    start = time.monotonic()
    with pytest.raises(trials.ResourceError, match="needs 3 GPU"):
        trials.check_resources(trials.Compute(workers=1, gpus_per_worker=3))
    with pytest.raises(trials.ResourceError, match="room for"):
        trials.check_resources(trials.Compute(workers=5, gpus_per_worker=1, cpus_per_worker=0.1))
    assert time.monotonic() - start < 5
