"""What a paid model's calls cost, and a budget that stops a run before it is passed.

Prices are dollars per million tokens, from the user (``--judge-input-price``,
``--judge-output-price``) or from litellm's bundled cost map (never fetched: clusters may be
offline). A Batch API call costs `BATCH_DISCOUNT` of the online price (OpenAI, Anthropic).

The budget works by reservation: before a call (or a batch) is sent, its largest likely cost is
reserved; when its usage comes back, the reservation becomes the real cost. A call is sent only
if what is spent, what is reserved by calls in flight and its own reservation stay within the
budget; so the run stops *before* the budget would be passed, not after.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

BATCH_DISCOUNT = 0.5  # Batch APIs bill half the online price (OpenAI, Anthropic)


def dollars(x: float) -> str:
    """Dollars as a user reads them: cents, or four decimals under a dollar."""
    return f"${x:,.2f}" if x >= 1 or x == 0 else f"${x:.4f}"


class BudgetError(RuntimeError):
    """A plan or a run that would pass ``--max-cost``; nothing past the budget was sent."""


class BudgetStop(BudgetError):
    """A phase stopped cleanly, before passing the budget (``why``: "budget") or because the
    provider asked it to (a long Retry-After, a cancelled batch: "provider"); ``summary`` is
    what it did until then. The run resumes where it stopped."""

    def __init__(self, message: str, summary: dict, why: str = "budget"):
        super().__init__(message)
        self.summary, self.why = summary, why


@dataclass(frozen=True)
class Prices:
    input_per_m: float  # dollars per million input tokens
    output_per_m: float
    source: str  # "given", or "litellm" with the model's name

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None, batch: bool) -> float:
        dollars = (
            (prompt_tokens or 0) * self.input_per_m + (completion_tokens or 0) * self.output_per_m
        ) / 1e6
        return dollars * (BATCH_DISCOUNT if batch else 1.0)

    def describe(self) -> str:
        return f"${self.input_per_m:g} / ${self.output_per_m:g} per million tokens ({self.source})"


def prices_for(
    model: str | None, input_price: float | None = None, output_price: float | None = None
) -> Prices | None:
    """The model's prices: the given ones, else litellm's map, else None (unknown: self-hosted
    models, or a name litellm does not price). One given price with the other unknown is 0."""
    for name, value in (("input", input_price), ("output", output_price)):
        if value is not None and value < 0:
            raise ValueError(f"--judge-{name}-price must be >= 0, got {value}")
    if input_price is not None or output_price is not None:
        return Prices(input_price or 0.0, output_price or 0.0, "given")
    if not model:
        return None
    try:
        import litellm

        info = litellm.model_cost.get(model) or litellm.model_cost.get(model.split("/", 1)[-1])
    except Exception:  # an unknown name is simply not priced
        info = None
    if not info or info.get("input_cost_per_token") is None:
        return None
    return Prices(
        float(info["input_cost_per_token"]) * 1e6,
        float(info.get("output_cost_per_token") or 0.0) * 1e6,
        f"litellm's price of {model}",
    )


def prompt_tokens(prompt: str) -> int:
    """An upper estimate of a prompt's tokens before its usage is known: a third of its UTF-8
    bytes (English BPE runs at ~4 bytes a token, most scripts at 2-3 bytes a character and about
    a token per character or less), plus the chat template's few tokens."""
    return len(prompt.encode("utf-8")) // 3 + 8


