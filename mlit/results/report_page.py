"""`report.html`: one page per run folder with everything a reader of the run needs.

Built from the run folder alone (run.json, tables/, figures/, the Parquet files), like the tables
and figures themselves, so `mlit report RUN_DIR` rebuilds it anywhere. Figures are inlined as PNG
data, so the page is one self-contained file that opens offline; the Parquet files and the log are
linked by relative paths, which hold as long as the page stays in its folder.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import polars as pl

from mlit.method import experiments
from mlit.planning.config import DEMO_NOTE
from mlit.plumbing.atomic import atomic_write
from mlit.results.plots import CURVES
from mlit.results.run_folder import RUN_ID, RunFolder

PAGE = "report.html"

# What a reader needs to know about the side tables, by file stem.
CAPTIONS = {
    "order_consistency": (
        "Order consistency: each comparison is judged with the answers in both orders (§2); "
        "the share of pairs whose verdict does not flip with the order."
    ),
    "appE_response_language": (
        "Response language (Appendix E): the share of answers written in the language asked for."
    ),
    "compare_paper": "This run beside the paper's published numbers (ours - paper = diff).",
}

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
.notice { background: #fff4d6; border: 1px solid #e0b84c; padding: .6em 1em; }
.failed { background: #fde2e2; border: 1px solid #d33; padding: .6em 1em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
table.text td { text-align: left; }
.differs { color: #b00; font-weight: 600; }
.note { color: #555; font-size: .9em; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def _e(value) -> str:
    return html.escape(str(value))


def table_html(
    rows: list[list], header: list[str], marks: list[str] | None = None, css: str = ""
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{marks[i]}"' if marks and marks[i] else ""
        cells = "".join(f"<td>{'–' if v in (None, '') else _e(v)}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _csv_table(path: Path, flagged: set[str] = frozenset()) -> str:
    # Strings as written: the CSV already holds the precision the tables are written with.
    frame = pl.read_csv(path, infer_schema=False)
    header = [f"{c} ⚠" if c in flagged else c for c in frame.columns]
    return table_html([list(r) for r in frame.iter_rows()], header)


def _md_note(path: Path) -> str:
    """The note written under a table in its Markdown file (the average rule, a correlation)."""
    if not path.exists():
        return ""
    lines = [ln for ln in path.read_text("utf-8").splitlines() if ln and not ln.startswith("|")]
    return " ".join(lines)


def figure_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'
        f"<figcaption class=note>{_e(path.name)}</figcaption></figure>"
    )


def _tables(run: RunFolder, main_stem: str | None, flagged: set[str] = frozenset()) -> str:
    stems = sorted(p.stem for p in run.tables.glob("*.csv"))
    if main_stem in stems:  # the experiment's own table first
        stems.remove(main_stem)
        stems.insert(0, main_stem)
    out = []
    for stem in stems:
        out.append(f"<h3>{_e(stem)}</h3>")
        if stem in CAPTIONS:
            out.append(f"<p class=note>{_e(CAPTIONS[stem])}</p>")
        marked = flagged if stem == main_stem else set()
        out.append(_csv_table(run.tables / f"{stem}.csv", marked))
        if marked:
            out.append(
                f"<p class=note>⚠ the judge check found this judge within noise of chance in "
                f"{_e(', '.join(sorted(marked)))}: scores there are not evidence either way.</p>"
            )
        note = _md_note(run.tables / f"{stem}.md")
        if note:
            out.append(f"<p class=note>{_e(note)}</p>")
    return "\n".join(out) or "<p>No tables: the run did not reach its report.</p>"


def _phases(meta: dict) -> str:
    rows = []
    for name, value in meta.get("phases", {}).items():
        if isinstance(value, dict):  # records for the protocol report (dicts) are not counts
            shown = {k: v for k, v in value.items() if k != "seconds" and not isinstance(v, dict)}
            detail = ", ".join(f"{k} {v}" for k, v in shown.items())
            rows.append([name, value.get("seconds", ""), detail])
        else:
            rows.append([name, value, ""])
    return table_html(rows, ["phase", "seconds", "counts"], css="text") if rows else ""


def _human_kit(run: RunFolder) -> dict[str, str]:
    """The human kit's judge-human agreement per language (`mlit human import` on this run), as
    a fraction beside the check's, with the items rated."""
    if not run.has_frame("human_agreement"):
        return {}
    return {
        r["eval_lang"]: f"{r['judge_human'] / 100:.3f} ({r['items']} items)"
        for r in run.frame("human_agreement").iter_rows(named=True)
    }


