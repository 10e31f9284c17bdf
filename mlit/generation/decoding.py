"""Batched text generation for HF causal LMs, with per-request sampling parameters and seeds.

Used by training (dev-set ROUGE-L, greedy) and by GPU benchmarks as a static batch; the Serve
deployment's continuous batching (`mlit.serving.engines.scheduler`) reuses its sampling, stop and logprob rules, so
every request keeps its own temperature, top-p, seed, stop strings and logprobs either way.
It imports no Ray, so it runs standalone anywhere torch does.

Why a loop of our own instead of ``model.generate``: ``generate`` takes one set of sampling
parameters and one RNG for the whole batch, so batching requests with different seeds would make
each answer depend on its batch-mates. Here every row has its own ``torch.Generator``: an answer
with a seed is the same whether it was batched or not (up to float non-associativity of batched
matmuls on some hardware).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # None: no logprobs; k >= 0: chosen token plus top k
    ignore_eos: bool = False  # keep going past EOS (fixed-length benchmarks; vLLM's flag)
    # OpenAI's: each generated token's logit loses frequency_penalty x its count so far, and
    # presence_penalty once it has appeared; logit_bias adds to the logits of the tokens named.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias) pairs

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be between 0 and 2, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_logprobs is not None and not 0 <= self.top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be between 0 and 20, got {self.top_logprobs}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be between -2 and 2, got {getattr(self, name)}")
        for token, bias in self.logit_bias:
            if not -100 <= bias <= 100:
                raise ValueError(f"logit_bias of token {token} must be between -100 and 100")

    @property
    def adjusts(self) -> bool:
        """Whether the logits are changed before sampling (penalties or a logit bias)."""
        return bool(self.frequency_penalty or self.presence_penalty or self.logit_bias)


PAPER_SAMPLING = Sampling(max_new_tokens=512, temperature=0.7, top_p=0.9)


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float | None  # None only for a prompt's first token, which has no context
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = field(default=None)


class ContextLengthError(ValueError):
    """The prompt plus the requested tokens do not fit in the model's context."""


