"""The judge's probe times the endpoint, not the machine (issue 49): litellm's import, which took
43 s on a loaded machine, is paid before the deadline starts, and a judge that never answers is
still reported within the deadline."""

import multiprocessing
import socket
import subprocess
import sys
import textwrap
import threading
import time

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _hog(stop) -> None:
    while not stop.is_set():
        pass


def _probe_in_a_fresh_process(url: str, deadline_s: float) -> subprocess.CompletedProcess:
    """`preflight.probe` in a new interpreter (litellm not imported yet), its deadline shortened;
    prints the seconds the probe took and its outcome."""
    code = textwrap.dedent(f"""
        import time
        from mlit.judging.judge import Judge
        from mlit.sweep import preflight
        preflight.PROBE_DEADLINE_S = {deadline_s}
        preflight.PROBE_TIMEOUT_S = {deadline_s}
        start = time.monotonic()
        try:
            preflight.probe(Judge("openai/good", api_base={url!r}))
            outcome = "ok"
        except preflight.PreflightError as err:
            outcome = str(err)
        print(round(time.monotonic() - start, 2), outcome)
    """)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_a_healthy_judge_passes_its_probe_beside_two_cpu_hogs(endpoint):
    _, url = endpoint
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    hogs = [ctx.Process(target=_hog, args=(stop,)) for _ in range(2)]
    for hog in hogs:
        hog.start()
    try:
        # 3 s: well under what litellm's import takes beside two busy cores (~5-40 s).
        done = _probe_in_a_fresh_process(url, 3.0)
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    assert done.returncode == 0, done.stderr[-2000:]
    took, outcome = done.stdout.split(" ", 1)
    assert outcome.strip() == "ok", (took, outcome)


def test_a_judge_that_never_answers_is_named_within_the_deadline():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        held = []
        stop = threading.Event()

        def accept() -> None:
            silent.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(silent.accept()[0])
                except OSError:
                    continue

        threading.Thread(target=accept, daemon=True).start()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        start = time.monotonic()
        done = _probe_in_a_fresh_process(url, 2.0)
        stop.set()
        for conn in held:
            conn.close()
    took, outcome = done.stdout.split(" ", 1)
    assert "did not answer a test prompt" in outcome and "127.0.0.1" in outcome, outcome
    assert float(took) < 2.0 + 10, took  # the deadline, plus litellm's import before it
    assert time.monotonic() - start < 120
