"""A sweep's MLflow parent run (`mlit.results.tracking`): what it is given when the run starts,
what it gets when the run ends, and the links to models trained by earlier runs.

Params are the run's identity (config, base model, judge, store, run id, code version); metrics
the main table's cells, averages and their intervals, read back from the CSV the run wrote, so
MLflow shows what the page shows; artifacts the run folder's tables, figures and records.
"""

from __future__ import annotations

import math

import polars as pl

from mlit.planning.plan import Plan
from mlit.results import tracking
from mlit.results.run_folder import RunFolder
from mlit.results.tracking import Tracker


def start(plan: Plan, run: RunFolder) -> Tracker | None:
    cfg = plan.config
    uri = tracking.uri_of(cfg.tracking_uri)
    if uri is None:
        return None
    prov = run.meta().get("provenance") or {}
    params = {
        "experiment": plan.experiment.name,
        "preset": cfg.preset,
        "base_model": plan.base_model,
        "judge": plan.judge.model or "the demo judge",
        "judge_mode": plan.judge.mode,
        "store": cfg.store or "default",
        "run_id": run.run_id,
        "run_dir": str(run.path.resolve()),
        "code_version": prov.get("git_sha") or "unknown",
        "mlit_version": prov.get("versions", {}).get("mlit", "unknown"),
        "models": len(plan.jobs),
        "config": cfg.to_dict(),
    }
    tags = {"mlit/run_id": run.run_id, "mlit/experiment": plan.experiment.name}
    if cfg.is_demo:
        tags["mlit/demo"] = "true"
    return tracking.start(uri, f"mlit-{plan.experiment.name}", run.path.name, params, tags)


def describe(tracker: Tracker) -> dict:
    """For run.json: where the run is tracked (`mlit compare` finds it from there)."""
    return {
        "uri": tracker.uri,
        "experiment_id": tracker.experiment_id,
        "run_id": tracker.parent_run_id,
    }


def end(tracker: Tracker | None, status: str) -> None:
    if tracker is not None:
        tracking.end(tracker, tracker.parent_run_id, status)


def table_metrics(run: RunFolder, stem: str | None) -> dict[str, float]:
    """The main table's cells as metrics, ``<first column>_<row>/<column>`` (e.g. ``k_2/fi``,
    ``k_2/avg``, ``k_2/avg_ci_low``: MLflow's names take no ``=``)."""
    path = run.tables / f"{stem}.csv"
    if stem is None or not path.exists():
        return {}
    frame = pl.read_csv(path, infer_schema=False)
    first = frame.columns[0]
    out = {}
    for row in frame.iter_rows(named=True):
        for column, value in row.items():
            if column == first or value in (None, ""):
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            if not math.isnan(number):
                out[f"{first}_{row[first]}/{column}"] = number
    return out


def reused(run: RunFolder) -> dict[str, str]:
    """Models this run took from the store, each as a tag naming the MLflow run that trained it
    ("untracked" where it was trained without tracking)."""
    if not run.has_frame("train"):
        return {}
    table = run.frame("train")
    if "status" not in table.columns:
        return {}
    ids = table["mlflow_run_id"] if "mlflow_run_id" in table.columns else [None] * table.height
    return {
        f"{tracking.REUSED}{mixture}": run_id or "untracked"
        for mixture, status, run_id in zip(table["mixture"], table["status"], ids, strict=True)
        if status == "stored"
    }


def finish(tracker: Tracker | None, plan: Plan, run: RunFolder, status: str = "FINISHED") -> None:
    """The run's results on its parent run, then the run ended."""
    if tracker is None:
        return
    meta = run.meta()
    metrics = table_metrics(run, plan.experiment.table_stem)
    for phase, record in (meta.get("phases") or {}).items():
        if isinstance(record, dict) and isinstance(record.get("seconds"), int | float):
            metrics[f"seconds/{phase}"] = record["seconds"]
    cost = meta.get("cost_usd") or {}
    metrics.update({f"cost_usd/{k}": v for k, v in cost.items() if isinstance(v, int | float)})
    tracking.tag(tracker, tracker.parent_run_id, {**reused(run), "mlit/status": meta["status"]})
    tracking.log_run_folder(tracker, run.path, metrics)
    tracking.end(tracker, tracker.parent_run_id, status)
