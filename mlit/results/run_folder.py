"""The run folder: the one module that writes and reads its records (run.json, the mixtures,
models.json, shares.json and the Parquet tables). The tables/ and figures/ (`mlit.results.analysis`) and
report.html (`mlit.results.report_page`) are rebuilt from those records alone; the generation and judge
phases write their Parquet tables as they go, at the paths `RunFolder.file` gives.

A run folder describes itself: `mlit report RUN_DIR` rebuilds scores, tables and figures from it
alone (no dataset, no store), and `mlit serve RUN_DIR` serves its models. Every record carries the
id of the run that wrote it (``_run_id`` in JSON files, ``mlit_run_id`` in Parquet metadata), so a
folder holding files of two runs (a rerun into the same folder, stopped half-way) is refused by
`RunFolder.check_one_run` instead of mixing one run's judge with another's verdicts.

    run.json                resolved config, provenance (git sha, versions), per-phase summary
    mixtures/<name>.json    manifest of every mixture (baselines included) with its model key
    models.json             served name -> model directory, model key, mixture
    shares.json             the pretraining shares §4.2 used, and where they came from
    train.parquet           the training phase: mixture, model key, path, dev ROUGE-L, status
    generations.parquet     every answer (or error)
    judgments.parquet       every side-by-side verdict, both orders' raw output
    scores.parquet          IF scores with bootstrap intervals
    tables/*.csv|md         the table behind each figure, order consistency, response language
    figures/*.png           the figures
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import polars as pl

from mlit.planning.config import SweepConfig
from mlit.plumbing.atomic import atomic_write, write_parquet

RUN_ID = "_run_id"  # in every JSON record of a run folder
PARQUET_RUN_ID = "mlit_run_id"  # in every Parquet table's key-value metadata
RECORDS = (
    "models.json",
    "shares.json",
    "train",
    "generations",
    "judgments",
    "scores",
    "judge_check",
)

VERSIONED = ("mlit", "torch", "transformers", "deepspeed", "peft", "ray", "polars")


class RunRecord:
    """run.json of a run under way, and its only writer. What a run adds (each phase's summary,
    the protocol report, the judge template, the status) goes through `phase`, `set` and
    `finish`; run.json is written when the run starts and when it finishes."""

    def __init__(self, folder: RunFolder, content: dict):
        self._folder, self._content = folder, content

    @property
    def phases(self) -> dict:
        return self._content["phases"]

    def phase(self, name: str, summary) -> None:
        self._content["phases"][name] = summary

    def set(self, **values) -> None:
        self._content.update(values)

    def finish(self, status: str) -> None:
        self._content["status"] = status
        self.save()

    def save(self) -> None:
        self._folder._write_json("run.json", self._content)


class RunFolderError(ValueError):
    """A run folder that is missing a file or holds a damaged one; the message names the file."""


def versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance() -> dict:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = None
    return {
        "git_sha": sha,
        "versions": versions(),
        "python": sys.version.split()[0],
        "command": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False, default=str)


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class RunFolder:
    """A run folder. ``run_id``: the run that writes it (a sweep under way, or `open`ed from its
    run.json to rebuild it); every file written is stamped with it."""

    path: Path
    run_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder, to read and rebuild: its id from run.json."""
        folder = cls(Path(path))
        return cls(folder.path, folder.meta().get(RUN_ID))

    def run_ids(self) -> dict[str, str | None]:
        """file -> the id of the run that wrote it (None: written before mlit kept ids)."""
        found: dict[str, str | None] = {}
        names = [n for n in RECORDS if n.endswith(".json")]
        names += [str(p.relative_to(self.path)) for p in sorted(self.path.glob("mixtures/*.json"))]
        for name in names:
            if (self.path / name).exists():
                found[name] = self._read_json(name).get(RUN_ID)
        for name in (n for n in RECORDS if not n.endswith(".json")):
            path = self.path / f"{name}.parquet"
            if path.exists():
                try:
                    meta = pl.read_parquet_metadata(path)
                except Exception as err:  # polars raises several kinds on a damaged file
                    raise RunFolderError(
                        f"{path} is damaged ({err}); rerun the sweep to rewrite it"
                    ) from err
                found[path.name] = meta.get(PARQUET_RUN_ID)
        return found

    def check_one_run(self) -> str | None:
        """Raise `RunFolderError` naming the files another run wrote than run.json's; returns
        the run's id. A folder written before mlit kept ids (none anywhere) passes."""
        run_id = self.meta().get(RUN_ID)
        ids = self.run_ids()
        if run_id is None and not any(ids.values()):
            return None
        other = sorted(name for name, i in ids.items() if i != run_id)
        if other:
            raise RunFolderError(
                f"{self.path} mixes runs: {', '.join(other[:6])} "
                f"{'was' if len(other) == 1 else 'were'} not written by the run in run.json "
                f"({run_id or 'no id'}; a rerun into this folder stopped before it rewrote "
                "them?). Rerun the sweep to finish it, or pick another --output"
            )
        return run_id

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def tables(self) -> Path:
        return self.path / "tables"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def ray_storage(self) -> Path:
        return self.path / "ray"

    # ---- JSON files ----------------------------------------------------------------------

    def _write_json(self, name: str, obj: dict) -> Path:
        stamped = {RUN_ID: self.run_id, **obj} if self.run_id else obj
        return atomic_write(self.path / name, _dump(stamped))

    def _read_json(self, name: str, hint: str = "") -> dict:
        path = self.path / name
        if not path.exists():
            raise RunFolderError(f"{path}: missing{hint}")
        try:
            return json.loads(path.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunFolderError(
                f"{path} is damaged ({err}); rerun the sweep to rewrite it"
            ) from err

    def start(self, cfg: SweepConfig, experiment: str, mixtures: dict[str, dict]) -> RunRecord:
        """Write the mixture manifests and run.json; returns the record that writes run.json
        from then on."""
        for name, manifest in mixtures.items():
            self._write_json(f"mixtures/{name}.json", manifest)
        record = RunRecord(
            self,
            {
                RUN_ID: self.run_id,
                "config": cfg.to_dict(),
                "experiment": experiment,
                "provenance": provenance(),
                "demo": cfg.is_demo,
                "phases": {},
            },
        )
        record.save()
        return record

    def meta(self) -> dict:
        return self._read_json("run.json", " (is this a run folder of mlit?)")

    def config(self) -> SweepConfig:
        raw = self.meta().get("config")
        try:
            return SweepConfig.from_dict(raw)
        except (TypeError, ValueError, AttributeError) as err:
            raise RunFolderError(
                f"{self.path / 'run.json'}: its config cannot be read ({err})"
            ) from err

    def write_models(self, models: dict[str, dict]) -> None:
        self._write_json("models.json", models)

    def models(self) -> dict[str, dict]:
        """Served name -> {path, model_key, mixture, ...}."""
        raw = self._read_json("models.json", " (is this a run folder of mlit?)")
        return {name: entry for name, entry in raw.items() if name != RUN_ID}

    def write_shares(self, shares: dict[str, float], source: str) -> None:
        self._write_json("shares.json", {"source": source, "shares": shares})

    def shares(self) -> tuple[dict[str, float], str] | None:
        """(shares, source) as written by the sweep; None for folders written before mlit kept it."""
        if not (self.path / "shares.json").exists():
            return None
        raw = self._read_json("shares.json")
        return {k: float(v) for k, v in raw["shares"].items()}, raw["source"]

    # ---- Parquet tables ------------------------------------------------------------------

    def write_frame(self, name: str, frame: pl.DataFrame) -> Path:
        stamp = {PARQUET_RUN_ID: self.run_id} if self.run_id else None
        return write_parquet(frame, self.path / f"{name}.parquet", stamp)

    def saver(self, name: str):
        """A function that writes a table of this run under ``name``: the generation and judge
        phases hand it their table once, at the end (also when stopped). While a phase runs its
        records are in the store, and a rerun rebuilds the table from there: a table is never
        rewritten on a timer (at 670k answers that cost grew with the square of the answers)."""
        return lambda frame: self.write_frame(name, frame)

    def has_frame(self, name: str) -> bool:
        return (self.path / f"{name}.parquet").exists()

    def frame(self, name: str) -> pl.DataFrame:
        path = self.path / f"{name}.parquet"
        if not path.exists():
            raise RunFolderError(f"{path}: missing (did the sweep reach that phase?)")
        try:
            return pl.read_parquet(path)
        except Exception as err:  # polars raises several kinds on a damaged file
            raise RunFolderError(
                f"{path} is damaged ({err}); rerun the sweep to rewrite it"
            ) from err
