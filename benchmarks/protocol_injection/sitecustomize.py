"""A contributor's bug, injected at run time from outside mlit's files (issue 54's acceptance).

On PYTHONPATH, Python imports this in every process of a run (the driver and Ray's workers). It
waits for two of mlit's modules to load and changes what they do, not what they are configured
with: the Trainer gets a linear schedule with warmup after mlit built its arguments, and the
generation client sends temperature and top-p swapped. `benchmarks/protocol_injected.py` runs
the demo with it and reads what the run's protocol report says.
"""

import importlib.abc
import importlib.machinery
import sys

TARGETS = ("mlit.training.trainer", "mlit.generation.answer_client")


def _change(name: str, module) -> None:
    if name == "mlit.training.trainer":
        from transformers import TrainingArguments

        from mlit.training import trainer_arguments

        def linear(cfg, work, world, on_gpu):
            keywords = trainer_arguments.keywords(cfg, work, world, on_gpu)
            warmup = max(1, cfg.max_steps // 10)
            return TrainingArguments(
                **{**keywords, "lr_scheduler_type": "linear", "warmup_steps": warmup}
            )

        module.training_arguments = linear
    else:
        build = module.request_body

        def swapped(task, params):
            body = build(task, params)
            body["temperature"], body["top_p"] = body["top_p"], body["temperature"]
            return body

        module.request_body = swapped


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _change(name, module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _AfterImport())
