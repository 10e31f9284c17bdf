r"""§3.4, Fig. 6: The 12 languages split at random into 6 pairs, 50/50 each; every pair is scored on the
other 10 languages and compared with the two monolingual models of its languages.

Demo (local Ray, CPU, bundled sample, tiny models, the demo judge on Ray Serve):

    python sweeps/bilingual.py
    python sweeps/bilingual.py --dry-run           # the plan: models, generations, judge calls

On a cluster (`ray up ray_cluster.yaml` first):

    ray job submit --working-dir . -- python sweeps/bilingual.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_script
from mlit.planning.config import SweepConfig

CONFIG = SweepConfig(experiment="bilingual")

if __name__ == "__main__":
    run_script(CONFIG)
