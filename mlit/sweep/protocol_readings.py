"""What the dry run reads for the protocol report: each item from the function that takes effect,
called on a small sample (the trainer's arguments, the bodies the clients build, the
instructions generation and judging iterate, the tables written from known cells), never from
the config it was given. `mlit.sweep.protocol_run` reads the same items from what a run did.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from mlit.planning.plan import Plan


@cache
def paper_protocol() -> dict:
    """The paper's protocol as data (`mlit/paper/protocol.json`), written from the paper alone."""
    return json.loads((resources.files("mlit") / "paper" / "protocol.json").read_text("utf-8"))


@dataclass(frozen=True)
class Reading:
    """One item's value as read. ``verdict``: "compare" (with the paper's value, as text), or
    decided here: "ok", "differs", "check" (cannot be told, ``note`` says why)."""

    ours: str
    verdict: str = "compare"
    note: str = ""


# --------------------------------------------------------------------------------------------
# How a value reads: shared by the dry run and the run


def sampling_text(decodings) -> str:
    """Generation's decoding, from the bodies' decoding keys (`openai_http.decoding_of`)."""
    parts = []
    for key in sorted(decodings):
        d = json.loads(key)
        p = f"p={d['top_p']:g}" if "top_p" in d else "p=server default"
        t = f"T={d['temperature']:g}" if "temperature" in d else "T=server default"
        n = f"up to {d['max_tokens']} tokens" if "max_tokens" in d else "no token limit"
        parts.append(f"nucleus {p}, {t}, {n}")
    return "; ".join(parts) or "no request"


def judge_decoding_text(decodings, parser: str) -> str:
    """The judge's decoding, from its bodies' decoding keys, and its parser."""
    parts = []
    for key in sorted(decodings):
        d = json.loads(key)
        if "temperature" not in d:
            how = "the provider's default temperature"
        else:
            how = "greedy" if d["temperature"] == 0 else f"T={d['temperature']:g}"
        digit = parser == "digit" and d.get("max_tokens", 10**9) <= 2
        parts.append(f"{how}, {'one digit' if digit else parser}")
    return "; ".join(parts) or "no request"


def order_text(positions, where: str = "prompts sent") -> Reading:
    """The order swap, from where the candidate's answer stood in each prompt
    (`mlit.judging.pairs.Seen`)."""
    swapped, same = positions.get("swapped", 0), positions.get("same order twice", 0)
    told = swapped + same
    if not told:
        return Reading("no prompt told apart", "check", "no prompt held both answers distinctly")
    if same:
        return Reading(f"{same} of {told} calls showed the pair in one order twice", "differs")
    return Reading("each pair in both orders", note=f"read from {told} {where}")


def counts_text(values, unit: str = "") -> str:
    """One number, or the range of several (by model or language)."""
    values = sorted(set(values))
    if not values:
        return "none"
    if len(values) == 1:
        return f"{values[0]}{unit}"
    return f"{values[0]} to {values[-1]}{unit} (not the same everywhere)"


def baseline_text(plan: Plan, compared) -> str:
    """What each comparison's baseline is, from its (baseline, eval language) pairs: the
    model tuned on that language alone (monolingual), the untuned base model, or another."""
    from mlit.method.experiments import BASE

    langs_of = {m.name: tuple(m.languages) for m in plan.mixtures}
    kinds = set()
    for baseline, lang in compared:
        if baseline == BASE:
            kinds.add("base")
        elif langs_of.get(baseline) == (lang,):
            kinds.add("monolingual")
        else:
            kinds.add(f"{baseline} for {lang}")
    return ", ".join(sorted(kinds)) or "no comparison"


# --------------------------------------------------------------------------------------------
# The dry run's readings


def dry(plan: Plan) -> dict[str, Reading]:
    """Each item read before the run, by calling what takes effect."""
    out = {}
    out.update(_training(plan))
    out.update(_data(plan))
    out.update(_clients(plan))
    out.update(_tables(plan))
    return out


def _training(plan: Plan) -> dict[str, Reading]:
    """The trainer's arguments as `trainer_arguments.keywords` builds them for this plan's
    workers."""
    from mlit.training import trainer_arguments

    args = trainer_arguments.keywords(
        plan.train, Path(tempfile.gettempdir()), plan.compute.workers, False
    )
    rate = f"{args['learning_rate']:g} {args['lr_scheduler_type']}"
    if args.get("warmup_steps") or args.get("warmup_ratio"):
        rate += f" after {args.get('warmup_steps') or args.get('warmup_ratio')} warmup"
    batch = (
        args["per_device_train_batch_size"]
        * args["gradient_accumulation_steps"]
        * plan.compute.workers
    )
    return {
        "training steps": Reading(str(args["max_steps"])),
        "learning rate": Reading(rate),
        "batch": Reading(str(batch)),
    }


