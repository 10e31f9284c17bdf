"""Helpers that only the tests use, kept out of the package."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from mlit.data import dataset
from mlit.generation.answer_client import Task
from mlit.judging.judge import Pair
from mlit.judging.judgments import JUDGMENT_COLUMNS
from mlit.method import rouge
from mlit.results import scores
from mlit.store.filesystems import filesystem


def sweep_config(tmp_path, **values):
    """A small language_count sweep (fi, en, cs) writing under ``tmp_path``: the shape the
    failure tests give a sweep before they change one thing."""
    from mlit.planning.config import SweepConfig

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
    report = dataset.validate(frame, expected)
    if not report.ok:
        raise dataset.DataError("dataset has problems:\n" + report.summary())
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

    from mlit.store.checksums import RECORD_KEY, RECORD_SHA, digest

    path = Path(root) / "records" / kind / key[:2] / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**value, RECORD_KEY: key}
    doc[RECORD_SHA] = digest(doc)
    path.write_text(json.dumps(doc, ensure_ascii=False))  # as mlit wrote them before segments
    return path


@contextlib.contextmanager
def s3_server(bucket: str, log: Path | None = None, latency_ms: float = 0) -> Iterator[str]:
    """A real S3 server (moto) on loopback with ``bucket``, and the environment pointing pyarrow
    and boto3 (and child processes) at it; yields ``s3://bucket``. The environment is restored.
    ``log``: moto's request log goes there; ``latency_ms``: every request goes through a proxy
    that adds this much latency, as a cloud store's."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import loopback

    proc, port = loopback.start_moto(bucket, log)
    proxy = None
    if latency_ms:
        proxy, port = loopback.start("proxy", str(port), "--ms", str(latency_ms))
    env = loopback.s3_env(port)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield f"s3://{bucket}"
    finally:
        for server in (proc, proxy):
            if server is not None:
                server.terminate()
                server.wait()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_disk(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    return filler


def judgments(rows):
    """rows: (candidate, baseline, eval_lang, example_id, verdict)."""
    out = []
    for cand, base, lang, ex, verdict in rows:
        out.append(
            {
                "candidate": cand,
                "baseline": base,
                "eval_lang": lang,
                "example_id": ex,
                "verdict": verdict,
                "self_comparison": cand == base,
                "judge": "j",
            }
        )
    return pl.DataFrame(
        [{c: r.get(c) for c in JUDGMENT_COLUMNS} for r in out], schema=JUDGMENT_COLUMNS
    )


def synthetic_judgments(exp, seed=0, n=6):
    rng = np.random.default_rng(seed)
    rows = []
    for recipe, lang in exp.eval_pairs():
        base = "base" if exp.baseline == "base" else f"mono-{lang}"
        for i in range(n):
            verdict = "tie" if recipe.name == base else str(rng.choice(["win", "tie", "loss"]))
            rows.append((recipe.name, base, lang, f"e{i}", verdict))
    return judgments(rows)


def judge_pairs(n=3):
    out = []
    for i in range(n):
        good_first = i % 2 == 0
        cand = f"good answer {i}" if good_first else f"weak answer {i}"
        base = f"other answer {i}" if good_first else f"good other answer {i}"
        out.append(
            Pair("model-a", "mono-en", "en", f"e{i}", f"Question {i}?", cand, base, "ka", "kb")
        )
    return out


CLUSTER_CONFIG = Path(__file__).parent.parent / "ray_cluster.yaml"


def cluster_variants() -> dict[str, str]:
    text = CLUSTER_CONFIG.read_text()
    found = re.findall(r"# --- variant: (\w+) -+\n(.*?)# --- end variant ---", text, re.S)
    return {name: body for name, body in found}


def uncomment_variant(body: str) -> tuple[dict, list[str]]:
    lines = [line[2:] if line.startswith("# ") else line[1:] for line in body.splitlines()]
    remove = []
    keep = []
    for line in lines:
        if line.startswith("remove:"):
            remove = [k.strip() for k in line.split(":", 1)[1].split(",")]
        elif re.match(r"^[a-zA-Z_]+:|^  |^- |^\s*$", line):
            keep.append(line)
    return yaml.safe_load("\n".join(keep)) or {}, remove


def check_cluster_config(config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
