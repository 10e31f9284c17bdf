"""The judge our own Serve app hosts (the demo judge, or ``--judge-model-dir``): its served name,
its weights and the demo judge's template, in one place for the plan, the dry run and the phases.
"""

from __future__ import annotations

import os
from pathlib import Path

JUDGE_NAME = "mlit-judge"  # its name on the Serve app, beside the models it judges
DEMO_JUDGE_TEMPLATE = "compact"  # `mlit.judge.TEMPLATES`: short enough for a 1M-parameter judge


def demo_judge_dir() -> Path:
    """Where the demo judge is built (`mlit.demo_judge`)."""
    return Path(os.environ.get("MLIT_CACHE", Path.home() / ".cache" / "mlit")) / "demo" / "judge"


def weights(model_dir: str | None) -> str:
    """The self-hosted judge's weights: ``--judge-model-dir``, else the demo judge's folder
    (which may not be built yet: `mlit.phases.judge_dir` builds it)."""
    return model_dir or str(demo_judge_dir())
