"""A scripted OpenAI-compatible endpoint for judge and translation tests.

It stands in for a paid API (which cannot run here) so that tests can make a judge rate-limit,
ramble or go quiet on purpose, and count every call it receives.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Script:
    def __init__(self):
        self.calls: Counter[str] = Counter()
        self.fail_first: dict[str, int] = {}  # model -> number of 429s before success
        self.garbage_first = 0  # "garbage-first": this many unparseable replies, then digits
        self.delay_s = 2.0  # "slow": seconds before each reply
        self.refuse_after: dict[
            str, int
        ] = {}  # model -> calls answered before 401s (a revoked key)
        self.lock = threading.Lock()

    def reply(self, model: str, prompt: str) -> tuple[int, dict]:
        with self.lock:
            self.calls[model] += 1
            n = self.calls[model]
        if model in self.refuse_after and n > self.refuse_after[model]:
            return 401, {"error": {"message": "key revoked", "type": "auth"}}
        if n <= self.fail_first.get(model, 0):
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}
        if model == "translate-flaky" and "FAIL" in prompt:
            return 500, {"error": {"message": "upstream error", "type": "server_error"}}
        if model == "bad-key":
            return 401, {"error": {"message": "invalid api key", "type": "auth"}}
        if model == "slow":
            time.sleep(self.delay_s)
        if model == "no-choices":
            return 200, {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1},
            }
        answers = re.split(r"Answer [12]:", prompt)
        first_good = len(answers) > 2 and "good" in answers[1].lower()
        digit = "1" if first_good else "2"
        logprobs = None
        if model == "chatty":
            text = f"I would pick answer number {digit}"
            other = "2" if digit == "1" else "1"
            logprobs = {
                "content": [
                    {
                        "token": "I",
                        "logprob": -0.5,
                        "top_logprobs": [
                            {"token": digit, "logprob": -1.0},
                            {"token": other, "logprob": -3.0},
                            {"token": "I", "logprob": -0.5},
                        ],
                    }
                ]
            }
        elif model == "mute":
            text = "Hmm, hard to say."
        elif model == "null-content":
            text = None
        elif model == "garbage-first" and n <= self.garbage_first:
            text = "#@!"
        elif model.startswith("translate"):
            text = translate(prompt, cyrillic=model != "translate-latin")
        else:
            text = digit
        return 200, {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": len(prompt.split()),
                "completion_tokens": 1,
                "total_tokens": len(prompt.split()) + 1,
            },
        }


# A word in the target's script, so that a pretend translation passes the script check.
SCRIPT_WORD = {"Arabic": "عربي", "Russian": "русский", "Chinese": "中文", "Hebrew": "עברית"}


def translate(prompt: str, cyrillic: bool = True) -> str:
    """Pretend translation: uppercases prose outside placeholders, keeps ⟦n⟧ markers; a prompt
    that names Cyrillic script gets Cyrillic letters (unless ``cyrillic`` is False: a translator
    that answers Serbian in Latin script)."""
    text = prompt.split("<<<", 1)[-1].rsplit(">>>", 1)[0]
    target = re.search(r"into (\w+)", prompt)
    lang = target.group(1) if target else "?"
    out = re.sub(r"[A-Za-z]+", lambda m: m.group(0).upper(), text)
    if cyrillic and "Cyrillic script" in prompt:
        out = re.sub(r"(?<!⟦)[A-Z]", "Д", out)
    word = SCRIPT_WORD.get(lang)
    return f"[{lang}] " + (f"{word} " if word else "") + out


def start(script: Script) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompt = body["messages"][-1]["content"]
            status, payload = script.reply(body["model"], prompt)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
