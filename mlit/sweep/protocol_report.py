"""The paper's protocol, item by item, beside what a run does: printed in the plan, kept in run.json.

Each item names the paper's value (from its §2-§4 and appendices), this run's value, and whether
they match. The dry run reads each value from the function that takes effect, on a small sample
(`protocol_readings`); at its end a run reads them again from what it did (`protocol_run`) and
rewrites run.json's report. A `--preset paper` run on the paper's data matches on every item; the
demo, a reduced `--languages` run, a changed flag or a changed function shows where it departs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mlit.judging import judgments
from mlit.planning.plan import Plan
from mlit.sweep import protocol_readings
from mlit.sweep.protocol_readings import Reading, paper_protocol


@dataclass(frozen=True)
class Item:
    name: str
    paper: str
    ours: str
    matches: bool | None  # None: cannot be told from here
    section: str = ""
    note: str = ""  # what the paper leaves open and mlit chose

    @property
    def mark(self) -> str:
        return {True: "ok", False: "DIFFERS", None: "check"}[self.matches]


def _langs(codes) -> str:
    return " ".join(sorted(codes))


def _verdict_rule() -> str:
    """Read off `pair_verdict` and the scores over their whole truth table."""
    names = {
        "win": "chosen in both orders",
        "tie": "orders disagree",
        "loss": "chosen in neither",
    }
    seen = {}
    for c1 in (1, 2):
        for c2 in (1, 2):
            seen.setdefault(judgments.pair_verdict(c1, c2), set()).add((c1, c2))
    expected = {"win": {(1, 2)}, "tie": {(1, 1), (2, 2)}, "loss": {(2, 1)}}
    parts = []
    for verdict in ("win", "tie", "loss"):
        value = judgments.VALUES.get(verdict)
        what = names[verdict] if seen.get(verdict) == expected[verdict] else str(seen.get(verdict))
        parts.append(f"{verdict} {value:g} ({what})")
    return ", ".join(parts[:2]) + f", {parts[2].split(' (')[0]}"


def _orders(exp) -> str:
    """The language orders the run trains, rebuilt from its mixtures (a missing step shows ?)."""
    by_order: dict[int, dict[int, set]] = {}
    for r in exp.recipes:
        meta = r.meta_dict()
        for o in str(meta.get("orders", "")).split(","):
            if o:
                by_order.setdefault(int(o), {})[int(meta["k"])] = set(r.languages)
    out = []
    for o in sorted(by_order):
        steps, before = [], set()
        for k in range(1, 7):
            now = by_order[o].get(k)
            new = sorted(now - before) if now is not None else []
            steps.append(new[0] if len(new) == 1 else "?")
            before = now if now is not None else before
        out.append(",".join(steps))
    return "; ".join(out)


def _selection_rule(tc) -> str:
    """Read off `selection`: which checkpoint a run keeps over a known dev curve, and what its
    metric makes of a reversed text (ROUGE-L: the longest common subsequence, 0.25; a bag of
    words would give 1.0)."""
    from mlit.method import rouge
    from mlit.training import selection

    picked = selection.Selection()
    for step, score in ((250, 0.2), (500, 0.5), (750, 0.4), (1000, 0.5)):
        picked.record(step, score)
    which = {500: "best dev", 1000: "last best dev", 750: "?"}.get(picked.best_step, "last")
    reversed_ = rouge.rouge_l("a b c d", "d c b a")
    metric = "ROUGE-L" if abs(reversed_ - 0.25) < 1e-9 else f"not ROUGE-L ({reversed_:.2f})"
    return f"{which} {metric}"


def _dev_answers(tc) -> tuple[str, str]:
    """(length, decoding) of the dev answers checkpoint selection scores (`selection`)."""
    from mlit.training import selection

    sp = selection.dev_sampling(tc)
    how = "greedy" if sp.temperature == 0 else f"T={sp.temperature:g}, p={sp.top_p:g}"
    return f"up to {sp.max_new_tokens} tokens", f"{how}; the paper does not say"


def _dropout(plan: Plan, paper: float) -> tuple[str, bool | None]:
    """The run's dropout and where it goes, from the base model's config (a local folder; a hub
    model's config is not fetched at plan time)."""
    from mlit.method import hyperparameters
    from mlit.store import model_refs

    tc = plan.train
    try:
        settings = hyperparameters.dropout_settings(_base_config(plan.base_model, model_refs))
    except (OSError, ValueError):
        return f"{tc.dropout:g} (the base model's dropout settings: not read here)", (
            None if tc.dropout == paper else False
        )
    reach = hyperparameters.dropout_reach(settings, tc.dropout_scope)
    has = ", ".join(settings) or "none"
    where = ", ".join(reach) or "nowhere"
    hidden = not hyperparameters.attention_only(reach) and bool(reach)
    return f"{tc.dropout:g} on {where} (model has: {has})", tc.dropout == paper and hidden


def _base_config(spec: str, model_refs):
    from types import SimpleNamespace

    if model_refs.parse(spec).kind == "dir":
        folder = Path(model_refs.source(spec))
        return SimpleNamespace(**json.loads((folder / "config.json").read_text()))
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec, local_files_only=True)  # a hub model, if cached


