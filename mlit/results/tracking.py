"""MLflow tracking of sweeps (`--tracking-uri`, or ``$MLFLOW_TRACKING_URI``): off when neither.

One MLflow experiment per mlit experiment; one parent run per sweep run (its config, base model,
judge, store, run id and code version as params; the main table's cells, averages and their
intervals as metrics; tables, figures, ``report.html`` and ``run.json`` as artifacts), and one
child run per model trained, which rank 0 logs to while it trains (loss and learning rate at each
logged step, dev ROUGE-L at each evaluation, the best step). A model reused from the store is not
logged again: the parent carries a tag linking to the run that trained it.

Logging never fails a sweep. An unreachable server or a refused call is one warning, and the
process logs nothing more; the run goes on. MLflow is imported only here, only when tracking is
on, and its HTTP client is told to fail fast (its default retries for minutes).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlit.plumbing import console

ENV = "MLFLOW_TRACKING_URI"
PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a child under its parent
MODEL_KEY = "mlit/model_key"
REUSED = "mlit/reused/"  # + mixture name: the run that trained a model this sweep reused
ARTIFACTS = ("run.json", "report.html", "judgments.parquet", "train.parquet", "scores.parquet")
PARAM_CHARS = 6000  # MLflow's limit on a param's value

_off: dict[str, str] = {}  # uri -> why this process stopped logging to it


@dataclass(frozen=True)
class Tracker:
    """Where a sweep logs: handed to Ray's training workers (plain strings, picklable)."""

    uri: str
    experiment_id: str
    parent_run_id: str


def uri_of(flag: str | None) -> str | None:
    """The tracking URI: the flag, else the environment's, else None (tracking off)."""
    return flag or os.environ.get(ENV) or None


def _quiet() -> None:
    # Fail fast: MLflow retries a refused connection with backoff for minutes by default. And
    # say nothing on the console: a link per ended run, a bar per download (the sweep says
    # where its run is once).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _client(uri: str):
    _quiet()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _guarded(uri: str, what: str, call, default=None):
    """``call(client)``, or ``default`` with one warning per process when it fails."""
    if uri in _off:
        return default
    try:
        return call(_client(uri))
    except Exception as err:  # MLflow's failures come as many types; none may stop a sweep
        _off[uri] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        console.warn(
            f"[tracking] {what} failed at {uri} ({_off[uri]}); nothing more is logged there, "
            "the run goes on"
        )
        return default


def _params(values: Mapping[str, object]) -> list:
    from mlflow.entities import Param

    out = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out.append(Param(key, text[:PARAM_CHARS]))
    return out


def _metrics(values: Mapping[str, float], step: int = 0) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(_key(k), float(v), now, step) for k, v in values.items() if v is not None]


def _key(name: str) -> str:
    """A metric name MLflow accepts (letters, digits, _ - . / and space)."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def start(
    uri: str | None, experiment: str, run_name: str, params: Mapping[str, object], tags: dict
) -> Tracker | None:
    """The sweep's parent run in ``experiment`` (made on first use); None when tracking is off
    or the server cannot be reached (said once)."""
    if not uri:
        return None
    try:
        import mlflow  # noqa: F401
    except ImportError:
        console.warn(
            f"[tracking] {uri} given, but MLflow is not installed (pip install 'mlit[tracking]');"
            " the run goes on without it"
        )
        return None

    def begin(client) -> Tracker:
        found = client.get_experiment_by_name(experiment)
        exp_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(exp_id, tags=tags, run_name=run_name)
        client.log_batch(run.info.run_id, params=_params(params))
        return Tracker(uri, exp_id, run.info.run_id)

    tracker = _guarded(uri, "starting the run", begin)
    if tracker is not None:
        console.say(f"[tracking] MLflow run {tracker.parent_run_id} in experiment {experiment!r}")
    return tracker


def child(
    tracker: Tracker | None, name: str, model_key: str, params: Mapping[str, object]
) -> str | None:
    """The child run of one model under the sweep's run: the one a retried trial began, else a
    new one. Returns its id (None: not logging)."""
    if tracker is None:
        return None

    def begin(client) -> str:
        found = client.search_runs(
            [tracker.experiment_id],
            f"tags.`{PARENT}` = '{tracker.parent_run_id}' and tags.`{MODEL_KEY}` = '{model_key}'",
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        run = client.create_run(
            tracker.experiment_id,
            tags={PARENT: tracker.parent_run_id, MODEL_KEY: model_key},
            run_name=name,
        )
        client.log_batch(run.info.run_id, params=_params(params))
        return run.info.run_id

    return _guarded(tracker.uri, f"starting the run of {name}", begin)


def log(tracker: Tracker | None, run_id: str | None, metrics: Mapping[str, float], step: int):
    """Metrics at a step (a no-op when not logging)."""
    if tracker is None or run_id is None:
        return
    _guarded(
        tracker.uri,
        "logging metrics",
        lambda c: c.log_batch(run_id, metrics=_metrics(metrics, step)),
    )


def tag(tracker: Tracker | None, run_id: str | None, tags: Mapping[str, str]) -> None:
    if tracker is None or run_id is None or not tags:
        return
    from mlflow.entities import RunTag

    _guarded(
        tracker.uri,
        "tagging",
        lambda c: c.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]),
    )


def end(tracker: Tracker | None, run_id: str | None, status: str = "FINISHED") -> None:
    """Mark a run ended: FINISHED, FAILED or KILLED."""
    if tracker is None or run_id is None:
        return
    _guarded(tracker.uri, "ending a run", lambda c: c.set_terminated(run_id, status))


def log_run_folder(tracker: Tracker | None, run_dir: Path, metrics: Mapping[str, float]) -> None:
    """The sweep's results on its parent run: ``metrics`` (the main table's cells and averages)
    and the run folder's tables, figures, page and records as artifacts."""
    if tracker is None:
        return
    run_id = tracker.parent_run_id
    log(tracker, run_id, metrics, 0)

    def upload(client) -> None:
        for sub in ("tables", "figures"):
            if (run_dir / sub).is_dir():
                client.log_artifacts(run_id, str(run_dir / sub), sub)
        for name in ARTIFACTS:
            if (run_dir / name).exists():
                client.log_artifact(run_id, str(run_dir / name))

    _guarded(tracker.uri, "uploading the run folder", upload)


def download(uri: str, run_id: str, dest: Path) -> Path:
    """A tracked sweep's run folder as it was logged (for `mlit compare RUN_ID`); raises
    ValueError naming the run when it cannot be had."""
    try:
        _quiet()
        import mlflow.artifacts

        dest.mkdir(parents=True, exist_ok=True)
        return Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(dest), tracking_uri=uri)
        )
    except Exception as err:
        raise ValueError(f"MLflow run {run_id} at {uri}: {err}") from err
