"""One training run with checkpoints, as its own process (tests/training/test_checkpoints.py kills it).

    python tests/checkpoint_run.py BASE STORE OUT [--kill-at STEP]

With ``--kill-at``, the process SIGKILLs itself when it reports that step's dev score: after
the checkpoints before it are in the store, before the one at that step is written.
"""

import json
import os
import signal
import sys

from mlit.training import checkpoints, trainer
from mlit.training.trainer import TrainConfig

EXAMPLES = [
    (f"Question {i}: name a {thing}.", f"A {thing} number {i} is a {thing}.")
    for i, thing in enumerate(["colour", "fruit", "city", "animal", "river"] * 4)
]
DEV = EXAMPLES[:4]
CONFIG = TrainConfig.demo(
    max_steps=20,
    eval_every=5,
    batch_size=4,
    per_device_batch_size=2,
    dev_max_new_tokens=6,
    learning_rate=3e-3,
)


def main() -> None:
    base, store, out = sys.argv[1:4]
    kill_at = int(sys.argv[5]) if len(sys.argv) > 5 else None

    def report(metrics: dict) -> None:
        if metrics["step"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    ck = checkpoints.Checkpointing(store, "model-under-test", every=5)
    result = trainer.train_model(base, EXAMPLES, DEV, CONFIG, out, report=report, checkpointing=ck)
    print(
        json.dumps(
            {
                "resumed_from_step": result.resumed_from_step,
                "attempt": result.attempt,
                "best_step": result.best_step,
                "curve": result.curve,
            }
        )
    )


if __name__ == "__main__":
    main()