def _sources(plan: Plan) -> str | None:
    if plan.frame is None:
        return None
    import polars as pl

    ids = plan.frame.filter((pl.col("lang") == "en") & (pl.col("split") == "train"))["example_id"]
    lima, oasst = (int(ids.str.starts_with(p).sum()) for p in ("lima-", "oasst-"))
    return f"LIMA {lima} + OpenAssistant {oasst}"


def _scripts(exp) -> str:
    from mlit.data import translation
    from mlit.method import languages

    named = [
        f"{code} {languages.SCRIPTS[s][0]}"
        for code in sorted(languages.MULTI_SCRIPT & set(exp.all_languages()))
        if (s := languages.get(code).script) in languages.SCRIPTS
        and languages.SCRIPTS[s][0] in translation.prompt_for("x", code)
    ]
    return ", ".join(named) or "script not named"


def items(plan: Plan, run: dict[str, Reading] | None = None) -> list[Item]:
    """Each item of the paper's protocol that applies to the experiment, beside what runs: read
    by the dry run (`protocol_readings.dry`) and, after a run, from what it did (``run``:
    `protocol_run.observed`). Where the two disagree the run's value stands and the item says
    what the dry run read."""
    exp, tc = plan.experiment, plan.train
    paper_value = {spec["name"]: spec["paper"] for spec in paper_protocol()["items"]}
    dropout, dropout_ok = _dropout(plan, float(paper_value["dropout"]))
    dev_answers, dev_decoding = _dev_answers(tc)
    sources = _sources(plan)
    readings = {
        "languages": Reading(_langs(exp.all_languages())),
        "training sources": Reading(sources, "compare")
        if sources
        else Reading("no data read (dry run)", "check", "the data is read when it is given"),
        "dropout": Reading(dropout, {True: "ok", False: "differs", None: "check"}[dropout_ok]),
        "input / target tokens": Reading(f"{tc.max_input_tokens} / {tc.max_target_tokens}"),
        "checkpoint rule": Reading(_selection_rule(tc)),
        "dev answers": Reading(dev_answers, note=dev_decoding),
        "both orders, tie rule": Reading(_verdict_rule()),
        "P grid (%)": Reading(
            ",".join(
                str(p)
                for p in sorted({int(r.meta_dict().get("percent", r.percent)) for r in exp.recipes})
            )
        ),
        "language orders": Reading(_orders(exp)),
        "translation script": Reading(_scripts(exp)),
        **protocol_readings.dry(plan),
    }
    for name, seen in (run or {}).items():
        before = readings.get(name)
        if before is not None and before.ours != seen.ours:
            note = f"the dry run read {before.ours!r}"
            seen = Reading(seen.ours, seen.verdict, f"{seen.note}; {note}" if seen.note else note)
        readings[name] = seen
    out = []
    for spec in paper_protocol()["items"]:
        if "applies" in spec and exp.table_kind not in spec["applies"]:
            continue
        if "languages" in spec and not set(spec["languages"]) & set(exp.all_languages()):
            continue
        name = spec["name"]
        paper = spec.get("by_experiment", {}).get(exp.name)
        paper = paper or spec.get("by_kind", {}).get(exp.table_kind, spec["paper"])
        reading = readings[name]
        same = {"ok": True, "differs": False, "check": None}.get(reading.verdict)
        if reading.verdict == "compare":
            same = paper == reading.ours
        out.append(Item(name, paper, reading.ours, same, spec["section"], reading.note))
    return out


def render(report: list[Item]) -> str:
    width = max(len(i.name) for i in report)
    unknown = sum(i.matches is None for i in report)
    lines = [
        f"protocol (paper vs this run): {sum(i.matches is True for i in report)} of "
        f"{len(report)} items match"
        + (f", {unknown} cannot be told before the run (check)" if unknown else "")
    ]
    for i in report:
        same = i.ours if i.matches else f"{i.ours}   (paper: {i.paper})"
        same += f"   [{i.note}]" if i.note else ""
        lines.append(f"  {i.mark:<7} {i.name:<{width}}  {same}")
    return "\n".join(lines)


SHOWN_AT_MOST = 5  # items that differ, a line each, in a log file; more: their names, one line


def render_differences(report: list[Item], terminal: bool = True) -> str:
    """The report's first line and the items that differ, as the run ends. In a log file (not
    a terminal) with many that differ (a demo's tiny settings), one line names them; each with
    the paper's value is in run.json and on the results page."""
    head, *rest = render(report).split("\n")
    head = head.replace("this run", "as run")
    shown = [line for line, i in zip(rest, report, strict=True) if i.matches is False]
    if terminal or len(shown) <= SHOWN_AT_MOST:
        return "\n".join([head, *shown])
    names = ", ".join(i.name for i in report if i.matches is False)
    return f"{head}; {len(shown)} differ ({names}): each beside the paper's on the results page"


def as_json(report: list[Item]) -> list[dict]:
    return [asdict(i) for i in report]
