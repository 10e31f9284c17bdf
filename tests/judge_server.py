"""A scripted OpenAI-compatible endpoint for judge and translation tests.

It stands in for a paid API (which cannot run here) so that tests can make a judge rate-limit,
ramble or go quiet on purpose, and count every call it receives.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from email.utils import formatdate
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
        # The Batch API: files, batches (tests/judge_server.py's own, like OpenAI's).
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_calls: Counter[str] = Counter()  # calls answered inside batches, per model
        self.batch_delay_s = 0.5  # a batch stays in progress this long
        self.expire_batches = 0  # this many batches expire with half their requests unanswered
        self.fail_in_batch: set[str] = set()  # prompts containing one of these fail in a batch
        self.limited_until = 0.0  # a 429 storm: every other call refused until this time
        self.limited_calls = 0
        self.prompt_tokens: int | None = None  # the usage each reply reports (None: its words)
        # Faults of real providers (issue 50):
        self.no_usage = False  # replies leave "usage" out
        self.quota_until = 0.0  # every call refused (429) until this wall-clock time
        self.quota_for = 0.0  # or: every call refused for this long from the first call
        self.quota_header = "seconds"
        self.day_quota_after: int | None = (
            None  # after this many calls: a day's quota spent  # its Retry-After: "seconds" or "date" (an HTTP date)
        )
        self.refused = 0  # calls refused for the quota
        self.conflicting_duplicates = False  # each output line preceded by a wrong answer
        self.unknown_ids = 0  # this many lines for requests never asked, in each output file
        self.cancel_batches = 0  # this many batches end "cancelled", half their requests answered
        self.fail_batches = 0  # this many batches end "failed", nothing answered

    def retry_after_header(self) -> str:
        if self.quota_header == "date":  # whole seconds: the end of the quota, rounded up
            return formatdate(math.ceil(self.quota_until), usegmt=True)
        return str(math.ceil(self.quota_until - time.time()))

    def reply(self, model: str, prompt: str) -> tuple[int, dict]:
        with self.lock:
            self.calls[model] += 1
            n = self.calls[model]
            self.times.append(time.monotonic())
        with self.lock:
            if self.quota_for and not self.quota_until:  # the quota runs from the first call
                self.quota_until = time.time() + self.quota_for
            if self.day_quota_after is not None and sum(self.calls.values()) > self.day_quota_after:
                self.quota_until = max(self.quota_until, time.time() + 86400)
        if time.time() < self.quota_until:
            with self.lock:
                self.refused += 1
            return 429, {"error": {"message": "quota exceeded", "type": "rate_limit"}}
        if time.monotonic() < self.limited_until and n % 2 == 0:
            with self.lock:
                self.limited_calls += 1
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}
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
        if model == "position-biased" and "[biased]" in prompt:
            digit = "1"  # always the first position, whatever it holds
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
        finish = "stop"
        if model == "translate-cut":  # the provider's token limit: half the text, "length"
            text, finish = text[: len(text) // 2], "length"
        body = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": self.prompt_tokens or len(prompt.split()),
                "completion_tokens": 1,
                "total_tokens": (self.prompt_tokens or len(prompt.split())) + 1,
            },
        }
        if self.no_usage:
            del body["usage"]
        return 200, body


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
    # What a provider that confuses close languages sends back (issue 50).
    "Portuguese": ["não", "uma", "em", "você", "casa", "muito", "é", "com", "são", "bonita"],
    "Estonian": ["see", "on", "õue", "ja", "kass", "täna", "väga", "kui", "ka", "jookseb"],
}
# Wrappers chat models put around a translation (issue 50): taken off, the content kept.
WRAPPERS = (
    "Sure! Here's the translation:\n\n{}",
    "Aquí tienes la traducción:\n{}",
    "“{}”",
    "```\n{}\n```",
)


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
    lang = {("translate-pt", "Spanish"): "Portuguese", ("translate-et", "Finnish"): "Estonian"}.get(
        (model, lang), lang
    )
    words = WORDS.get(lang)
    if model == "translate-preamble":
        wrap = WRAPPERS[int(hashlib.md5(text.encode()).hexdigest(), 16) % len(WRAPPERS)]
        return wrap.format(translate(prompt).strip())
    if model == "translate-swap":  # the URL and the code trade places
        return translate(prompt).replace("⟦0⟧", "⟦x⟧").replace("⟦1⟧", "⟦0⟧").replace("⟦x⟧", "⟦1⟧")
    if words is None:
        return re.sub(r"[A-Za-z]+", lambda m: m.group(0).upper(), text)

    def word(m: re.Match) -> str:  # the same English word, the same word: texts stay distinct
        return words[int(hashlib.md5(m.group(0).lower().encode()).hexdigest(), 16) % len(words)]

    return re.sub(r"(?<!⟦)[A-Za-z]+", word, text)


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The uploaded file's bytes in a multipart/form-data body."""
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type).group(1).encode()
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return data.rsplit(b"\r\n", 1)[0]
    raise ValueError("no file in the upload")


