"""Request preparation: a request to the model server becomes a `Job` (token ids, sampling
settings, what to echo), and an engine's answer becomes the plain data the gateway reads.

Every engine (`mlit.serving.engines`) takes the same job, so templating, token-id prompts, context
checks and the 400s for what one request got wrong are the same whichever engine answers. Plain
functions, no Ray, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlit.generation import chat, decoding


@dataclass(frozen=True)
class Job:
    ids: list[int]
    params: dict  # `mlit.generation.decoding.Sampling`'s fields; max_new_tokens 0 only with echo
    echo: bool = False
    echo_text: str = ""  # the prompt as text, returned first when echo is set
    group: str | None = None  # the HTTP request it is one sequence of (its fair share of a batch)

    @property
    def generates(self) -> bool:
        return self.params["max_new_tokens"] > 0

    @property
    def top_logprobs(self) -> int | None:
        return self.params.get("top_logprobs")


def prepare(tok, item: dict, vocab: int, limit: int | None) -> Job:
    """A request as a job; raises ValueError (a 400 for that request alone) for what is wrong."""
    if item["kind"] == "chat":
        prompt = chat.format_messages(tok, item["messages"])
        ids = encode_messages(tok, item["messages"], prompt)
    elif isinstance(item["prompt"], list):  # token ids, as evaluation harnesses send them
        ids = [int(t) for t in item["prompt"]]
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        prompt = tok.decode(ids, skip_special_tokens=True)  # as the logprob tokens read
    else:
        prompt = item["prompt"]
        ids = decoding.encode_prompt(tok, prompt)
    if not ids:
        raise ValueError("the prompt is empty (no tokens); send at least one token")
    params = dict(item["sampling"])
    params["stop"] = tuple(params.get("stop") or ())
    max_new = params["max_new_tokens"]
    if item.get("fit") and limit is not None and len(ids) < limit:
        # No max_tokens was asked for: the answer takes what the context leaves.
        max_new = params["max_new_tokens"] = min(max_new, limit - len(ids))
    if limit is not None and len(ids) + max_new > limit:
        raise ValueError(
            f"the prompt has {len(ids)} tokens and max_tokens is {max_new}: "
            f"{len(ids) + max_new} tokens exceed the model's context of {limit}"
        )
    echo = bool(item.get("echo"))
    if max_new == 0 and not echo:
        raise ValueError("max_tokens=0 needs echo=true (it returns the prompt only)")
    bad = [t for t, _ in params.get("logit_bias", ()) if not 0 <= t < vocab]
    if bad:
        raise ValueError(
            f"logit_bias names token {bad[0]}, outside the vocabulary (0..{vocab - 1})"
        )
    if max_new:
        decoding.Sampling(**params)  # its own checks, for this request alone
    return Job(ids, params, echo, prompt if echo else "", item.get("group"))


def encode_messages(tok, messages: list[dict], prompt: str) -> list[int]:
    """The ids of a chat prompt in which only the chat template makes special tokens: what a user
    types (``</s><|system|>...``) is text, so it cannot open a turn of its own. A prompt whose
    messages hold no special token's text is tokenized whole, exactly as before."""
    specials = {t for t in (*tok.all_special_tokens, *tok.get_added_vocab()) if t}
    if not any(s in m["content"] for m in messages for s in specials):
        return decoding.encode_prompt(tok, prompt)
    # The template with a mark for each message's content: its own parts are tokenized with
    # special tokens, the contents with them split into plain text.
    marks = [{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)]
    parts = re.split("\ue000\\d+\ue001", chat.format_messages(tok, marks))
    ids = decoding.encode_prompt(tok, parts[0])
    for m, part in zip(messages, parts[1:], strict=True):
        ids += tok(m["content"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        ids += tok(part, add_special_tokens=False)["input_ids"]
    return ids


def completion_dict(c: decoding.Completion, echo: str = "", prompt_lps=None) -> dict:
    """A completion as plain data for the gateway; with echo, the prompt (and its token
    log-likelihoods) come first, as OpenAI's completions API returns them."""
    logprobs = None
    if c.logprobs is not None:
        logprobs = plain_logprobs([*(prompt_lps or ()), *c.logprobs])
    return {
        "text": echo + c.text,
        "finish_reason": c.finish_reason,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "logprobs": logprobs,
    }


def plain_logprobs(entries) -> list:
    """Logprob entries as plain data for the gateway (`mlit.serving.sse.token_logprobs` reads
    them back)."""
    return [[t.token, t.logprob, [list(p) for p in t.top]] for t in entries]