def context_length(model) -> int | None:
    cfg = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a formatted prompt; BOS is added unless the template already wrote it."""
    bos = tokenizer.bos_token
    add_special = not (bos and prompt.startswith(bos))
    return tokenizer(prompt, add_special_tokens=add_special)["input_ids"]


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    sampling: Sampling | Sequence[Sampling] = Sampling(),
    synced: bool = False,
) -> list[Completion]:
    """Generate one completion per prompt, all in one batch.

    ``synced=True`` keeps all ranks of a torch.distributed group stepping together until every rank
    is done, which ZeRO-3 needs because each forward pass gathers sharded weights collectively.
    """
    import torch

    if not prompts:
        return []
    params = list(sampling) if isinstance(sampling, Sequence) else [sampling] * len(prompts)
    if len(params) != len(prompts):
        raise ValueError(f"{len(params)} sampling settings for {len(prompts)} prompts")
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    limit = context_length(model)
    for ids, sp in zip(encoded, params, strict=True):
        if limit is not None and len(ids) + sp.max_new_tokens > limit:
            raise ContextLengthError(
                f"prompt of {len(ids)} tokens plus max_tokens {sp.max_new_tokens} exceeds the "
                f"model's context of {limit} tokens"
            )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    eos = eos_ids(model, tokenizer)
    width = max(len(ids) for ids in encoded)
    rows = len(encoded)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    for i, ids in enumerate(encoded):  # left padding keeps every row's last token aligned
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    generators = [generator(sp.seed, device) for sp in params]
    temperature = torch.tensor([sp.temperature for sp in params], device=device)
    top_p = torch.tensor([sp.top_p for sp in params], device=device)
    want_logprobs = any(sp.top_logprobs is not None for sp in params)
    steps = max(sp.max_new_tokens for sp in params)

    out_ids: list[list[int]] = [[] for _ in range(rows)]
    out_lp: list[list[TokenLogprob]] = [[] for _ in range(rows)]
    finish: list[str | None] = [None] * rows
    past = None
    cur_ids = input_ids
    position = (attention.cumsum(-1) - 1).clamp(min=0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(steps):
                out = model(
                    input_ids=cur_ids,
                    attention_mask=attention,
                    position_ids=position,
                    cache=past,
                    use_cache=True,
                    logits_to_keep=1,  # only the last position is sampled from
                )
                past = out.cache
                logits = out.logits[:, -1, :].float()
                picked = pick_batch(
                    adjusted(logits, params, out_ids), params, generators, temperature, top_p
                )
                logp = torch.log_softmax(logits, dim=-1) if want_logprobs else None
                next_tokens = []
                for i, sp in enumerate(params):
                    if finish[i] is not None:
                        next_tokens.append(pad_id)
                        continue
                    token = picked[i]
                    next_tokens.append(token)
                    if sp.top_logprobs is not None:
                        out_lp[i].append(
                            token_logprob(tokenizer, logp[i], token, sp.top_logprobs, out_ids[i])
                        )
                    out_ids[i].append(token)
                    finish[i] = finished(tokenizer, out_ids[i], token, eos, sp)
                all_done = all(f is not None for f in finish)
                if synced and _dist_ready():
                    flag = torch.tensor([0.0 if all_done else 1.0], device=device)
                    torch.distributed.all_reduce(flag)
                    all_done = flag.item() == 0
                if all_done:
                    break
                cur_ids = torch.tensor(next_tokens, device=device).unsqueeze(-1)
                attention = torch.cat([attention, attention.new_ones((rows, 1))], dim=-1)
                position = position[:, -1:] + 1
    finally:
        model.train(was_training)

    return [
        completion(tokenizer, len(encoded[i]), out_ids[i], finish[i], sp, out_lp[i])
        for i, sp in enumerate(params)
    ]


def completion(
    tokenizer,
    prompt_tokens: int,
    ids: list[int],
    finish: str | None,
    sp: Sampling,
    logprobs: list[TokenLogprob],
) -> Completion:
    """The finished answer: text without EOS, cut at the first stop string."""
    text = _text(tokenizer, ids, sp)
    reason = finish or "length"
    for s in sp.stop:
        cut = text.find(s)
        if cut >= 0:
            text, reason = text[:cut], "stop"
    return Completion(
        text=text,
        finish_reason=reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(ids),
        logprobs=tuple(logprobs) if sp.top_logprobs is not None else None,
    )


def _text(tokenizer, ids: list[int], sp: Sampling) -> str:
    # EOS and the other special tokens are markup, not text (with ignore_eos too).
    return tokenizer.decode(ids, skip_special_tokens=True)


def stream_piece(tokenizer, ids: list[int], sp: Sampling, sent: str) -> str:
    """The text that can be handed out now, after ``sent``: never half a character (a token that
    ends inside a multi-byte character decodes to U+FFFD until the next one completes it), and never
    text that could turn out to be the start of a stop string."""
    text = _text(tokenizer, ids, sp)
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    if sp.stop:
        end = min(end, len(text) - (max(len(s) for s in sp.stop) - 1))
    if end <= len(sent) or not text.startswith(sent):
        return ""
    return text[len(sent) : end]


def eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def generator(seed: int | None, device):
    import torch

    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed) % (2**64))  # one-to-one on 64-bit seeds, signed or not
    return gen


def adjusted(logits, params: Sequence[Sampling], outputs: Sequence[list[int]]):
    """The logits each row samples from: penalties for the tokens it has generated so far, and its
    logit bias (OpenAI's definitions). Logprobs stay those of the model's own logits, as vLLM
    returns them by default. Rows that ask for neither cost nothing."""
    import torch

    rows = [i for i, sp in enumerate(params) if sp.adjusts]
    if not rows:
        return logits
    logits = logits.clone()
    vocab = logits.shape[-1]
    for i in rows:
        sp = params[i]
        if outputs[i] and (sp.frequency_penalty or sp.presence_penalty):
            ids = torch.tensor(outputs[i], device=logits.device).clamp(max=vocab - 1)
            counts = torch.bincount(ids, minlength=vocab).to(logits.dtype)
            logits[i] -= counts * sp.frequency_penalty + (counts > 0) * sp.presence_penalty
        for token, bias in sp.logit_bias:
            logits[i, token] += bias
    return logits


def pick_batch(logits, params: Sequence[Sampling], generators, temperature, top_p) -> list[int]:
    """Next token of every row at once: greedy rows take the argmax, the others nucleus-sample.

    Sampling is vectorised over the batch (inverse CDF); only the one uniform draw per row comes
    from that row's own generator, which is what keeps seeds per request. A row's token depends
    on its own logits and draw only, never on which rows share its batch: rows without a nucleus
    (top_p 1) walk the vocabulary in id order, nucleus rows in descending probability, each group
    on its own. (Sorting every row whenever one row had a nucleus changed the token a seeded
    top_p-1 row drew for the same draw, so its answer depended on its neighbours.)
    """
    import torch

    out = torch.argmax(logits, dim=-1)
    sampled = [i for i, sp in enumerate(params) if sp.temperature > 0]
    plain = [i for i in sampled if params[i].top_p >= 1]
    nucleus = [i for i in sampled if params[i].top_p < 1]
    for group, sort in ((plain, False), (nucleus, True)):
        if not group:
            continue
        rows = torch.tensor(group, device=logits.device)
        probs = torch.softmax(logits[rows] / temperature[rows, None], dim=-1)
        draws = torch.cat(
            [torch.rand(1, generator=generators[i], device=logits.device) for i in group]
        )
        out[rows] = _inverse_cdf(probs, top_p[rows, None] if sort else None, draws)
    return out.tolist()


def _inverse_cdf(probs, nucleus, draws):
    """The token each row's uniform draw falls on: over the vocabulary in id order when
    ``nucleus`` is None, else over the smallest set of most likely tokens holding ``nucleus``."""
    import torch

    if nucleus is None:
        candidates, order = probs, None
    else:
        # A full sort of the vocabulary per row per step is the slowest part on CPU; the top few
        # hundred tokens nearly always hold the nucleus, so sort those and fall back if not.
        k = min(probs.shape[-1], 256)
        candidates, order = torch.topk(probs, k, dim=-1)
        if k < probs.shape[-1] and bool((candidates.sum(-1, keepdim=True) < nucleus).any()):
            candidates, order = torch.sort(probs, descending=True, dim=-1)
        keep = (candidates.cumsum(-1) - candidates) < nucleus  # the nucleus, at least one token
        candidates = candidates * keep
    cdf = candidates.cumsum(-1)
    idx = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(-1)).clamp(max=cdf.shape[-1] - 1)
    return (idx if order is None else order.gather(-1, idx)).squeeze(-1)


def token_logprob(tokenizer, logp, token: int, k: int, previous: list[int]) -> TokenLogprob:
    """A sampled token's logprob entry. Its text is what the token adds to the decoded text, so
    the tokens of an answer concatenate to its text even where one character spans two tokens
    (decoded alone, each half would be U+FFFD)."""
    import torch

    top = ()
    if k:
        values, idx = torch.topk(logp, k)
        top = tuple(
            (tokenizer.decode([int(t)]), float(v)) for v, t in zip(values, idx, strict=True)
        )
    value = float(logp[token])
    text = token_text(tokenizer, previous, token)
    return TokenLogprob(text, value if math.isfinite(value) else -1e9, top)


def token_text(tokenizer, previous: list[int], token: int) -> str:
    """What ``token`` adds to the text of ``previous`` (a short window is enough to settle
    leading spaces and multi-byte characters, and keeps this linear in the answer's length)."""
    window = previous[-8:]
    # U+FFFD at the end is a character still incomplete: it belongs to the token that completes it.
    before = tokenizer.decode(window, skip_special_tokens=True).rstrip("\ufffd")
    after = tokenizer.decode([*window, token], skip_special_tokens=True).rstrip("\ufffd")
    if after.startswith(before):
        return after[len(before) :]
    return tokenizer.decode([token], skip_special_tokens=True)


def prompt_logprobs(model, tokenizer, ids: list[int], k: int) -> list[TokenLogprob]:
    """The log-likelihood of every prompt token given the ones before it (the first has none:
    its logprob is None), with the top ``k`` alternatives: what evaluators read from an echoed
    completion with ``max_tokens=0``."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    out = [TokenLogprob(token_text(tokenizer, [], ids[0]), None, ())]
    out += [token_logprob(tokenizer, logp[i - 1], ids[i], k, ids[:i]) for i in range(1, len(ids))]
    return out


def finished(tokenizer, ids: list[int], token: int, eos_ids: set[int], sp: Sampling):
    if token in eos_ids and not sp.ignore_eos:
        return "stop"
    if sp.stop:
        tail = tokenizer.decode(ids[-32:], skip_special_tokens=True)
        if any(s in tail for s in sp.stop):
            return "stop"
    if len(ids) >= sp.max_new_tokens:
        return "length"
    return None


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
