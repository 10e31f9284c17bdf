r"""Every experiment of the paper in one run, sharing trained models through the store.

Each experiment writes its own run folder under results/paper/; a model that two experiments need
(monolingual English, "all six" = P=100 over six languages, ...) is trained once.

    python sweeps/paper.py --dry-run                  # the full plan on the demo preset
    python sweeps/paper.py --preset paper --dry-run --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o
    ray job submit --working-dir . -- python sweeps/paper.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_paper
from mlit.planning.config import SweepConfig

# Every experiment runs; "bilingual" here only lets --pairs through (it chooses that experiment's
# pairs, and the others get none).
CONFIG = SweepConfig(experiment="bilingual", output="results/paper")

if __name__ == "__main__":
    run_paper(CONFIG)
