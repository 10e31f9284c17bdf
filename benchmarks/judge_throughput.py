"""Judge throughput against the demo judge on Ray Serve: 1 call in flight against 32.

    python benchmarks/judge_throughput.py      # writes benchmarks/results/judge_throughput.json

The demo judge (built locally, cached) is served by `mlit serve`'s app with dynamic batching. The
same 256 side-by-side calls (128 pairs from the bundled eval split, both orders, nothing cached)
are made through litellm with `--judge-concurrency` 1 and then 32, each into a fresh store.
The ratio of calls per second is the gain from bounded concurrency plus server-side batching.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path

from mlit.data import dataset
from mlit.demo import judge_model
from mlit.judging import judge
from mlit.serving import app as serving
from mlit.store.artifacts import Store

import host

OUT = Path(__file__).parent / "results" / "judge_throughput.json"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pairs(n: int = 128) -> list[judge.Pair]:
    evals = dataset.split(dataset.sample(), "eval")
    rows = list(evals.iter_rows(named=True))
    out = []
    for i, r in enumerate(rows[:n]):
        other = rows[(i + 7) % len(rows)]
        out.append(
            judge.Pair(
                "ref",
                "other",
                r["lang"],
                r["example_id"],
                r["instruction"],
                r["response"],
                other["response"],
                "a",
                "b",
            )
        )
    return out


def run(url: str, concurrency: int) -> dict:
    j = judge.Judge(
        "openai/judge",
        api_base=f"{url}/v1",
        template=judge_model.TEMPLATE,
        concurrency=concurrency,
    )
    store = Store(tempfile.mkdtemp(prefix="mlit-judge-bench-"))
    start = time.perf_counter()
    out = judge.judge_pairs(pairs(), j, store, progress=False)
    wall = time.perf_counter() - start
    calls = 2 * out.height
    return {
        "concurrency": concurrency,
        "calls": calls,
        "wall_s": round(wall, 2),
        "calls_per_s": round(calls / wall, 2),
        "errors": int((out["verdict"] == "error").sum()),
    }


def main() -> None:
    import ray
    from ray import serve

    path = judge_model.build_demo_judge()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    url = serving.start(
        serving.ServeConfig(
            models={"judge": str(path)}, port=_port(), max_batch_size=32, num_cpus=1
        )
    )
    run(url, 4)  # warm-up: load the model
    one = run(url, 1)
    many = run(url, 32)
    serve.shutdown()
    ray.shutdown()
    report = {
        "machine": host.describe(),
        "judge": "demo judge on one CPU replica, dynamic batching up to 32",
        "concurrency_1": one,
        "concurrency_32": many,
        "ratio": round(many["calls_per_s"] / one["calls_per_s"], 2),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
