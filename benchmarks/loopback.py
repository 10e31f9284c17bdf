"""Stand-ins on loopback for what cannot run here: an instant OpenAI-compatible endpoint (model and
judge), a proxy that adds latency to every request (object storage over a network), a real S3
server (moto). Used by benchmarks/scale.py and by the store's tests.

    python benchmarks/loopback.py chat PORT [--delay S]          # answers every chat completion
    python benchmarks/loopback.py proxy PORT UPSTREAM_PORT --ms 15

The chat endpoint answers a judge prompt (``max_tokens`` <= 16) with the digit 1 and anything
else with a 300-character answer; ``GET /count`` says how many completions it has answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlit.plumbing.ports import free_port

ANSWER = "An answer of about the length a tuned model gives to a short instruction. " * 4


def _completion(content: str) -> bytes:
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 60, "total_tokens": 80},
        }
    ).encode()


async def serve_chat(port: int, delay_s: float) -> None:
    """A minimal HTTP/1.1 server (keep-alive, pipelining): the client's cost is what is measured,
    so the server spends as little CPU as it can."""
    answered = 0

    class Chat(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            nonlocal answered
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                head = self.buffer[:end].decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(self.buffer) < end + 4 + length:
                    return
                body, self.buffer = (
                    self.buffer[end + 4 : end + 4 + length],
                    self.buffer[end + 4 + length :],
                )
                if head.startswith("GET /count"):
                    payload = json.dumps({"answered": answered}).encode()
                else:
                    request = json.loads(body or b"{}")
                    judge = (request.get("max_tokens") or 512) <= 16
                    payload = _completion("1" if judge else ANSWER)
                    answered += 1
                reply = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(payload) + payload
                )
                if delay_s:
                    asyncio.get_running_loop().call_later(delay_s, self.transport.write, reply)
                else:
                    self.transport.write(reply)

    server = await asyncio.get_running_loop().create_server(Chat, "127.0.0.1", port)
    await server.serve_forever()


async def serve_proxy(port: int, upstream: int, delay_s: float) -> None:
    """Every byte from the client reaches the server ``delay_s`` later, in order: each request
    (and each part of an upload) costs one more ``delay_s`` of latency, bandwidth unchanged."""

    async def pump(reader, writer, delay: float) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while (item := await queue.get()) is not None:
                due, chunk = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()
            writer.close()

        sender = asyncio.create_task(send())
        try:
            while chunk := await reader.read(1 << 16):
                queue.put_nowait((time.monotonic() + delay, chunk))
        except ConnectionError:
            pass
        queue.put_nowait(None)
        await sender

    async def handle(client_reader, client_writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, up_writer, delay_s),
            pump(up_reader, client_writer, 0.0),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    await server.serve_forever()


# ---- starting them from a test or a benchmark -------------------------------------------------


def wait_for(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.1)


def start(*args: str) -> tuple[subprocess.Popen, int]:
    """This file's ``chat`` or ``proxy`` in its own process; (process, port)."""
    port = free_port()
    cmd = [sys.executable, __file__, args[0], str(port), *args[1:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port)
    return proc, port


def start_moto(bucket: str, log: Path | None = None) -> tuple[subprocess.Popen, int]:
    """A real S3 server (moto) on loopback with ``bucket`` made; (process, port). ``log``: a
    file that gets the server's request log (a line per request: method, path, status)."""
    port = free_port()
    local = Path(sys.executable).parent / "moto_server"
    server = str(local) if local.exists() else shutil.which("moto_server")
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=out,
        stderr=out,
    )
    wait_for(port)
    import urllib.request

    urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
    ).close()
    return proc, port


def s3_env(port: int) -> dict[str, str]:
    """The environment that points pyarrow and boto3 at a loopback S3 server."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }


def use_s3(port: int) -> None:
    os.environ.update(s3_env(port))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["chat", "proxy"])
    parser.add_argument("port", type=int)
    parser.add_argument("upstream", type=int, nargs="?")
    parser.add_argument("--delay", type=float, default=0.0, help="chat: seconds per answer")
    parser.add_argument("--ms", type=float, default=15.0, help="proxy: added latency")
    args = parser.parse_args()
    if args.what == "chat":
        asyncio.run(serve_chat(args.port, args.delay))
    else:
        asyncio.run(serve_proxy(args.port, args.upstream, args.ms / 1000))
