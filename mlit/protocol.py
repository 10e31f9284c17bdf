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

from mlit import judgments, scores
from mlit.plan import Plan


@dataclass(frozen=True)
class Item:
    name: str
    paper: str
    ours: str
    matches: bool | None  # None: cannot be told from here
    section: str = ""

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
    from mlit.judge import Judge

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
    from mlit import llm
    from mlit.judge import Judge

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


def items(plan: Plan) -> list[Item]:
    """Each item of the paper's protocol that applies to the experiment, beside what runs."""
    exp, tc, sp = plan.experiment, plan.train, plan.sampling
    dev = sum(plan.mixtures[0].dev_counts.values()) if plan.mixtures else 0
    rule, rule_ok = _judge_rule(plan)
    ours = {
        "languages": _langs(exp.all_languages()),
        "training examples per mixture": str(plan.mixtures[0].budget),
        "evaluation instructions per language": str(len(plan.eval_ids)),
        "training steps": str(tc.max_steps),
        "learning rate": f"{tc.learning_rate:g} {tc.lr_scheduler}",
        "batch": str(tc.batch_size),
        "dropout": f"{tc.dropout:g}",
        "input / target tokens": f"{tc.max_input_tokens} / {tc.max_target_tokens}",
        "dev set per mixture": str(dev),
        "sampling": f"nucleus p={sp.top_p:g}, T={sp.temperature:g}, up to {sp.max_tokens} tokens",
        "judge rule": rule,
        "judge decoding": _judge_decoding(plan),
        "both orders, tie rule": _verdict_rule(),
        "baseline": exp.baseline,
        "P grid (%)": ",".join(
            str(p)
            for p in sorted({int(r.meta_dict().get("percent", r.percent)) for r in exp.recipes})
        ),
        "language orders": _orders(exp),
        "§4.2 shares": (
            "pretraining documents" if plan.config.pretraining_shares else "proxy: sample text"
        )
        + ", English excluded",
    }
    out = []
    for spec in paper_protocol()["items"]:
        if "applies" in spec and exp.table_kind not in spec["applies"]:
            continue
        paper = spec.get("by_experiment", {}).get(exp.name, spec["paper"])
        mine = ours[spec["name"]]
        same = rule_ok if spec["name"] == "judge rule" else paper == mine
        out.append(Item(spec["name"], paper, mine, same, spec["section"]))
    return out


def render(report: list[Item]) -> str:
    width = max(len(i.name) for i in report)
    lines = [
        f"protocol (paper vs this run): {sum(i.matches is True for i in report)} of "
        f"{len(report)} items match"
    ]
    for i in report:
        same = i.ours if i.matches else f"{i.ours}   (paper: {i.paper})"
        lines.append(f"  {i.mark:<7} {i.name:<{width}}  {same}")
    return "\n".join(lines)


def as_json(report: list[Item]) -> list[dict]:
    return [asdict(i) for i in report]