class Budget:
    """Dollars spent and reserved against ``--max-cost`` (None: no limit, costs still counted).
    Shared by the calls of a phase (threads or one event loop)."""

    def __init__(self, limit: float | None, prices: Prices | None, batch: bool = False):
        if limit is not None and limit < 0:
            raise ValueError(f"--max-cost must be >= 0, got {limit}")
        self.limit, self.prices, self.batch = limit, prices, batch
        self.spent = 0.0
        self.fixed = 0.0  # held by batches in flight, at their estimate
        self.estimated = 0.0  # the estimates of single calls in flight, before `scale`
        self.stopped: str | None = None
        self.unmetered = 0  # replies without usage, charged at the estimate (`cost_of`)
        # Estimates are estimates: once a call is seen to cost more than its estimate, every
        # call in flight and to come is held at that ratio, so they cannot together pass it.
        self.scale = 1.0
        self._lock = threading.Lock()

    @property
    def reserved(self) -> float:
        return self.fixed + self.estimated * self.scale

    def estimate(self, sent: int, max_tokens: int) -> float:
        """The most a call of ``sent`` prompt tokens (`prompt_tokens`) and at most
        ``max_tokens`` back could cost."""
        if self.prices is None:
            return 0.0
        return self.prices.cost(sent, max_tokens, self.batch)

    def hold(self, estimate: float) -> bool:
        """Hold one call's `estimate` (scaled by what calls really cost so far) before it is
        sent; False (and `stopped` says why): it could pass the budget, so it is not sent."""
        return self._take(estimate, scaled=True)

    def reserve(self, amount: float) -> bool:
        """Hold a fixed ``amount`` (a batch about to be submitted); False as for `hold`."""
        return self._take(amount, scaled=False)

    def _take(self, amount: float, scaled: bool) -> bool:
        with self._lock:
            if self.stopped:
                return False
            need = amount * self.scale if scaled else amount
            if need > self._room():
                self._refuse(need)
                return False
            if scaled:
                self.estimated += amount
            else:
                self.fixed += amount
            return True

    def room(self) -> float:
        """Dollars that may still be reserved (infinite without a limit)."""
        with self._lock:
            return self._room()

    def _room(self) -> float:
        return float("inf") if self.limit is None else self.limit - self.spent - self.reserved

    def refuse(self, amount: float) -> None:
        """Stop: a call of ``amount`` does not fit (`stopped` gives the figures)."""
        with self._lock:
            self._refuse(amount)

    def _refuse(self, amount: float) -> None:
        self.stopped = (
            f"the budget --max-cost {dollars(self.limit)} is reached: ${self.spent:.4f} spent, "
            f"${self.reserved:.4f} held by calls in flight, the next call could cost "
            f"${amount:.4f}"
        )

    def settle(self, estimate: float, result: dict, sent: int, max_tokens: int) -> float:
        """A call held with `hold` is back: its estimate is released and its cost (`cost_of`)
        spent. Returns the cost."""
        cost = self.cost_of(result, sent, max_tokens)
        with self._lock:
            self.estimated -= estimate
            self.spent += cost
            if estimate > 0:
                self.scale = max(self.scale, cost / estimate)
        return cost

    def settle_fixed(self, amount: float, cost: float) -> None:
        """A batch held with `reserve` is read: ``amount`` released, ``cost`` spent."""
        with self._lock:
            self.fixed -= amount
            self.spent += cost

    def cost_of(self, result: dict, sent: int, max_tokens: int) -> float:
        """What one call (a prompt of ``sent`` estimated tokens, `prompt_tokens`; at most
        ``max_tokens`` back) cost: its usage at the prices. A reply without usage (some proxies and providers leave it out, or report 0
        tokens for a text) is charged at mlit's upper estimate of the text sent and received,
        never at 0: the budget holds either way. It is marked ``usage_estimated`` and counted
        in `unmetered`. A failed call that reports no usage costs nothing."""
        if self.prices is None:  # unpriced: what litellm reports (0 for self-hosted models)
            return float(result.get("cost_usd") or 0.0)
        used, got = result.get("prompt_tokens"), result.get("completion_tokens")
        text = None  # a reply's text (a judge's verdict keeps it as "raw")
        if result.get("status") == "ok":
            text = result["text"] if "text" in result else result.get("raw")
        if text is not None and (not used or (not got and text)):
            used = used or sent
            got = got or min(max_tokens, prompt_tokens(text))
            result["usage_estimated"] = True
            with self._lock:
                self.unmetered += 1
        return self.prices.cost(used, got, self.batch)

    def progress(self) -> str:
        limit = f" of {dollars(self.limit)}" if self.limit is not None else ""
        return f"{dollars(self.spent)}{limit}"


def check_plan(expected: float, limit: float | None, what: str) -> None:
    """A plan whose expected cost passes the budget stops before any work, with the figure."""
    if limit is not None and expected > limit:
        raise BudgetError(
            f"{what} is expected to cost {dollars(expected)}, over the budget --max-cost "
            f"{dollars(limit)}: nothing was run. Raise --max-cost, or judge fewer pairs (--languages), "
            "or use --judge-mode batch (half price where the provider offers it)"
        )
