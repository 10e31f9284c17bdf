"""The paper's protocol, item by item, beside what a run uses: printed in the plan, kept in run.json.

Each item names the paper's value (from its §2-§4 and appendices), this run's value, and whether
they match. A `--preset paper` run on the paper's data matches on every item; the demo, a reduced
`--languages` run or a changed flag shows where it departs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from mlit import data, experiments, mixtures
from mlit.hyperparameters import TrainConfig
from mlit.judge import TEMPLATES
from mlit.languages import LANGUAGE_ORDERS
from mlit.plan import Plan

PAPER = TrainConfig.paper()


@dataclass(frozen=True)
class Item:
    name: str
    paper: str
    ours: str
    matches: bool | None  # None: cannot be told from here (a template file, checked by hand)

    @property
    def mark(self) -> str:
        return {True: "ok", False: "DIFFERS", None: "check"}[self.matches]


def _langs(codes) -> str:
    return " ".join(sorted(codes))


def _judge_rule(plan: Plan) -> tuple[str, bool | None]:
    name = plan.judge.prompt or ("compact" if plan.judge.self_hosted else "paper")
    if name in TEMPLATES:
        return f"template {name}", name == "paper"
    return f"template file {name}", None


def items(plan: Plan) -> list[Item]:
    exp, tc, sp = plan.experiment, plan.train, plan.sampling
    full = experiments.get(exp.name, plan.config.seed)
    dev = sum(plan.mixtures[0].dev_counts.values()) if plan.mixtures else 0
    rule, rule_ok = _judge_rule(plan)
    out = [
        ("languages", _langs(full.all_languages()), _langs(exp.all_languages())),
        ("training examples per mixture", str(mixtures.PAPER_BUDGET), str(plan.mixtures[0].budget)),
        (
            "evaluation instructions per language",
            str(data.PAPER_EVAL_SIZE),
            str(len(plan.eval_ids)),
        ),
        ("training steps", str(PAPER.max_steps), str(tc.max_steps)),
        (
            "learning rate",
            f"{PAPER.learning_rate:g} {PAPER.lr_scheduler}",
            f"{tc.learning_rate:g} {tc.lr_scheduler}",
        ),
        ("batch (exact, any worker count)", str(PAPER.batch_size), str(tc.batch_size)),
        ("dropout", f"{PAPER.dropout:g}", f"{tc.dropout:g}"),
        (
            "input / target tokens",
            f"{PAPER.max_input_tokens} / {PAPER.max_target_tokens}",
            f"{tc.max_input_tokens} / {tc.max_target_tokens}",
        ),
        ("dev set per mixture", str(mixtures.PAPER_DEV_SIZE), str(dev)),
        ("checkpoint rule", "best dev ROUGE-L", "best dev ROUGE-L"),
        (
            "sampling",
            "nucleus p=0.9, T=0.7, up to 512 tokens",
            f"nucleus p={sp.top_p:g}, T={sp.temperature:g}, up to {sp.max_tokens} tokens",
        ),
        ("judge rule", "template paper", rule),
        ("judge decoding", "greedy, one digit", "greedy, one digit"),
        ("both orders", "yes", "yes"),
        ("tie rule", "orders disagree = tie = 0.5", "orders disagree = tie = 0.5"),
        ("baseline", full.baseline, exp.baseline),
        ("averages", "diagonal 50 included (Fig. 1)", "diagonal 50 included (Fig. 1)"),
    ]
    if exp.table_kind == "fraction":
        grid = sorted(int(r.meta_dict()["percent"]) for r in exp.recipes)
        out.append(
            ("P grid (%)", ",".join(map(str, experiments.PERCENTS)), ",".join(map(str, grid)))
        )
    if exp.table_kind == "count":
        out.append(
            (
                "language orders",
                "; ".join(",".join(o) for o in LANGUAGE_ORDERS),
                "; ".join(",".join(o) for o in LANGUAGE_ORDERS),
            )
        )
    if exp.table_kind == "pretraining":
        given = plan.config.pretraining_shares
        shares = "pretraining documents" if given else "proxy: sample text"
        out.append(
            (
                "§4.2 shares",
                "pretraining documents, English excluded",
                f"{shares}, English excluded",
            )
        )
    result = [Item(name, paper, ours, paper == ours) for name, paper, ours in out]
    return [replace(i, matches=rule_ok) if i.name == "judge rule" else i for i in result]


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
