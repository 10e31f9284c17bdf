"""A standard load client against `mlit serve`, unchanged: guidellm (issue 53).

    make guidellm-env                       # guidellm in .venv-guidellm (pinned)
    python benchmarks/serve_guidellm.py     # writes benchmarks/results/serve_guidellm.json

Starts ``mlit serve --model demo-base=demo`` (its own Ray, a free port) and runs
``guidellm run`` against it with no remapping: guidellm checks ``GET /health`` (vLLM's, TGI's
route), lists ``/v1/models`` and streams ``/v1/chat/completions``. Synthetic prompts of 64 tokens
(the demo model's tokenizer), 32 output tokens, 8 concurrent streams, 128 requests. Reported:
TTFT and ITL (median, p95), requests per second, output tokens per second, errors (the model
loaded by one request first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import host

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "results" / "serve_guidellm.json"


def _serve(log: Path) -> tuple[subprocess.Popen, str]:
    mlit = Path(sys.executable).with_name("mlit")
    proc = subprocess.Popen(
        [str(mlit), "serve", "--model", "demo-base=demo"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = re.search(r"serving 1 model\(s\) at (http://\S+)/v1", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"mlit serve ended: {log.read_text()[-2000:]}")
        time.sleep(1)
    raise SystemExit("mlit serve did not start within 10 minutes")


def _figures(report: dict) -> dict:
    bench = report["benchmarks"][0]["metrics"]

    def stat(name: str) -> dict:
        ok = bench[name]["successful"]
        return {"median": round(ok["median"], 1), "p95": round(ok["percentiles"]["p95"], 1)}

    return {
        "requests": bench["request_totals"],
        "ttft_ms": stat("time_to_first_token_ms"),
        "itl_ms": stat("inter_token_latency_ms"),
        "requests_per_s": round(bench["requests_per_second"]["successful"]["mean"], 2),
        "output_tokens_per_s": round(bench["output_tokens_per_second"]["successful"]["mean"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guidellm", default=str(ROOT / ".venv-guidellm" / "bin" / "guidellm"))
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--streams", type=int, default=8)
    args = parser.parse_args()
    if not os.access(args.guidellm, os.X_OK):
        raise SystemExit(f"no guidellm at {args.guidellm}: run `make guidellm-env` first")
    from mlit.demo import base_model

    tokenizer = base_model.build_demo_model()  # the served model's own tokenizer, offline
    work = Path(tempfile.mkdtemp(prefix="mlit-guidellm-"))
    proc, url = _serve(work / "serve.log")
    try:
        import httpx  # the model loaded first: TTFT is the server's, not the first load's

        warm = {"model": "demo-base", "messages": [{"role": "user", "content": "Hi"}]}
        httpx.post(f"{url}/v1/chat/completions", json=warm, timeout=300).raise_for_status()
        scenario = {
            "spec": {
                "backend": {
                    "kind": "openai_http",
                    "target": url,
                    "request_format": "/v1/chat/completions",
                },
                "profile": {"kind": "concurrent", "streams": args.streams},
                "tokenizer": {"kind": "hf_auto", "model": str(tokenizer)},
                "data": [{"kind": "synthetic_text", "prompt_tokens": 64, "output_tokens": 32}],
                "constraints": [{"kind": "max_requests", "count": args.requests}],
            }
        }
        (work / "scenario.json").write_text(json.dumps(scenario))
        out = work / "guidellm.json"
        done = subprocess.run(
            [args.guidellm, "run", "--scenario", str(work / "scenario.json"),
             "--output", f"kind=json,path={out}", "--disable-console-interactive"],
            capture_output=True, text=True, cwd=work,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"guidellm failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        figures = _figures(json.loads(out.read_text()))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    version = subprocess.run([args.guidellm, "--version"], capture_output=True, text=True)
    report = {
        "machine": host.describe(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "client": version.stdout.strip() or "guidellm",
        "server": "mlit serve --model demo-base=demo (one replica, hf engine, HAProxy ingress)",
        "load": f"{args.requests} requests, {args.streams} concurrent streams, 64 prompt / 32 "
        "output tokens (synthetic)",
        **figures,
    }
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
