"""The paper's protocol, item by item, beside what a run uses: printed in the plan, kept in run.json.

Each item names the paper's value (from its §2-§4 and appendices), this run's value, and whether
they match. A `--preset paper` run on the paper's data matches on every item; the demo, a reduced
`--languages` run or a changed flag shows where it departs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from mlit.judging import judgments
from mlit.planning.plan import Plan
from mlit.results import scores


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


@cache
def paper_protocol() -> dict:
    """The paper's protocol as data (`mlit/paper/protocol.json`), written from the paper alone."""
    return json.loads((resources.files("mlit") / "paper" / "protocol.json").read_text("utf-8"))


def prompt_sha256(text: str) -> str:
    """A judge prompt's fingerprint: runs of whitespace count as one space."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def _langs(codes) -> str:
    return " ".join(sorted(codes))


def _judge_rule(plan: Plan) -> tuple[str, bool]:
    """What the judge that runs is told, from its template text: Fig. 9 itself, mlit's wording
    of its rule, or another rule."""
    from mlit.judging.judge import Judge

    judge = Judge(plan.judge.model or "openai/x", template=plan.judge.prompt or _default(plan))
    sha, paper = prompt_sha256(judge.template_text()), paper_protocol()
    if sha == paper["fig9_sha256"]:
        return "Fig. 9", True
    if sha == paper["mlit_wording_sha256"]:
        return "Fig. 9's rule in mlit's words (template paper)", True
    return f"template {judge.template_name} (another rule)", False


def _default(plan: Plan) -> str:
    return "compact" if plan.judge.self_hosted else "paper"


def _judge_decoding(plan: Plan) -> str:
    from mlit.judging.judge import Judge
    from mlit.providers import llm

    judge = Judge(plan.judge.model or "openai/x", template=plan.judge.prompt or _default(plan))
    greedy = "greedy" if llm.JUDGE_TEMPERATURE == 0 else f"T={llm.JUDGE_TEMPERATURE:g}"
    digit = "one digit" if judge.parser == "digit" and judge.max_tokens <= 2 else judge.parser
    return f"{greedy}, {digit}"


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
        value = scores.VALUES.get(verdict)
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


def _averages(exp) -> str:
    """The row average of `scores.matrix_table` over a known matrix: 50 on the diagonal and 0
    elsewhere averages to 50/n with the diagonal, 0 without."""
    import numpy as np
    import polars as pl

    rows = [
        {
            "model": r.name,
            "baseline": exp.baseline_for(lang),
            "eval_lang": lang,
            "score": 50.0 if lang == r.languages[0] else 0.0,
        }
        for r in exp.recipes
        for lang in exp.eval_languages
    ]
    table = pl.DataFrame(rows)
    known = scores.Scores(table, np.repeat(table["score"].to_numpy()[:, None], 2, axis=1))
    avg = scores.matrix_table(known, exp)["avg"][0]
    n = len(exp.eval_languages)
    if abs(avg - 50 / n) < 1e-9:
        return "every evaluation language, diagonal included"
    return "diagonal left out" if abs(avg) < 1e-9 else f"another rule ({avg:.2f} on a known row)"


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


def items(plan: Plan) -> list[Item]:
    """Each item of the paper's protocol that applies to the experiment, beside what runs."""
    exp, tc, sp = plan.experiment, plan.train, plan.sampling
    dev = sum(plan.mixtures[0].dev_counts.values()) if plan.mixtures else 0
    rule, rule_ok = _judge_rule(plan)
    dev_answers, dev_decoding = _dev_answers(tc)
    paper_value = {spec["name"]: spec["paper"] for spec in paper_protocol()["items"]}
    dropout, dropout_ok = _dropout(plan, float(paper_value["dropout"]))
    sources = _sources(plan)
    cut = plan.prompt_limit
    ours = {
        "languages": _langs(exp.all_languages()),
        "training examples per mixture": str(plan.mixtures[0].budget),
        "training sources": sources or "no data read (dry run)",
        "evaluation instructions per language": str(len(plan.eval_ids)),
        "training steps": str(tc.max_steps),
        "learning rate": f"{tc.learning_rate:g} {tc.lr_scheduler}",
        "batch": str(tc.batch_size),
        "dropout": dropout,
        "input / target tokens": f"{tc.max_input_tokens} / {tc.max_target_tokens}",
        "dev set per mixture": str(dev),
        "checkpoint rule": _selection_rule(tc),
        "dev answers": dev_answers,
        "sampling": f"nucleus p={sp.top_p:g}, T={sp.temperature:g}, up to {sp.max_tokens} tokens",
        "inference inputs": f"cut at {cut} tokens" if cut else "not cut",
        "judge rule": rule,
        "judge decoding": _judge_decoding(plan),
        "both orders, tie rule": _verdict_rule(),
        "averages": _averages(exp) if exp.table_kind == "matrix" else "",
        "baseline": exp.baseline,
        "P grid (%)": ",".join(
            str(p)
            for p in sorted({int(r.meta_dict().get("percent", r.percent)) for r in exp.recipes})
        ),
        "language orders": _orders(exp),
        "translation script": _scripts(exp),
        "§4.2 shares": (
            "pretraining documents" if plan.config.pretraining_shares else "proxy: sample text"
        )
        + ", English excluded",
    }
    # Items whose match is not string equality: the reading says more than the paper's value.
    verdicts: dict[str, bool | None] = {"judge rule": rule_ok, "dropout": dropout_ok}
    if sources is None:
        verdicts["training sources"] = None
    notes = {"dev answers": dev_decoding}
    out = []
    for spec in paper_protocol()["items"]:
        if "applies" in spec and exp.table_kind not in spec["applies"]:
            continue
        if "languages" in spec and not set(spec["languages"]) & set(exp.all_languages()):
            continue
        name = spec["name"]
        paper = spec.get("by_experiment", {}).get(exp.name, spec["paper"])
        same = verdicts[name] if name in verdicts else paper == ours[name]
        out.append(Item(name, paper, ours[name], same, spec["section"], notes.get(name, "")))
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


def as_json(report: list[Item]) -> list[dict]:
    return [asdict(i) for i in report]
