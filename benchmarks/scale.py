"""The store at paper scale: the real generation and judge phase code with the real store, against
instant model and judge endpoints on loopback, at 10k, 100k and 1M tasks; the store on a local
disk, and on a real S3 server (moto) behind a proxy that adds 15 ms to every request.

    python benchmarks/scale.py                                  # 10k, 100k, 1M; local and s3
    python benchmarks/scale.py --sizes 10000 --stores local     # a quick look

Per (store, size), in a fresh process (so peak memory is its own): the generation phase
(`mlit.generation.answer_client.generate`, aiohttp, 64 in flight) with records/s; a rerun's check
(`answer_client.stored_answers`: one listing, one concurrent read, a join) and the whole rerun
(nothing sent); the same for the judge phase's records (`judge.stored_verdicts`) with the store
holding as many verdicts; the judge phase itself (litellm) at `--judge-calls`; peak memory. Then the
extrapolation to the paper plan (`mlit estimate paper`). Results: benchmarks/results/store_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import host
import loopback

# What the judge phase stores for one order (`judge.call_judge`'s record).
VERDICT = {
    "status": "ok",
    "raw": "1",
    "choice": 1,
    "parse": "digit",
    "finish_reason": "stop",
    "prompt_tokens": 700,
    "completion_tokens": 1,
    "cost_usd": 0.0,
    "latency_s": 0.5,
}
PREFILLED = {
    "response": loopback.ANSWER,
    "finish_reason": "stop",
    "prompt_tokens": 20,
    "completion_tokens": 60,
    "latency_s": 0.01,
}
PAPER = {"answers": 670_679, "judge_calls": 1_236_468}  # mlit estimate paper --params 7e9


def tasks(n: int):
    from mlit.generation.answer_client import Task
    from mlit.method.languages import PAPER_LANGUAGES as langs

    out = []
    for i in range(n):
        model, rest = divmod(i, 617 * 12)
        lang, example = divmod(rest, 617)
        out.append(
            Task(
                f"model-{model}",
                f"{model:024x}",
                f"ex{example}",
                langs[lang],
                f"Instruction {example} in {langs[lang]}: say something useful about it.",
            )
        )
    return out


def pairs(gens, n_calls: int):
    """Judge pairs over the generations (answers of model i against model i+1's neighbour row)."""
    from mlit.judging.judge import Pair

    rows = gens.select("model", "lang", "example_id", "instruction", "response").rows()
    out = []
    for i in range(0, min(len(rows) - 1, n_calls), 2):
        a, b = rows[i], rows[i + 1]
        out.append(Pair(a[0], f"base-{i}", a[1], a[2], a[3], a[4], f"answer {i}: {b[4]}"))
    return out


def _peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def one(store_kind: str, size: int, chat: int, judge_calls: int, prefill: bool = False) -> dict:
    """One (store, size) measurement, in this process (``prefill``: reruns only)."""
    import polars as pl

    from mlit.generation import answer_client
    from mlit.judging import judge
    from mlit.store.artifacts import Store

    root = (
        f"s3://mlit-scale/{uuid.uuid4().hex[:8]}"
        if store_kind == "s3"
        else tempfile.mkdtemp(prefix="mlit-scale-")
    )
    store = Store(root)
    todo = tasks(size)
    params = answer_client.SamplingParams(max_tokens=128)
    client = answer_client.Client(f"http://127.0.0.1:{chat}", concurrency=32)
    out: dict = {"store": store_kind, "tasks": size, **({"prefilled": True} if prefill else {})}

    if prefill:  # the answers the phase would store, filed directly: the reruns measured alone
        keys = answer_client.generation_keys(todo, params)
        with store.writer("generations") as writer:
            for key in keys:
                writer.put(key, PREFILLED)
        del keys
    else:
        start = time.perf_counter()
        gens = answer_client.generate(todo, client, store, params, progress=False)
        took = time.perf_counter() - start
        assert (gens["status"] == "ok").all(), gens.filter(pl.col("status") != "ok")["error"][0]
        del gens  # a rerun does not hold the first run's table
        out["generate_s"] = round(took, 2)
        out["generate_records_per_s"] = round(size / took)
        out["peak_rss_mb_after_generate"] = _peak_mb()

    start = time.perf_counter()
    _, hits = answer_client.stored_answers(todo, params, store)
    out["rerun_check_s"] = round(time.perf_counter() - start, 2)
    assert len(hits) == size, f"{len(hits)} of {size} answers found"
    del hits
    start = time.perf_counter()
    again = answer_client.generate(todo, client, store, params, progress=False)
    out["rerun_generate_s"] = round(time.perf_counter() - start, 2)
    assert again["cached"].all()
    out["peak_rss_mb_after_rerun"] = _peak_mb()
    gens = again.select("model", "lang", "example_id", "instruction", "response")
    del again

    # The judge's records: as many verdicts as answers, written by the phase's own writer, then
    # the rerun's check of the judge phase over them and a whole judge rerun (nothing sent).
    j = judge.Judge("openai/judge", api_base=f"http://127.0.0.1:{chat}/v1")
    every = pairs(gens, size)
    start = time.perf_counter()
    with store.writer("verdicts") as writer:
        for p in every:
            for a, b in (
                (p.candidate_answer, p.baseline_answer),
                (p.baseline_answer, p.candidate_answer),
            ):
                writer.put(judge.verdict_key(j, p.instruction, a, b), VERDICT)
    out["verdicts_stored"] = 2 * len(every)
    out["verdicts_write_s"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    stored = judge.stored_verdicts(every, j, store)
    out["judge_rerun_check_s"] = round(time.perf_counter() - start, 2)
    assert len(stored[1]) == 2 * len(every)
    start = time.perf_counter()
    table = judge.judge_pairs(every, j, store, progress=False, stored=stored)
    out["rerun_judge_s"] = round(time.perf_counter() - start, 2)
    assert table["cached_1"].all()
    del table, stored
    out["peak_rss_mb_after_judge_rerun"] = _peak_mb()

    if judge_calls:  # the judge phase itself: litellm calls, verdicts written as they come
        fresh = pairs(gens.with_columns(pl.col("response") + " (again)"), judge_calls)
        j = judge.Judge("openai/judge", api_base=f"http://127.0.0.1:{chat}/v1", concurrency=64)
        start = time.perf_counter()
        table = judge.judge_pairs(fresh, j, store, progress=False)
        took = time.perf_counter() - start
        assert (table["verdict"] != "error").all()
        out["judge_calls"] = 2 * len(fresh)
        out["judge_s"] = round(took, 2)
        out["judge_records_per_s"] = round(2 * len(fresh) / took)
    out["peak_rss_mb"] = _peak_mb()
    if store_kind == "local":
        shutil.rmtree(root, ignore_errors=True)
    return out


def paper_dry_run(root: str, records_wanted: int = 1_000_000) -> dict:
    """`sweeps/paper.py --preset paper --dry-run` on paper-shaped data (17 languages, 4,640
    training and 617 eval examples each) against a store holding ``records_wanted`` records:
    every answer of the plan (368k distinct) and verdicts for the first pairs up to the total."""
    import polars as pl

    from mlit.generation import answer_client
    from mlit.judging import judge
    from mlit.method.languages import SAMPLE_LANGUAGES
    from mlit.planning.config import SweepConfig
    from mlit.store.artifacts import Store
    from mlit.sweep import pipeline

    langs = SAMPLE_LANGUAGES  # the paper's 12 and the Slavic study's
    rows = [
        (f"{split[0]}{i}", lang, split, f"{split} instruction {i} ({lang}): explain it.", f"R{i}")
        for lang in langs
        for split, n in (("train", 4640), ("eval", 617))
        for i in range(n)
    ]
    data = Path(tempfile.mkdtemp()) / "paper_shaped.parquet"
    columns = ["example_id", "lang", "split", "instruction", "response"]
    pl.DataFrame(rows, schema=columns, orient="row").write_parquet(data)
    cfg = SweepConfig("bilingual", preset="paper", dry_run=True, store=root, data=str(data))
    plans = [pipeline.plan_sweep(c) for c in pipeline.paper_configs(cfg)]
    store, by_plan = Store(root), []
    with store.writer("generations") as gens:
        for plan in plans:
            tasks = plan.generation_tasks()
            keys = answer_client.generation_keys(tasks, plan.sampling, plan.serving.engine)
            by_plan.append(
                {
                    (t.model, t.lang, t.example_id): f"answer {k}"
                    for t, k in zip(tasks, keys, strict=True)
                }
            )
            for k in keys:
                gens.put(k, {"response": f"answer {k}", "finish_reason": "stop"})
    room = records_wanted - len(store.keys("generations"))
    with store.writer("verdicts") as verdicts:
        for plan, answered in zip(plans, by_plan, strict=True):
            for ks in judge.pair_keys(plan.judge_pairs(answered), plan.judge.build()):
                for k in ks or ():
                    if room > 0:  # the store holds records_wanted records in all
                        verdicts.put(k, VERDICT)
                        room -= 1
    held = sum(len(store.keys(kind)) for kind in ("generations", "verdicts"))
    start = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).parents[1] / "sweeps/paper.py"), "--preset"]
    cmd += ["paper", "--dry-run", "--data", str(data), "--store", root]
    done = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    cached = [line for line in done.stdout.splitlines() if line.startswith("generations:")]
    return {"records_in_store": held, "dry_run_s": round(took, 1), "first_plan": cached[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--latency-ms", type=float, default=15.0)
    parser.add_argument("--judge-calls", type=int, default=4000, help="litellm calls per run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/store_scale.json"))
    parser.add_argument("--paper-dry-run", action="store_true", help="only the paper dry run")
    parser.add_argument("--rerun-only", type=int, help="N: reruns of N stored answers, alone")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # store size chat judge_calls
    args = parser.parse_args()
    if args.one:
        kind, size, chat, calls = args.one
        print(json.dumps(one(kind, int(size), int(chat), int(calls))))
        return

    if args.rerun_only:  # local store; no endpoint is asked (everything is stored)
        result = one("local", args.rerun_only, 9, 0, prefill=True)
        print(json.dumps(result))
        _merge(args.out, {"rerun_only": result})
        return
    if args.paper_dry_run:
        root = tempfile.mkdtemp(prefix="mlit-dry-")
        result = paper_dry_run(root)
        shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(result))
        _merge(args.out, {"paper_dry_run": {**result, "store": "local"}})
        return
    chat, chat_port = loopback.start("chat")
    moto, moto_port = loopback.start_moto("mlit-scale")
    proxy, proxy_port = loopback.start("proxy", str(moto_port), "--ms", str(args.latency_ms))
    runs = []
    try:
        for kind in args.stores.split(","):
            for size in [int(s) for s in args.sizes.split(",")]:
                env = {**os.environ, **(loopback.s3_env(proxy_port) if kind == "s3" else {})}
                cmd = [sys.executable, __file__, "--one", kind, str(size), str(chat_port)]
                cmd.append(str(args.judge_calls if size == 10_000 else 0))
                done = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{kind} {size}: failed\n{done.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), flush=True)
    finally:
        for proc in (chat, proxy, moto):
            proc.terminate()
    result = {
        "machine": host.describe(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "latency_ms_added_per_s3_request": args.latency_ms,
        "runs": runs,
        "paper_extrapolation": extrapolate(runs),
    }
    _merge(args.out, result)
    print(json.dumps(extrapolate(runs), indent=2))


def _merge(path: str, result: dict) -> None:
    """Add ``result`` to the results file: runs of other stores and sizes are kept."""
    out = Path(path)
    merged = json.loads(out.read_text()) if out.exists() else {}
    new = result.pop("runs", [])
    replaced = {(r["store"], r["tasks"]) for r in new}
    runs = [r for r in merged.get("runs", []) if (r["store"], r["tasks"]) not in replaced] + new
    merged.update(result)
    if runs:
        merged["runs"] = sorted(runs, key=lambda r: (r["store"], r["tasks"]))
        merged["paper_extrapolation"] = extrapolate(merged["runs"])
    out.write_text(json.dumps(merged, indent=2) + "\n")


def extrapolate(runs: list[dict]) -> dict:
    """Hours the store adds at the paper's scale, from the largest run of each store."""
    out = {}
    for kind in {r["store"] for r in runs}:
        big = max((r for r in runs if r["store"] == kind), key=lambda r: r["tasks"])
        per_record = big["generate_s"] / big["tasks"]
        check = (big["rerun_check_s"] + big["judge_rerun_check_s"]) / (
            big["tasks"] + big["verdicts_stored"]
        )
        records = PAPER["answers"] + PAPER["judge_calls"]
        out[kind] = {
            "from_tasks": big["tasks"],
            "paper_records": records,
            # The phase's rate with instant endpoints: the client and the store together.
            "minutes_for_the_paper_records_at_the_measured_phase_rate": round(
                records * per_record / 60, 1
            ),
            "rerun_check_s": round(records * check, 1),
        }
    return out


if __name__ == "__main__":
    main()
