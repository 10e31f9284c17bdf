"""Helpers that only the tests use, kept out of the package."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import polars as pl

from mlit import data, rouge, scores
from mlit.generate import Task
from mlit.store import filesystem


def sweep_config(tmp_path, **values):
    """A small language_count sweep (fi, en, cs) writing under ``tmp_path``: the shape the
    failure tests give a sweep before they change one thing."""
    from mlit.config import SweepConfig

    base = dict(
        experiment="language_count",
        languages=("fi", "en", "cs"),
        output=str(tmp_path / "run"),
        store=str(tmp_path / "store"),
    )
    return SweepConfig(**{**base, **values})


def tasks_for(
    models: dict[str, str], eval_rows: pl.DataFrame, langs: Sequence[str] | None = None
) -> list[Task]:
    """Every (model, eval language, example) task; ``models`` maps served name -> model key."""
    rows = eval_rows.filter(pl.col("split") == "eval")
    if langs is not None:
        rows = rows.filter(pl.col("lang").is_in(list(langs)))
    out = []
    for name, key in models.items():
        for ex, lang, instruction in rows.select("example_id", "lang", "instruction").rows():
            out.append(Task(name, key, ex, lang, instruction))
    return out


def require_valid(frame: pl.DataFrame, expected: Iterable[str] | None = None) -> pl.DataFrame:
    """Validate and raise a DataError that lists the problems, or return the frame."""
    report = data.validate(frame, expected)
    if not report.ok:
        raise data.DataError("dataset has problems:\n" + report.summary())
    return frame


def recompute_from_judgments(judgments: pl.DataFrame) -> pl.DataFrame:
    """The point scores from verdicts alone (discounted ties), for consistency checks."""
    return (
        judgments.filter(pl.col("verdict") != "error")
        .group_by("candidate", "baseline", "eval_lang")
        .agg(
            score=pl.col("verdict").replace_strict(scores.VALUES, return_dtype=pl.Float64).mean()
            * 100
        )
        .rename({"candidate": "model"})
    )


def mean_rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return 0.0
    return sum(map(rouge.rouge_l, predictions, references)) / len(predictions)


def fs_selector(uri: str, recursive: bool = True):
    """A pyarrow FileSelector over everything below a store URI (for listings)."""
    from pyarrow import fs

    return fs.FileSelector(filesystem(uri)[1], recursive=recursive, allow_not_found=True)


def legacy_put(root, kind: str, key: str, value: dict):
    """A record in the one-file layout of stores written before segments (still read)."""
    import json
    from pathlib import Path

    from mlit.integrity import RECORD_KEY, RECORD_SHA, digest

    path = Path(root) / "records" / kind / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**value, RECORD_KEY: key}
    doc[RECORD_SHA] = digest(doc)
    path.write_text(json.dumps(doc, ensure_ascii=False))  # as mlit wrote them before segments
    return path


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[str]:
    """A real S3 server (moto) on loopback with ``bucket``, and the environment pointing pyarrow
    and boto3 (and child processes) at it; yields ``s3://bucket``. The environment is restored."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import loopback

    proc, port = loopback.start_moto(bucket)
    env = loopback.s3_env(port)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield f"s3://{bucket}"
    finally:
        proc.terminate()
        proc.wait()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
