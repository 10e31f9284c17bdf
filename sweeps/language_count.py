r"""§3.4, Fig. 5: 1 to 6 tuning languages added along three orders, the budget split evenly; scores on the
6 languages never seen in tuning (cs, et, he, hi, es, zh), averaged over the orders.

Demo (local Ray, CPU, bundled sample, tiny models, the demo judge on Ray Serve):

    python sweeps/language_count.py
    python sweeps/language_count.py --dry-run           # the plan: models, generations, judge calls

On a cluster (`ray up ray_cluster.yaml` first):

    ray job submit --working-dir . -- python sweeps/language_count.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_script
from mlit.planning.config import SweepConfig

CONFIG = SweepConfig(experiment="language_count")

if __name__ == "__main__":
    run_script(CONFIG)
