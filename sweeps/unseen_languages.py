r"""§3.3, Fig. 4: The same P% sweep over 6 tuning languages (en, ar, fi, it, ru, sw), scored on all 12:
do a few multilingual examples help languages never seen in tuning?

Demo (local Ray, CPU, bundled sample, tiny models, the demo judge on Ray Serve):

    python sweeps/unseen_languages.py
    python sweeps/unseen_languages.py --dry-run           # the plan: models, generations, judge calls

On a cluster (`ray up ray_cluster.yaml` first):

    ray job submit --working-dir . -- python sweeps/unseen_languages.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_script
from mlit.planning.config import SweepConfig

CONFIG = SweepConfig(experiment="unseen_languages")

if __name__ == "__main__":
    run_script(CONFIG)
