"""A scripted OpenAI-compatible endpoint for judge and translation tests.

It stands in for a paid API (which cannot run here) so that tests can make a judge rate-limit,
ramble or go quiet on purpose, and count every call it receives.
"""

from __future__ import annotations

import hashlib
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
        self.retry_after: float | None = None  # the Retry-After header of each 429
        self.echo: str | None = None  # translators send texts containing this back untranslated
        self.times: list[float] = []  # when each call arrived (monotonic)
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
            self.times.append(time.monotonic())
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
            source = prompt.split("<<<", 1)[-1].rsplit(">>>", 1)[0]
            echo = self.echo and self.echo.lower() in source.lower()
            text = source if echo else translate(prompt, model)
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


# Words of each language, so that a pretend translation is identified as that language and is
# written in its script (the translation checks look at both).
WORDS = {
    "Finnish": [
        "tämä",
        "on",
        "hyvä",
        "talo",
        "ja",
        "kissa",
        "juoksee",
        "nopeasti",
        "kotiin",
        "tänään",
    ],
    "Arabic": ["هذا", "بيت", "جميل", "والقطة", "تجري", "بسرعة", "إلى", "المنزل", "اليوم"],
    "Swahili": [
        "hii",
        "ni",
        "nyumba",
        "nzuri",
        "na",
        "paka",
        "anakimbia",
        "haraka",
        "nyumbani",
        "leo",
    ],
    "Italian": [
        "questa",
        "è",
        "una",
        "bella",
        "casa",
        "e",
        "il",
        "gatto",
        "corre",
        "veloce",
        "a",
        "casa",
        "oggi",
    ],
    "Spanish": [
        "esta",
        "es",
        "una",
        "casa",
        "bonita",
        "y",
        "el",
        "gato",
        "corre",
        "rápido",
        "a",
        "casa",
        "hoy",
    ],
    "Serbian": ["ово", "је", "лепа", "кућа", "и", "мачка", "брзо", "трчи", "кући", "данас"],
    "Serbian-Latin": ["ovo", "je", "lepa", "kuća", "i", "mačka", "brzo", "trči", "kući", "danas"],
    "Croatian": ["ovo", "je", "lijepa", "kuća", "i", "mačka", "brzo", "trči", "kući", "danas"],
}


def translate(prompt: str, model: str = "translate") -> str:
    """Pretend translation: each English word becomes a word of the target language, while
    ⟦n⟧ markers, punctuation and markdown stay. ``translate-latin`` answers Serbian in Latin
    script even when Cyrillic is asked for; ``translate-lazy`` sends "hello" texts back as they
    came (untranslated)."""
    text = prompt.split("<<<", 1)[-1].rsplit(">>>", 1)[0]
    if model == "translate-lazy" and "hello" in text.lower():
        return text
    target = re.search(r"into (\w+)", prompt)
    lang = target.group(1) if target else "?"
    if lang == "Serbian" and (model == "translate-latin" or "Cyrillic script" not in prompt):
        lang = "Serbian-Latin"
    words = WORDS.get(lang)
    if words is None:
        return re.sub(r"[A-Za-z]+", lambda m: m.group(0).upper(), text)

    def word(m: re.Match) -> str:  # the same English word, the same word: texts stay distinct
        return words[int(hashlib.md5(m.group(0).lower().encode()).hexdigest(), 16) % len(words)]

    return re.sub(r"(?<!⟦)[A-Za-z]+", word, text)


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
            if status == 429 and script.retry_after is not None:
                self.send_header("Retry-After", str(script.retry_after))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
