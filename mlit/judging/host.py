"""The judge our own Serve app hosts (the demo judge, or ``--judge-model-dir``): its served name,
its weights and the demo judge's template, in one place for the plan, the dry run and the phases.
"""

from __future__ import annotations

import os
from pathlib import Path

JUDGE_NAME = "mlit-judge"  # its name on the Serve app, beside the models it judges
# The demo judge's template (`mlit.judging.judge.TEMPLATES`): short enough for its small context.
DEMO_JUDGE_TEMPLATE = "compact"


def demo_judge_dir() -> Path:
    """Where the demo judge is built (`mlit.demo.judge_model`)."""
    return Path(os.environ.get("MLIT_CACHE", Path.home() / ".cache" / "mlit")) / "demo" / "judge"


def weights(model_dir: str | None) -> str:
    """The self-hosted judge's weights: ``--judge-model-dir``, else the demo judge's folder
    (which may not be built yet: `mlit.sweep.phases.judge_dir` builds it)."""
    return model_dir or str(demo_judge_dir())
