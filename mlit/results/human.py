"""Human validation kit: a CSV for raters, and the paper's two studies read back.

    mlit human export results/monolingual --languages en,es,ru,he --out rating.csv
    mlit human import rating_alice.csv rating_bob.csv --key rating.key.json
    mlit human language-export results/monolingual --out language.csv     # App. E
    mlit human language-import language_filled.csv

The CSV holds two studies (column ``study``):

- ``rating``: the answer of the model tuned on the evaluation language, rated ``excellent``,
  ``pass`` or ``fail`` (Fig. 2 of the paper);
- ``side_by_side``: that answer beside the answer of another monolingual model picked at random,
  in random order, choice ``1``, ``2`` or ``tie`` (Appendix D).

Which model wrote which answer, and the judge's verdict, stay in the key file so raters are blind.
Agreement follows the paper: 1 when judge and human agree, 0.5 when exactly one of them chose a
tie, 0 otherwise; with two raters, human-human agreement is computed the same way.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl

RATINGS = ("excellent", "pass", "fail")
CHOICES = ("1", "2", "tie")
COLUMNS = (
    "item_id",
    "study",
    "eval_lang",
    "example_id",
    "instruction",
    "answer",
    "answer_1",
    "answer_2",
    "rating",
    "choice",
    "rater",
)


class HumanKitError(ValueError):
    pass


PAPER_LANGUAGES = ("en", "es", "ru", "he")  # Fig. 2 and App. D's four languages
# The key file names the run its items came from, so that the raters' agreement lands on that
# run's results page (`mlit human import`); not an item id, which all start with r- or s-.
RUN_ENTRY = "_run"


def _mono_language(model: str) -> str | None:
    return model.removeprefix("mono-") if model.startswith("mono-") else None


def export(
    run_dir: str | Path,
    per_language: int = 50,
    seed: int = 0,
    languages: tuple[str, ...] = PAPER_LANGUAGES,
) -> tuple[pl.DataFrame, dict]:
    """Items for raters, as the paper drew them, and the key that unblinds them.

    For each language L: ``per_language`` instructions of L's evaluation set; the rating study
    (Fig. 2) shows the answer of the model tuned monolingually on L; the side-by-side study
    (App. D) shows that answer beside the answer of another monolingual model picked at random,
    in random order. The run must hold the monolingual models (the monolingual experiment does).
    """
    run = Path(run_dir)
    gens = pl.read_parquet(run / "generations.parquet").filter(pl.col("status") == "ok")
    judged = pl.read_parquet(run / "judgments.parquet").filter(
        ~pl.col("self_comparison") & (pl.col("verdict") != "error")
    )
    verdict = {
        (j["candidate"], j["baseline"], j["eval_lang"], j["example_id"]): j["verdict"]
        for j in judged.iter_rows(named=True)
    }
    answers = {(r["model"], r["lang"], r["example_id"]): r for r in gens.iter_rows(named=True)}
    monos = sorted({m for m in gens["model"].unique() if _mono_language(m)})
    rng = random.Random(seed)
    rows, key = [], {}
    for lang in languages:
        own = f"mono-{lang}"
        ids = sorted(ex for (m, lg, ex) in answers if m == own and lg == lang)
        others = [m for m in monos if m != own]
        if not ids or not others:
            raise HumanKitError(
                f"{run}: no answers of {own} in {lang}, or no other monolingual model; the "
                "paper's studies need the monolingual models (run sweeps/monolingual.py)"
            )
        for ex in rng.sample(ids, min(per_language, len(ids))):
            mine = answers[(own, lang, ex)]
            item = f"r-{len(rows):05d}"
            rows.append(
                {
                    "item_id": item,
                    "study": "rating",
                    "eval_lang": lang,
                    "example_id": ex,
                    "instruction": mine["instruction"],
                    "answer": mine["response"],
                }
            )
            key[item] = {"model": own}
            rival = rng.choice([m for m in others if (m, lang, ex) in answers] or [None])
            judge_says = verdict.get((rival, own, lang, ex))
            if rival is None or judge_says is None:
                continue
            flip = rng.random() < 0.5
            other = answers[(rival, lang, ex)]
            first, second = (mine, other) if flip else (other, mine)
            item = f"s-{len(rows):05d}"
            rows.append(
                {
                    "item_id": item,
                    "study": "side_by_side",
                    "eval_lang": lang,
                    "example_id": ex,
                    "instruction": mine["instruction"],
                    "answer_1": first["response"],
                    "answer_2": second["response"],
                }
            )
            key[item] = {
                "candidate": rival,
                "baseline": own,
                "candidate_is": 2 if flip else 1,
                "judge_verdict": judge_says,
            }
    frame = pl.DataFrame(
        [{c: r.get(c) for c in COLUMNS} for r in rows], schema=dict.fromkeys(COLUMNS, pl.String)
    )
    key[RUN_ENTRY] = str(run.resolve())
    return frame, key


# --------------------------------------------------------------------------------------------
# Appendix E: response language, checked by hand

LANGUAGE_COLUMNS = ("item_id", "eval_lang", "instruction", "answer", "same_language")


def export_language(run_dir: str | Path, per_language: int = 20, seed: int = 0):
    """App. E: per evaluation language, ``per_language`` answers drawn from the models tuned
    monolingually on *other* languages, for a person to mark ``same_language`` yes or no."""
    gens = pl.read_parquet(Path(run_dir) / "generations.parquet").filter(pl.col("status") == "ok")
    rng = random.Random(seed)
    rows, key = [], {}
    for lang in sorted(gens["lang"].unique()):
        pool = [
            r
            for r in gens.filter(pl.col("lang") == lang).iter_rows(named=True)
            if _mono_language(r["model"]) not in (None, lang)
        ]
        for r in rng.sample(pool, min(per_language, len(pool))):
            item = f"l-{len(rows):05d}"
            rows.append(
                {
                    "item_id": item,
                    "eval_lang": lang,
                    "instruction": r["instruction"],
                    "answer": r["response"],
                    "same_language": None,
                }
            )
            key[item] = {"model": r["model"]}
    if not rows:
        raise HumanKitError(f"{run_dir}: no answers of monolingual models in other languages")
    frame = pl.DataFrame(rows, schema=dict.fromkeys(LANGUAGE_COLUMNS, pl.String))
    return frame, key


def language_share(paths: list[str | Path]) -> pl.DataFrame:
    """Filled App. E sheets -> per language (and in all) the share of answers in the prompt's
    language; the paper found 239 of 240."""
    frame = pl.concat(
        [pl.read_csv(p, schema_overrides=dict.fromkeys(LANGUAGE_COLUMNS, pl.String)) for p in paths]
    )
    marks = frame["same_language"].str.to_lowercase().str.strip_chars()
    bad = frame.filter(~marks.is_in(["yes", "no"]) | marks.is_null())
    if bad.height:
        raise HumanKitError(
            f"items {bad['item_id'].head(5).to_list()}: same_language must be yes or no"
        )
    frame = frame.with_columns(same=marks == "yes")
    per = frame.group_by("eval_lang").agg(answers=pl.len(), same_language=pl.col("same").sum())
    total = pl.DataFrame(
        {
            "eval_lang": ["all"],
            "answers": [frame.height],
            "same_language": [int(frame["same"].sum())],
        }
    )
    out = pl.concat([per.sort("eval_lang"), total.cast(per.schema)])
    return out.with_columns(share=pl.col("same_language") / pl.col("answers") * 100)


def write_kit(frame: pl.DataFrame, key: dict, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    frame.write_csv(out)
    key_path = out.with_suffix(".key.json")
    key_path.write_text(json.dumps(key, indent=1))
    return out, key_path


def read_filled(paths: list[str | Path]) -> pl.DataFrame:
    frames = []
    for i, p in enumerate(paths):
        f = pl.read_csv(p, schema_overrides=dict.fromkeys(COLUMNS, pl.String))
        missing = [c for c in ("item_id", "study", "rating", "choice") if c not in f.columns]
        if missing:
            raise HumanKitError(f"{p}: missing column(s) {', '.join(missing)}")
        if "rater" not in f.columns or f["rater"].null_count() == f.height:
            f = f.with_columns(rater=pl.lit(f"rater{i + 1}"))
        frames.append(f.select(COLUMNS))
    frame = pl.concat(frames)
    bad_rating = frame.filter(
        (pl.col("study") == "rating")
        & pl.col("rating").is_not_null()
        & ~pl.col("rating").str.to_lowercase().is_in(RATINGS)
    )
    bad_choice = frame.filter(
        (pl.col("study") == "side_by_side")
        & pl.col("choice").is_not_null()
        & ~pl.col("choice").str.to_lowercase().is_in(CHOICES)
    )
    for bad, what, allowed in ((bad_rating, "rating", RATINGS), (bad_choice, "choice", CHOICES)):
        if bad.height:
            raise HumanKitError(
                f"items {bad['item_id'].head(5).to_list()}: {what} must be one of {allowed}"
            )
    return frame.with_columns(pl.col("rating", "choice").str.to_lowercase())


def rating_distribution(filled: pl.DataFrame) -> pl.DataFrame:
    """Fig. 2: share of excellent / pass / fail answers per language, in percent."""
    rated = filled.filter((pl.col("study") == "rating") & pl.col("rating").is_not_null())
    return (
        rated.group_by("eval_lang")
        .agg(n=pl.len(), **{r: (pl.col("rating") == r).mean() * 100 for r in RATINGS})
        .sort("eval_lang")
    )


def _outcome(choice: str, candidate_is: int) -> str:
    """A human choice as the candidate's win / loss / tie."""
    if choice == "tie":
        return "tie"
    return "win" if int(choice) == candidate_is else "loss"


