"""The parallel dataset: loading, the paper's real sources, validation and the bundled sample.

A dataset is a Polars frame with one row per example per language:

    example_id (str) | lang (str) | split ("train" | "eval") | instruction (str) | response (str | null)

The same ``example_id`` in several languages means "translations of one another". Responses are
required for training rows and optional for eval rows (they are reference answers when present).
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import polars as pl

from mlit.method import languages
from mlit.plumbing.atomic import atomic_write

COLUMNS = ("example_id", "lang", "split", "instruction", "response")
SCHEMA = {
    "example_id": pl.String,
    "lang": pl.String,
    "split": pl.String,
    "instruction": pl.String,
    "response": pl.String,
}
SPLITS = ("train", "eval")
PAPER_EVAL_SIZE = 617  # AlpacaFarm evaluation instructions, those from OpenAssistant excluded


class DataError(ValueError):
    """A dataset that cannot be used as it is; the message names the file, rows or ids at fault."""


# --------------------------------------------------------------------------------------------
# Loading


def from_records(records: Iterable[dict], source: str = "<records>") -> pl.DataFrame:
    """Build a dataset frame from dicts, checking columns, types, splits and language codes."""
    rows = list(records)
    if not rows:
        raise DataError(f"{source}: no rows")
    for i, row in enumerate(rows):
        missing = [c for c in COLUMNS if c not in row and c != "response"]
        if missing:
            raise DataError(f"{source}: row {i} lacks field(s) {', '.join(missing)}")
        for col in COLUMNS:
            value = row.get(col)
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{source}: row {i} (example_id={row.get('example_id')!r}) field {col!r} "
                    f"must be a string, got {type(value).__name__}"
                )
    frame = pl.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows], schema=SCHEMA)
    return _check_frame(frame, source)


def _check_frame(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    missing = [c for c in COLUMNS if c not in frame.columns and c != "response"]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
        )
    if "response" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("response"))
    try:
        frame = frame.select([pl.col(c).cast(SCHEMA[c], strict=True) for c in COLUMNS])
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{source}: a column has the wrong type ({err})") from err
    nulls = frame.filter(
        pl.any_horizontal(pl.col(c).is_null() for c in ("example_id", "lang", "split"))
    )
    if nulls.height:
        raise DataError(f"{source}: {nulls.height} row(s) with a null example_id, lang or split")
    bad_split = frame.filter(~pl.col("split").is_in(SPLITS))
    if bad_split.height:
        ids = bad_split["example_id"].head(5).to_list()
        values = sorted(set(bad_split["split"].to_list()))
        raise DataError(
            f"{source}: split must be 'train' or 'eval'; got {values} (example ids {ids})"
        )
    for code in frame["lang"].unique().to_list():
        try:
            languages.get(code)
        except languages.UnknownLanguageError as err:
            raise DataError(f"{source}: {err}") from err
    return frame


def load(path: str | Path) -> pl.DataFrame:
    """Load a dataset from a JSONL or Parquet file (or a folder of them)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".parquet"))
        if not files:
            raise DataError(f"{path}: folder holds no .jsonl or .parquet file")
        return pl.concat([load(p) for p in files])
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            return _check_frame(pl.read_parquet(path), str(path))
        except (OSError, pl.exceptions.PolarsError) as err:
            raise DataError(f"{path}: not a readable Parquet file ({err})") from err
    if path.suffix in (".jsonl", ".json"):
        return from_records(_read_jsonl(path), str(path))
    raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .parquet")


def open_source(spec: str | Path) -> pl.DataFrame:
    """Resolve a dataset spec: 'sample' (bundled), 'hf:NAME' (hub or local HF file), or a path."""
    text = str(spec)
    if text == "sample":
        return sample()
    if text.startswith("hf:"):
        return load_hf(text[3:])
    return load(text)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{n}: not valid UTF-8 (byte {raw[err.start]:#04x} at column "
                    f"{err.start + 1}); save the file as UTF-8"
                ) from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n}: invalid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object")
            rows.append(row)
    return rows


