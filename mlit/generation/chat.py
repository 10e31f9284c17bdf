"""How an instruction becomes a model prompt, the same way in training, generation and serving.

A tokenizer with a chat template formats ``[{"role": "user", "content": instruction}]`` with the
generation prompt appended. A tokenizer without one (most base models) uses the plain template
below, which is documented so users can reproduce prompts by hand:

    ### Instruction:
    {instruction}

    ### Response:
"""

from __future__ import annotations

import functools

PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"


def format_prompt(tokenizer, instruction: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )
    return PLAIN_TEMPLATE.format(instruction=instruction)


def format_messages(tokenizer, messages: list[dict]) -> str:
    """An OpenAI-style message list as a prompt (system/user/assistant turns)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            parts.append(PLAIN_TEMPLATE.format(instruction=m["content"]))
        else:
            parts.append(f"{m['content']}\n\n")
    return "".join(parts)


def truncate_text(tokenizer, text: str, max_tokens: int) -> str:
    """Cut a text to at most ``max_tokens`` tokens (before templating, so the template survives)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


@functools.cache  # one tokenizer load per run: generation and judging cut alike
def instruction_cutter(model: str, max_tokens: int | None):
    """The cut training applies to an instruction (`truncate_text` at ``max_tokens``, with the
    base model's tokenizer), as a function of the text, for the prompts of generation: the models
    never saw a longer input. None when there is no cut (``max_tokens`` 0 or None)."""
    if not max_tokens:
        return None
    from transformers import AutoTokenizer

    from mlit.store import model_refs

    tokenizer = AutoTokenizer.from_pretrained(model_refs.source(model))
    tokenizer.model_max_length = 2**62  # counting only: no warning about long texts
    return lambda text: truncate_text(tokenizer, text, max_tokens)
