"""What the trainer did as it ran (`trainer_arguments.as_run`), read by the protocol report
(issue 54): a real training run in this process, once as built and once with a linear schedule
forced onto the Trainer's arguments after mlit built them and its dev set capped inside
selection. (Last in the session's order: a training run in the test process starts a process
group that stays.)"""

import json
import os

import polars as pl
import pytest

from mlit.method.hyperparameters import TrainConfig
from mlit.planning import plan as planning
from mlit.planning.config import SweepConfig
from mlit.results.run_folder import RunFolder
from mlit.sweep import protocol_report, protocol_run
from mlit.training import selection, trainer, trainer_arguments

DATA = [(f"Say {w}.", w) for w in ("yes", "no", "maybe", "never")]
CFG = TrainConfig.paper(
    max_steps=6, batch_size=4, per_device_batch_size=4, eval_every=6, dev_max_new_tokens=4
)


@pytest.fixture
def own_environment(monkeypatch):
    """The variables a standalone training run sets for DeepSpeed, given back afterwards: a
    subprocess of a later test must not inherit this process's port."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        # Set first, so that a variable absent now is removed again at the end.
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not os.environ[name]:
            monkeypatch.delenv(name)


def test_the_trainer_records_what_ran_and_the_report_reads_it(
    tiny_base, tmp_path, monkeypatch, own_environment
):
    from transformers import TrainingArguments

    as_built = trainer.train_model(str(tiny_base), DATA * 2, DATA, CFG, tmp_path / "a").as_run
    assert as_built["schedule"] == "1e-05 constant" and as_built["batch"] == 4
    assert (as_built["dev_scored"], as_built["trained_rows"], as_built["steps"]) == (4, 8, 6)

    monkeypatch.setattr(
        trainer,
        "training_arguments",
        lambda cfg, work, world, gpu: TrainingArguments(
            **trainer_arguments.keywords(cfg, work, world, gpu)
            | {"lr_scheduler_type": "linear", "warmup_steps": 2}
        ),
    )
    scored = selection.dev_score
    monkeypatch.setattr(selection, "dev_score", lambda m, t, dev, cfg: scored(m, t, dev[:2], cfg))
    run = trainer.train_model(str(tiny_base), DATA * 2, DATA, CFG, tmp_path / "m").as_run
    assert run["steps"] == 6 and run["train_rows"] == 8 and run["dev_rows"] == 4
    assert run["dev_scored"] == 2 and run["schedule"].endswith("(the rate changes)")
    rates = [lr for _, lr in run["learning_rates"]]
    assert rates[0] < rates[1] <= 1e-05 and rates[-1] < rates[1]  # warmed up, then down

    paper = planning.prepare(
        SweepConfig(experiment="monolingual", preset="paper", dry_run=True, base_model="X/y",
                    judge="openai/x")
    )  # fmt: skip
    folder = RunFolder(tmp_path / "run", "r1")
    folder.write_frame("train", pl.DataFrame({"model_key": ["k"], "as_run": [json.dumps(run)]}))
    items = {
        i.name: i for i in protocol_report.items(paper, protocol_run.observed(paper, folder, {}))
    }
    assert items["learning rate"].matches is False
    assert "the dry run read '1e-05 constant'" in items["learning rate"].note
    assert items["dev set per mixture"].matches is False
    assert items["dev set per mixture"].ours == "2 of 4 dev examples scored"