def _reliability(run: RunFolder, langs) -> tuple[str, set[str]]:
    """The judge's agreement with humans per evaluation language (the `mlit judge check` table
    the sweep was given, and the human kit's where raters filled it in), beside this run's own
    order consistency; and the languages where the check found it within noise of chance."""
    kit = _human_kit(run)
    check = run.frame("judge_check") if run.has_frame("judge_check") else None
    if check is None and not kit:
        return "", set()
    if check is None:
        check = pl.DataFrame({"language": sorted(kit)}).with_columns(
            pairs=None, agreement=None, agreement_ci_low=None, agreement_ci_high=None,
            order_consistency=None, within_chance=False,
        )  # fmt: skip
    else:
        missing = sorted(set(kit) - set(check["language"]))
        if missing:
            check = pl.concat([check, pl.DataFrame({"language": missing})], how="diagonal_relaxed")
    if langs:
        check = check.filter(pl.col("language").is_in(list(langs)))
    ours = {}
    if (run.tables / "order_consistency.csv").exists():
        for r in pl.read_csv(run.tables / "order_consistency.csv").iter_rows(named=True):
            ours[r["eval_lang"]] = f"{1 - r['disagreement']:.3f}"
    rows, marks, chance = [], [], set()
    for r in check.iter_rows(named=True):
        low, high = r["agreement_ci_low"], r["agreement_ci_high"]
        interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        agree = "–" if r["agreement"] is None else f"{r['agreement']:.3f}{interval}"
        within = bool(r["within_chance"])
        order = r["order_consistency"]
        rows.append([r["language"], r["pairs"], agree, "–" if order is None else f"{order:.3f}",
                     ours.get(r["language"], ""), kit.get(r["language"], ""),
                     "within noise of chance" if within else ""])  # fmt: skip
        marks.append("differs" if within else "")
        if within:
            chance.add(r["language"])
    header = ["language", "pairs checked", "agreement with humans [95% CI]",
              "order consistency (check)", "order consistency (this run)",
              "agreement with this run's raters", ""]  # fmt: skip
    note = (
        "<p class=note>From <code>mlit judge check</code> on human preference pairs "
        "(<code>--judge-check</code>) and from this run's own raters (<code>mlit human "
        "import</code>): a win in both orders counts 1, a tie 0.5, a loss 0; 0.5 is chance. "
        "The paper's raters agreed with its judge 75-79.5% of the time (App. D).</p>"
    )
    return note + table_html(rows, header, marks), chance


def _curves(run: RunFolder) -> str:
    """Each model's training as it ran, from train.parquet (whether or not a tracker was)."""
    note = (
        "<p class=note>Training loss at each logged step and dev ROUGE-L at each evaluation, "
        "per model trained for this run or reused from the store; ★ marks the checkpoint kept "
        "(the best dev ROUGE-L, §2).</p>"
    )
    rows = []
    if run.has_frame("train"):
        for r in run.frame("train").iter_rows(named=True):
            best = r.get("best_dev_rouge_l")
            rows.append([r["mixture"], r.get("best_step"), "" if best is None else f"{best:.4f}",
                         r.get("status", ""), r.get("mlflow_run_id") or ""])  # fmt: skip
    header = ["model", "checkpoint kept (step)", "its dev ROUGE-L", "status", "MLflow run"]
    return note + figure_html(run.figures / CURVES) + table_html(rows, header)


