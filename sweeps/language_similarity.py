r"""§4.1, Fig. 7: Monolingual tuning in 7 Slavic languages (ru, sr, hr, sl, pl, sk, cs), a 7 x 7 matrix:
does transfer follow language similarity?

Demo (local Ray, CPU, bundled sample, tiny models, the demo judge on Ray Serve):

    python sweeps/language_similarity.py
    python sweeps/language_similarity.py --dry-run           # the plan: models, generations, judge calls

On a cluster (`ray up ray_cluster.yaml` first):

    ray job submit --working-dir . -- python sweeps/language_similarity.py --preset paper \
        --base-model Qwen/Qwen2.5-1.5B --judge openai/gpt-4o --judge-api-key-env OPENAI_API_KEY \
        --data s3://my-bucket/mlit/parallel.parquet --store s3://my-bucket/mlit/store
"""

from mlit.cli.flags import run_script
from mlit.planning.config import SweepConfig

CONFIG = SweepConfig(experiment="language_similarity")

if __name__ == "__main__":
    run_script(CONFIG)