def agreement(a: str, b: str) -> float:
    """The paper's rule (App. D): 1 agree, 0.5 exactly one tie, 0 otherwise."""
    if a == b:
        return 1.0
    if "tie" in (a, b):
        return 0.5
    return 0.0


def agreements(filled: pl.DataFrame, key: dict) -> pl.DataFrame:
    """Per language: judge-human agreement, and human-human agreement when two raters."""
    sbs = filled.filter((pl.col("study") == "side_by_side") & pl.col("choice").is_not_null())
    rows = []
    for r in sbs.iter_rows(named=True):
        info = key.get(r["item_id"])
        if info is None:
            raise HumanKitError(f"item {r['item_id']} is not in the key file")
        human = _outcome(r["choice"], info["candidate_is"])
        rows.append(
            {
                "eval_lang": r["eval_lang"],
                "item_id": r["item_id"],
                "rater": r["rater"],
                "human": human,
                "judge_human": agreement(info["judge_verdict"], human),
            }
        )
    if not rows:
        raise HumanKitError("no side-by-side choices filled in")
    frame = pl.DataFrame(rows)
    out = frame.group_by("eval_lang").agg(
        items=pl.col("item_id").n_unique(), judge_human=pl.col("judge_human").mean() * 100
    )
    raters = sorted(frame["rater"].unique())
    if len(raters) >= 2:
        a = frame.filter(pl.col("rater") == raters[0]).select("eval_lang", "item_id", "human")
        b = frame.filter(pl.col("rater") == raters[1]).select(
            "item_id", pl.col("human").alias("h2")
        )
        both = a.join(b, on="item_id")
        hh = (
            both.with_columns(
                hh=pl.struct("human", "h2").map_elements(
                    lambda s: agreement(s["human"], s["h2"]), return_dtype=pl.Float64
                )
            )
            .group_by("eval_lang")
            .agg(human_human=pl.col("hh").mean() * 100)
        )
        out = out.join(hh, on="eval_lang", how="left")
    return out.sort("eval_lang")


def attach(agree: pl.DataFrame, run_dir: str | Path) -> Path:
    """Keep the raters' agreement in the run folder the kit came from and rewrite its results
    page, where it stands beside the judge check's figures; returns the page."""
    from mlit.results import report_page
    from mlit.results.run_folder import RunFolder

    run = RunFolder.open(run_dir)  # a folder without run.json is refused here, by name
    run.write_frame("human_agreement", agree)
    return report_page.write(run)
