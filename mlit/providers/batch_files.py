"""What goes into a provider's batch and what comes back: the request lines (JSONL), chunks
within the provider's limits, and the output and error files read back.

Reading back trusts nothing the provider sends. A ``custom_id`` the batch never asked for is
ignored and counted. A ``custom_id`` answered twice with the same content is one answer; answered
twice with different content (a provider's retry that answered again, a broken proxy) it is no
answer at all: which line is right cannot be known, so the request fails and is asked again,
never stored as a verdict or a translation.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mlit.providers import llm, openai_http


@dataclass(frozen=True, slots=True)
class Call:
    """One call waiting for a batch. It holds no prompt: a phase of 1M calls would keep 1M
    prompts in memory while its batches are out (3.2 GB). The caller makes each prompt again
    from ``ref`` when its batch's lines are written (`line`), chunk by chunk."""

    key: str  # the result's key in the store: also the request's custom_id
    ref: int  # the caller's handle to make the prompt again (an index into its work)
    sent: int  # the prompt's estimated tokens (`mlit.providers.pricing.prompt_tokens`)
    max_tokens: int
    top_logprobs: int | None = None
    expected_reply: int | None = None  # reply tokens the budget holds for it (None: max_tokens)

    def estimate(self, budget) -> float:
        """The dollars `budget` (a `mlit.providers.pricing.Budget`) holds for this call."""
        return budget.estimate(self.sent, self.expected_reply or self.max_tokens) * budget.scale


def line(call: Call, prompt: str, model: str, sent: Counter | None = None) -> bytes:
    """One request line; ``sent`` counts it by its body's decoding (`openai_http.decoding_of`)."""
    body = llm.chat_body(model, prompt, call.max_tokens, call.top_logprobs)
    if sent is not None:
        sent[openai_http.decoding_of(body)] += 1
    request = {"custom_id": call.key, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return (json.dumps(request, ensure_ascii=False) + "\n").encode()


def split(
    lines: Iterable[tuple[Call, bytes]], max_requests: int, max_bytes: int
) -> Iterator[list[tuple[Call, bytes]]]:
    """Consecutive chunks within the provider's requests and bytes per batch."""
    chunk: list[tuple[Call, bytes]] = []
    size = 0
    for item in lines:
        if chunk and (len(chunk) >= max_requests or size + len(item[1]) > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item[1])
    if chunk:
        yield chunk


def results(text: str, where: str) -> Iterator[tuple[str, dict]]:
    """(custom_id, record) for each line of an output or error file."""
    for raw in text.splitlines():
        if not raw.strip():
            continue
        item = json.loads(raw)
        response = item.get("response") or {}
        status = response.get("status_code")
        if item.get("error") or status != 200:
            error = item.get("error") or (response.get("body") or {}).get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            yield (
                item.get("custom_id"),
                {
                    "status": "error",
                    "error": f"batch request failed at {where} (status {status}): {message}",
                },
            )
            continue
        yield item.get("custom_id"), llm.reply_record(response["body"], where)


@dataclass
class Answers:
    """A batch's answers read back: one record per request asked, and what was wrong."""

    records: dict[str, list[dict]]  # custom_id -> every line for it (billed, each of them)
    answers: dict[str, dict]  # custom_id -> its one answer, or an error record
    unknown: int = 0  # lines for ids the batch never asked
    duplicates: int = 0  # ids answered more than once with the same content
    conflicting: int = 0  # ids answered more than once with different content


def _content(record: dict) -> str:
    keep = ("status", "text", "finish_reason", "top_logprobs", "error")
    return json.dumps({k: record.get(k) for k in keep}, sort_keys=True, ensure_ascii=False)


def answers(lines: Iterable[tuple[str, dict]], asked: set[str], batch_id: str) -> Answers:
    """Each asked request's one answer from a batch's lines (`results`)."""
    out = Answers({}, {})
    for key, record in lines:
        if key not in asked:
            out.unknown += 1
            continue
        out.records.setdefault(key, []).append(record)
    for key, records in out.records.items():
        if len({_content(r) for r in records}) > 1:
            out.conflicting += 1
            out.answers[key] = {
                "status": "error",
                "error": f"batch {batch_id} answered this request {len(records)} times with "
                "different content: none is kept, it is asked again",
            }
            continue
        out.duplicates += len(records) > 1
        out.answers[key] = records[0]
    return out