def _protocol(meta: dict) -> str:
    items = meta.get("protocol") or []
    if not items:
        return "<p>No protocol report in run.json.</p>"
    rows = [[i["name"], i["paper"], i["ours"]] for i in items]
    marks = ["differs" if i["matches"] is False else "" for i in items]
    differs = sum(i["matches"] is False for i in items)
    summary = f"<p>{len(items) - differs} of {len(items)} items as in the paper.</p>"
    return summary + table_html(rows, ["item", "paper", "this run"], marks, "text")


def _provenance(meta: dict) -> str:
    prov = meta.get("provenance", {})
    rows = [
        ["run id", meta.get(RUN_ID) or "none (written before mlit kept run ids)"],
        ["git commit", prov.get("git_sha") or "unknown"],
        ["command", " ".join(prov.get("command") or [])],
        ["started", prov.get("time", "")],
        ["python", prov.get("python", "")],
        *[[name, version] for name, version in sorted(prov.get("versions", {}).items())],
    ]
    config = json.dumps(meta.get("config", {}), indent=1, ensure_ascii=False)
    return (
        table_html(rows, ["", ""], css="text")
        + f"<details><summary>configuration</summary><pre>{_e(config)}</pre></details>"
    )


def _files(run: RunFolder) -> str:
    links = [
        f'<li><a href="{_e(p.name)}">{_e(p.name)}</a></li>'
        for p in sorted(run.path.glob("*.parquet")) + sorted(run.path.glob("*.json"))
    ]
    logs = run.path / "logs"
    if logs.is_dir():
        links += [
            f'<li><a href="logs/{_e(p.name)}">logs/{_e(p.name)}</a></li>'
            for p in sorted(logs.glob("*.log"))
        ]
    return "<ul>" + "".join(links) + "</ul>"


def write(run: RunFolder) -> Path:
    """Write ``report.html`` into the run folder from its files; returns its path."""
    meta = run.meta()
    try:
        exp = experiments.get(meta["experiment"])
        title, section, stem = f"{exp.figure}: {exp.title}", exp.section, exp.table_stem
    except (KeyError, ValueError):
        title, section, stem = str(meta.get("experiment", "mlit run")), "", None
    status = meta.get("status", "unfinished")
    parts = [
        f"<h1>{_e(title)}</h1>",
        f"<p>Paper section {_e(section)} · experiment <code>{_e(meta.get('experiment'))}</code>"
        f" · status <b>{_e(status)}</b> · run folder <code>{_e(run.path.resolve())}</code></p>",
    ]
    if meta.get("demo"):
        parts.append(f"<p class=notice>{_e(DEMO_NOTE)}</p>")
    if status != "ok":
        parts.append(
            f"<p class=failed>This run's status is {_e(status)}: see the phases below and the "
            "log; finished work is stored and a rerun continues it.</p>"
        )
    reliability, chance = _reliability(run, exp.eval_languages if stem else ())
    figures = sorted(p for p in run.figures.glob("*.png") if p.name != CURVES)
    parts += ["<h2>Figures</h2>", *(figure_html(p) for p in figures)]
    parts += ["<h2>Tables</h2>", _tables(run, stem, chance)]
    if (run.figures / CURVES).exists():
        parts += ["<h2>Training curves</h2>", _curves(run)]
    if reliability:
        parts += ["<h2>The judge's reliability per language</h2>", reliability]
    parts += ["<h2>Phases</h2>", _phases(meta)]
    parts += ["<h2>Protocol: this run beside the paper's</h2>", _protocol(meta)]
    parts += ["<h2>Provenance</h2>", _provenance(meta)]
    parts += ["<h2>Files</h2>", _files(run)]
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    return atomic_write(run.path / PAGE, page)