def save(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a dataset as JSONL or Parquet (by suffix), atomically."""
    path = Path(path)
    buffer = io.BytesIO()
    if path.suffix == ".parquet":
        frame.write_parquet(buffer)
    else:
        frame.write_ndjson(buffer)
    return atomic_write(path, buffer.getvalue())


def sample() -> pl.DataFrame:
    """The bundled parallel sample: written for mlit, 17 languages, train and eval splits."""
    folder = resources.files("mlit") / "sample"
    frames = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".jsonl"):
            lang = entry.name.removesuffix(".jsonl")
            rows = [json.loads(line) for line in entry.read_text("utf-8").splitlines() if line]
            frames.append(from_records(({**r, "lang": lang} for r in rows), f"sample/{lang}"))
    return pl.concat(frames)


def split(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.filter(pl.col("split") == name)


# --------------------------------------------------------------------------------------------
# Hugging Face `datasets` (imported only here); the paper's own sources are `mlit.data.paper_sources`.


def hf_dataset(source: str, split_name: str = "train", config: str | None = None):
    """Open a Hugging Face dataset by hub name, or a local .jsonl/.json/.parquet file shaped like it.

    Local files go through the same `datasets` code path, which is how the loaders are tested
    offline and how users with a downloaded copy avoid the hub.
    """
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the install
        raise DataError("loading Hugging Face datasets needs `pip install mlit[hub]`") from err
    path = Path(source)
    if path.suffix in (".jsonl", ".json", ".parquet"):
        if not path.exists():
            raise DataError(f"{path}: no such file")
        builder = "parquet" if path.suffix == ".parquet" else "json"
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    return datasets.load_dataset(source, config, split=split_name)


def load_hf(source: str, split_name: str = "train") -> pl.DataFrame:
    """A dataset already in mlit's five-column format, from the hub or a local file."""
    return from_records(hf_dataset(source, split_name), f"hf:{source}")


# --------------------------------------------------------------------------------------------
# Validation


@dataclass(frozen=True)
class Problem:
    kind: str  # missing_language | duplicate | empty_text | leakage | split_conflict | too_long
    example_id: str
    lang: str | None
    detail: str


@dataclass(frozen=True)
class Report:
    rows: int
    examples: dict[str, int]  # split -> distinct example ids
    languages: tuple[str, ...]
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self) -> dict[str, list[Problem]]:
        out: dict[str, list[Problem]] = {}
        for p in self.problems:
            out.setdefault(p.kind, []).append(p)
        return out

    def summary(self, limit: int = 10) -> str:
        lines = [
            f"{self.rows} rows; {len(self.languages)} languages ({', '.join(self.languages)}); "
            + ", ".join(f"{n} {s} examples" for s, n in self.examples.items())
        ]
        if self.ok:
            return "\n".join([*lines, "OK: no problems found"])
        for kind, probs in self.by_kind().items():
            lines.append(f"{kind}: {len(probs)}")
            for p in probs[:limit]:
                where = f"{p.example_id}" + (f" [{p.lang}]" if p.lang else "")
                lines.append(f"  - {where}: {p.detail}")
            if len(probs) > limit:
                lines.append(f"  ... and {len(probs) - limit} more")
        return "\n".join(lines)


def normalize_text(text: str) -> str:
    """Normalisation for leakage checks: NFKC, case-folded, whitespace collapsed."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()


def validate(frame: pl.DataFrame, expected: Iterable[str] | None = None) -> Report:
    """Report every problem of a dataset, with example ids.

    ``expected`` is the language set every example must have; by default it is every language that
    appears in the dataset.
    """
    frame = _check_frame(frame, "dataset")
    langs = tuple(sorted(frame["lang"].unique().to_list()))
    want = set(languages.parse(expected)) if expected is not None else set(langs)
    problems: list[Problem] = []

    dup = frame.group_by("example_id", "lang").len().filter(pl.col("len") > 1).sort("example_id")
    for ex, lang, n in dup.iter_rows():
        problems.append(Problem("duplicate", ex, lang, f"{n} rows for this (example_id, lang)"))

    splits = frame.group_by("example_id").agg(pl.col("split").unique().sort()).sort("example_id")
    for ex, values in splits.iter_rows():
        if len(values) > 1:
            problems.append(Problem("split_conflict", ex, None, f"in several splits: {values}"))

    present = frame.group_by("example_id").agg(pl.col("lang").unique()).sort("example_id")
    for ex, have in present.iter_rows():
        for lang in sorted(want - set(have)):
            problems.append(Problem("missing_language", ex, lang, "no row in this language"))

    empty_instruction = pl.col("instruction").is_null() | (
        pl.col("instruction").str.strip_chars() == ""
    )
    empty_response = (pl.col("split") == "train") & (
        pl.col("response").is_null() | (pl.col("response").str.strip_chars() == "")
    )
    for ex, lang, no_instr, no_resp in (
        frame.select(
            "example_id",
            "lang",
            empty_instruction.alias("i"),
            empty_response.alias("r"),
        )
        .filter(pl.col("i") | pl.col("r"))
        .sort("example_id", "lang")
        .iter_rows()
    ):
        what = " and ".join(
            x for x, bad in (("instruction", no_instr), ("response", no_resp)) if bad
        )
        problems.append(Problem("empty_text", ex, lang, f"empty {what}"))

    train_texts: dict[str, str] = {}
    for ex, text in split(frame, "train").select("example_id", "instruction").iter_rows():
        if text:
            train_texts.setdefault(normalize_text(text), ex)
    for ex, lang, text in (
        split(frame, "eval").select("example_id", "lang", "instruction").sort("example_id").rows()
    ):
        hit = train_texts.get(normalize_text(text or ""))
        if text and hit is not None:
            problems.append(
                Problem("leakage", ex, lang, f"eval instruction also in training (example {hit})")
            )

    examples = {s: split(frame, s)["example_id"].n_unique() for s in SPLITS}
    return Report(frame.height, examples, langs, tuple(problems))


def too_long(frame: pl.DataFrame, count_tokens, context: int, max_tokens: int) -> list[Problem]:
    """Evaluation instructions whose prompt (``count_tokens(instruction)``, template included)
    and ``max_tokens`` new tokens do not fit a model's ``context``: every answer to them would
    fail, on every run. One problem per (example, language)."""
    out = []
    rows = split(frame, "eval").select("example_id", "lang", "instruction").sort("example_id")
    for ex, lang, text in rows.iter_rows():
        n = count_tokens(text or "")
        if n + max_tokens > context:
            detail = f"{n} prompt tokens + {max_tokens} new tokens > the context of {context}"
            out.append(Problem("too_long", ex, lang, detail))
    return out


def train_ids(frame: pl.DataFrame) -> list[str]:
    return sorted(split(frame, "train")["example_id"].unique().to_list())


def eval_ids(frame: pl.DataFrame) -> list[str]:
    return sorted(split(frame, "eval")["example_id"].unique().to_list())