def _run_batch(script: Script, batch: dict) -> None:
    """Answer a batch's requests once its time is up: output and error files, like OpenAI's."""
    lines = script.files[batch["input_file_id"]].decode().splitlines()
    with script.lock:
        number = len([b for b in script.batches.values() if b.get("ran")])
        batch["ran"] = True
    expire = number < script.expire_batches
    cancel = number < script.cancel_batches
    if number < script.fail_batches:  # a batch the provider could not run: nothing answered
        batch["status"] = "failed"
        batch["errors"] = {"object": "list", "data": [{"code": "x", "message": "invalid input"}]}
        return
    out, errors = [], []
    for i, raw in enumerate(lines):
        request = json.loads(raw)
        if (expire or cancel) and i % 2 == 1:
            continue  # an expired or cancelled batch never reached these
        body = request["body"]
        prompt = body["messages"][-1]["content"]
        if any(marker in prompt for marker in script.fail_in_batch):
            errors.append(
                {
                    "id": f"r{i}",
                    "custom_id": request["custom_id"],
                    "response": {"status_code": 500, "body": {"error": {"message": "boom"}}},
                    "error": None,
                }
            )
            continue
        with script.lock:
            script.batch_calls[body["model"]] += 1
        status, payload = script.reply(body["model"], prompt)
        with script.lock:  # not an online call
            script.calls[body["model"]] -= 1
        item = {"status_code": status, "body": payload}
        row = {"id": f"r{i}", "custom_id": request["custom_id"], "response": item, "error": None}
        if script.conflicting_duplicates and status == 200:  # a wrong answer first, then the right
            wrong = json.loads(json.dumps(row))
            message = wrong["response"]["body"]["choices"][0]["message"]
            message["content"] = {"1": "2", "2": "1"}.get(message["content"], "WRONG")
            out.append(wrong)
        (out if status == 200 else errors).append(row)
    for i in range(script.unknown_ids):
        body = {"choices": [{"message": {"content": "1"}, "finish_reason": "stop"}]}
        response = {"status_code": 200, "body": body}
        out.append({"id": f"u{i}", "custom_id": f"unknown-{i}", "response": response})
    for name, rows in (("output_file_id", out), ("error_file_id", errors)):
        if rows:
            file_id = f"file-{len(script.files)}"
            script.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
            batch[name] = file_id
    batch["status"] = "expired" if expire else "cancelled" if cancel else "completed"
    batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}


def start(script: Script) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def send_json(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0].removeprefix("/v1")
            if path == "/batches":
                self.send_json(
                    200,
                    {"object": "list", "data": list(script.batches.values()), "has_more": False},
                )
            elif path.startswith("/batches/") and path[9:] in script.batches:
                batch = script.batches[path[9:]]
                due = batch["created_at"] + script.batch_delay_s  # the delay when asked
                if batch["status"] == "in_progress" and time.time() >= due:
                    _run_batch(script, batch)
                self.send_json(200, {k: v for k, v in batch.items() if k != "ran"})
            elif path.startswith("/files/") and path.endswith("/content"):
                data = script.files[path[7:-8]]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self.send_json(404, {"error": {"message": f"no route {path}"}})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            path = self.path.split("?")[0].removeprefix("/v1")
            if path == "/files":
                file_id = f"file-{len(script.files)}"
                script.files[file_id] = _multipart_file(raw, self.headers["Content-Type"])
                size = len(script.files[file_id])
                return self.send_json(
                    200,
                    {
                        "id": file_id,
                        "object": "file",
                        "bytes": size,
                        "created_at": int(time.time()),
                        "filename": "in.jsonl",
                        "purpose": "batch",
                        "status": "processed",
                    },
                )
            if path == "/batches":
                body = json.loads(raw)
                batch_id = f"batch-{len(script.batches)}"
                script.batches[batch_id] = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": body["endpoint"],
                    "input_file_id": body["input_file_id"],
                    "completion_window": body["completion_window"],
                    "status": "in_progress",
                    "created_at": int(time.time()),
                    "metadata": body.get("metadata"),
                    "output_file_id": None,
                    "error_file_id": None,
                    "errors": None,
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                }
                return self.send_json(200, script.batches[batch_id])
            body = json.loads(raw)
            prompt = body["messages"][-1]["content"]
            status, payload = script.reply(body["model"], prompt)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429 and time.time() < script.quota_until:
                self.send_header("Retry-After", script.retry_after_header())
            elif status == 429 and script.retry_after is not None:
                self.send_header("Retry-After", str(script.retry_after))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"
