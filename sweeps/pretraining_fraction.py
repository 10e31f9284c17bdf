r"""§4.2, Fig. 8: Each monolingual model's average cross-lingual score against its language's share of the
pretraining data (Pearson r with a bootstrap interval). Pass the shares of your base model with
--pretraining-shares shares.json ({"en": 0.78, ...}); the demo uses the sample's text shares.

Demo (local Ray, CPU, bundled sample, tiny models, the demo judge on Ray Serve):

    python sweeps/pretraining_fraction.py
    python sweeps/pretraining_fraction.py --dry-run           # the plan: models, generations, judge calls

On a cluster (`ray up ray_cluster.yaml` first):

    ray job submit --working-dir . -- python sweeps/pretraining_fraction.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_script
from mlit.planning.config import SweepConfig

CONFIG = SweepConfig(experiment="pretraining_fraction")

if __name__ == "__main__":
    run_script(CONFIG)
