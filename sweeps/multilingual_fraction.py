r"""§3.2, Fig. 3: P% of the tuning examples spread evenly over the 12 languages, the rest English,
for P in 1, 10, 20, ..., 100: how many multilingual examples does instruction following need?

Demo (local Ray, CPU, bundled sample, tiny models, the demo judge on Ray Serve):

    python sweeps/multilingual_fraction.py
    python sweeps/multilingual_fraction.py --dry-run           # the plan: models, generations, judge calls

On a cluster (`ray up ray_cluster.yaml` first):

    ray job submit --working-dir . -- python sweeps/multilingual_fraction.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_script
from mlit.planning.config import SweepConfig

CONFIG = SweepConfig(experiment="multilingual_fraction")

if __name__ == "__main__":
    run_script(CONFIG)