def _data(plan: Plan) -> dict[str, Reading]:
    """The rows each job hands the trainer, and the instructions generation and judging
    iterate (`Plan.generation_tasks`, `Plan.judge_pairs`)."""
    if plan.frame is None or not plan.jobs:
        why = "no data read (dry run at the paper's scale): the plan's numbers"
        dev = sum(plan.mixtures[0].dev_counts.values()) if plan.mixtures else 0
        return {
            "training examples per mixture": Reading(str(plan.mixtures[0].budget), note=why),
            "dev set per mixture": Reading(str(dev), note=why),
            "evaluation instructions per language": Reading(str(len(plan.eval_ids)), note=why),
            "baseline": Reading(baseline_text(plan, _compared(plan.experiment.comparisons()))),
        }
    rows = [len(j.train) + len(j.dev) for j in plan.jobs]
    dev = [len(j.dev) for j in plan.jobs]
    tasks = plan.generation_tasks()
    pairs = plan.judge_pairs({})
    return {
        "training examples per mixture": Reading(counts_text(rows)),
        "dev set per mixture": Reading(counts_text(dev)),
        "evaluation instructions per language": Reading(
            instructions_text(
                [(t.model, t.lang, t.example_id) for t in tasks],
                [(p.candidate, p.eval_lang, p.example_id) for p in pairs],
            )
        ),
        "baseline": Reading(baseline_text(plan, {(p.baseline, p.eval_lang) for p in pairs})),
    }


def _compared(comparisons) -> set:
    return {(baseline, lang) for _, baseline, lang in comparisons}


def instructions_text(generated, judged) -> str:
    """Instructions per language, from the (model, language, example) of what generation and
    judging go through: one number where every model and language has the same."""
    per = lambda items: {  # noqa: E731
        key: len(ids) for key, ids in _group(items).items()
    }
    gen, jud = per(generated), per(judged)
    if not jud:
        return counts_text(gen.values())
    if set(gen.values()) == set(jud.values()) and len(set(gen.values())) == 1:
        return str(next(iter(gen.values())))
    return f"{counts_text(gen.values())} generated, {counts_text(jud.values())} judged"


def _group(items) -> dict:
    out: dict = {}
    for model, lang, example in items:
        out.setdefault((model, lang), set()).add(example)
    return out


def _clients(plan: Plan) -> dict[str, Reading]:
    """The bodies the generation client and the judge build, and the judge's prompts in both
    orders, for one sample."""
    from mlit.generation import answer_client
    from mlit.judging import pairs as pairs_rule
    from mlit.providers import llm, openai_http

    task = answer_client.Task("m", "k", "e1", "en", "Name a colour.")
    body = answer_client.request_body(task, plan.sampling)
    judge = plan.judge.build()
    judge_body = llm.chat_body("m", "p", judge.max_tokens, judge.top_logprobs)
    sample = pairs_rule.Pair(
        "cand", "base", "en", "e1", "Name a colour.", "The candidate says blue.",
        "The baseline says green.", "kc", "kb",
    )  # fmt: skip
    seen = pairs_rule.Seen()
    for order in (0, 1):
        seen.prompt(sample, order, pairs_rule.prompt(judge, sample, order))
    return {
        "sampling": Reading(sampling_text([openai_http.decoding_of(body)])),
        "judge rule": judge_rule(pairs_rule.template_sha256(judge.template_text()), judge),
        "judge decoding": Reading(
            judge_decoding_text([openai_http.decoding_of(judge_body)], judge.parser)
        ),
        "order swap": order_text(seen.positions, "prompts of a sample pair"),
        "inference inputs": _inputs(plan),
    }


def judge_rule(sha: str, judge) -> Reading:
    """What the judge is told, from its template's fingerprint: Fig. 9, mlit's wording of its
    rule, or another rule."""
    paper = paper_protocol()
    if sha == paper["fig9_sha256"]:
        return Reading("Fig. 9", "ok")
    if sha == paper["mlit_wording_sha256"]:
        return Reading("Fig. 9's rule in mlit's words (template paper)", "ok")
    return Reading(f"template {judge.template_name} (another rule)", "differs")


def _inputs(plan: Plan) -> Reading:
    """Whether evaluation instructions will be cut as training cuts them: the base model's
    tokenizer read here where it is local (its ``tokenizer.json``, without importing torch: the
    dry run stays light). The run says whether it cut (`phases.cut_as_run`)."""
    from mlit.store import model_refs

    limit = plan.prompt_limit
    if limit is None:
        return Reading("not cut")
    later = Reading(f"cut at {limit} tokens", "check", "the tokenizer is read when the run starts")
    try:
        if model_refs.parse(plan.base_model).kind != "dir":
            return later
        path = Path(model_refs.source(plan.base_model)) / "tokenizer.json"
    except ValueError:
        return later
    if not path.exists():
        return later
    try:
        import tokenizers

        tokenizers.Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust library raises its own kinds
        return Reading(f"not cut (the tokenizer cannot be read: {err})", "differs")
    return Reading(f"cut at {limit} tokens")


def _tables(plan: Plan) -> dict[str, Reading]:
    """The tables written from known cells by the run's own functions, read back."""
    import shutil

    from mlit.sweep import protocol_tables

    exp = plan.experiment
    folder, cells = protocol_tables.written_from_known(exp)
    try:
        text, ok = protocol_tables.averages(exp, folder, cells)
        out = {"averages": Reading(text, "ok" if ok else "differs")}
        if exp.table_kind == "pretraining":
            out["§4.2 shares"] = shares_text(
                plan.config.pretraining_shares is not None,
                protocol_tables.english_in_correlation(folder, exp),
            )
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def shares_text(documents: bool, english: bool | None) -> Reading:
    source = "pretraining documents" if documents else "proxy: sample text"
    if english is None:
        return Reading(f"{source}, no table written", "differs")
    return Reading(f"{source}, English {'included' if english else 'excluded'}")
