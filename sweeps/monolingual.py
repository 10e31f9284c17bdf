r"""§3.1, Fig. 1: Monolingual instruction tuning: one model per language, each scored on every language
against the monolingual model of that language (a 12 x 12 matrix).

Demo (local Ray, CPU, bundled sample, tiny models, the demo judge on Ray Serve):

    python sweeps/monolingual.py
    python sweeps/monolingual.py --dry-run           # the plan: models, generations, judge calls

On a cluster (`ray up ray_cluster.yaml` first):

    ray job submit --working-dir . -- python sweeps/monolingual.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_script
from mlit.planning.config import SweepConfig

CONFIG = SweepConfig(experiment="monolingual")

if __name__ == "__main__":
    run_script(CONFIG)
