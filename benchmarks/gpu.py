"""Training and generation at real model sizes on one GPU: tokens/s, MFU and the decode limit.

    # on a GPU machine with torch, transformers and accelerate (no Ray, no hub, no vLLM needed):
    pip install deepspeed==0.19.8              # as in constraints.txt, or its wheel carried along
    python benchmarks/gpu.py                   # < 8 min on an H100; writes benchmarks/results/gpu-<card>.json
    python benchmarks/gpu.py --smoke           # tiny shapes, CPU or GPU, under a minute (the tests run it)

What it measures, for the shapes of Qwen2.5-0.5B and Qwen2.5-1.5B (written below as numbers; the
weights are random, so nothing is downloaded):

1. the card's own limits: the bf16 matmul peak (8192^3 matmuls) and the memory bandwidth (a large
   device-to-device copy);
2. the training step exactly as `mlit.training.trainer` runs it: HF ``Trainer`` with the same
   ``TrainingArguments`` and DeepSpeed ZeRO-2 config (`mlit.training.trainer.training_arguments`), bf16, the
   paper's sequence lengths (1,024 instruction + 512 response tokens), 4 sequences per step:
   tokens/s and MFU against the measured peak (FLOPs: 6 x parameters + 12 x layers x hidden x
   sequence per token, forward and backward);
3. generation with the ``hf`` engine (`mlit.generation.decoding.generate`, the one the Serve app and dev-set
   scoring use) at batch 1, 64 and 256, 128-token prompts, 512 new tokens (``ignore_eos``), the
   paper's sampling: tokens/s and the ratio to the decode limit that memory bandwidth sets (every
   step reads the weights once plus each row's KV cache);
4. the same generation through vLLM, when ``import vllm`` works on the machine (it may not be
   installed there; the result says so).

`mlit estimate` reads the newest result file for its training MFU and generation throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # mlit without installing it

RESULTS = Path(__file__).parent / "results"

# Shapes from the models' published config.json files.
SHAPES = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
}
SMOKE_SHAPE = dict(
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=512,
    tie_word_embeddings=True,
)


def _sizes(smoke: bool) -> dict:
    if smoke:
        return dict(inp=48, target=16, steps=4, warm=1, batch=2, prompt=16, new=16, gen=(1, 4))
    return dict(
        inp=1024, target=512, steps=12, warm=3, batch=4, prompt=128, new=512, gen=(1, 64, 256)
    )


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def card_limits(torch, device: str, smoke: bool) -> dict:
    """The measured bf16 matmul peak (FLOP/s) and memory bandwidth (bytes/s) of this device."""
    n = 256 if smoke else 8192
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(torch)
    reps = 5 if smoke else 50
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(torch)
    peak = 2 * n**3 * reps / (time.perf_counter() - start)
    size = (16 if smoke else 2048) * 2**20
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(torch)
    reps = 5 if smoke else 20
    start = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    _sync(torch)
    bandwidth = 2 * size * reps / (time.perf_counter() - start)  # read + write
    return {"matmul_flops": peak, "bandwidth_bytes_s": bandwidth}


def make_tokenizer(vocab: int):
    """A word-level tokenizer over the model's whole vocabulary ("t0" .. "tN"): real ids, real
    decoding, no hub."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    core = Tokenizer(models.WordLevel(words, unk_token="t1"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="t0", pad_token="t0", unk_token="t1"
    )


def make_model(torch, shape: dict, device: str, dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape, max_position_embeddings=4096, rope_theta=1e6)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(device=device, dtype=dtype)
    return model, sum(p.numel() for p in model.parameters())


def train_step(torch, shape: dict, sizes: dict, device: str, peak: float) -> dict:
    """Steps of `mlit.training.trainer`'s Trainer + DeepSpeed ZeRO-2 on random sequences of full length."""
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainerCallback

    from mlit.method.hyperparameters import TrainConfig
    from mlit.training import trainer

    trainer._prepare_distributed_env()
    cfg = TrainConfig.paper(
        max_steps=sizes["steps"],
        batch_size=sizes["batch"],
        per_device_batch_size=sizes["batch"],
        zero_stage=2,
        bf16=device == "cuda",
    )
    model, params = make_model(torch, shape, device, torch.float32)  # DeepSpeed casts to bf16
    tok = make_tokenizer(shape["vocab_size"])
    length = sizes["inp"] + sizes["target"]
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(sizes["steps"] * sizes["batch"]):
        ids = torch.randint(2, shape["vocab_size"], (length,), generator=gen).tolist()
        rows.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * length,
                "labels": [-100] * sizes["inp"] + ids[sizes["inp"] :],
            }
        )
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            _sync(torch)
            times.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            _sync(torch)
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as work:
        args = trainer.training_arguments(cfg, Path(work), world=1, on_gpu=device == "cuda")
        hf_trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
            callbacks=[Clock()],
        )
        hf_trainer.remove_callback(PrinterCallback)
        hf_trainer.train()
        if not hf_trainer.is_deepspeed_enabled:
            raise RuntimeError("the Trainer did not start DeepSpeed")
    steps = [end - begin for begin, end in zip(times[::2], times[1::2], strict=True)]
    timed = steps[sizes["warm"] :]
    tokens_s = sizes["batch"] * length * len(timed) / sum(timed)
    flops_per_token = 6 * params + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * length
    del hf_trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "parameters": params,
        "sequence_tokens": length,
        "sequences_per_step": sizes["batch"],
        "zero_stage": 2,
        "step_s": round(sum(timed) / len(timed), 4),
        "tokens_per_s": round(tokens_s, 1),
        "mfu": round(tokens_s * flops_per_token / peak, 4),
    }


def decode_limit(shape: dict, params: int, batch: int, context: int, bandwidth: float, nbytes: int):
    """Tokens/s if each decode step only had to read the weights and the batch's KV cache."""
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    kv_per_token = 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim * nbytes
    step_bytes = params * nbytes + batch * context * kv_per_token
    return batch * bandwidth / step_bytes


def generate_hf(torch, shape: dict, sizes: dict, device: str, limits: dict) -> list[dict]:
    from mlit.generation import decoding

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, params = make_model(torch, shape, device, dtype)
    model.eval()
    tok = make_tokenizer(shape["vocab_size"])
    sampling = decoding.Sampling(sizes["new"], temperature=0.7, top_p=0.9, ignore_eos=True)
    out = []
    for batch in sizes["gen"]:
        prompts = [
            " ".join(f"t{2 + (i * 7 + j) % 1000}" for j in range(sizes["prompt"]))
            for i in range(batch)
        ]
        decoding.generate(model, tok, prompts[:1], decoding.Sampling(4))  # warm-up
        _sync(torch)
        start = time.perf_counter()
        done = decoding.generate(model, tok, prompts, [sampling] * batch)
        _sync(torch)
        wall = time.perf_counter() - start
        tokens = sum(c.completion_tokens for c in done)
        context = sizes["prompt"] + sizes["new"] // 2
        nbytes = 2 if device == "cuda" else 4  # bf16 on a GPU, float32 on CPU
        limit = decode_limit(shape, params, batch, context, limits["bandwidth_bytes_s"], nbytes)
        out.append(
            {
                "batch": batch,
                "new_tokens": sizes["new"],
                "tokens_per_s": round(tokens / wall, 1),
                "bandwidth_limit_tokens_per_s": round(limit, 1),
                "share_of_limit": round(tokens / wall / limit, 4),
            }
        )
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def generate_vllm(torch, shape: dict, sizes: dict, limits: dict) -> list[dict] | str:
    try:
        from vllm import LLM, SamplingParams
    except Exception as err:  # not installed here, or broken: say so in the result
        return f"vllm not importable: {type(err).__name__}: {str(err)[:200]}"
    model, params = make_model(torch, shape, "cpu", torch.bfloat16)
    tok = make_tokenizer(shape["vocab_size"])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        del model
        llm = LLM(model=tmp, dtype="bfloat16", enforce_eager=False, gpu_memory_utilization=0.8)
        sampling = SamplingParams(
            max_tokens=sizes["new"], temperature=0.7, top_p=0.9, ignore_eos=True
        )
        out = []
        for batch in sizes["gen"]:
            prompts = [
                {"prompt_token_ids": [2 + (i * 7 + j) % 1000 for j in range(sizes["prompt"])]}
                for i in range(batch)
            ]
            start = time.perf_counter()
            done = llm.generate(prompts, sampling, use_tqdm=False)
            wall = time.perf_counter() - start
            tokens = sum(len(o.outputs[0].token_ids) for o in done)
            context = sizes["prompt"] + sizes["new"] // 2
            limit = decode_limit(shape, params, batch, context, limits["bandwidth_bytes_s"], 2)
            out.append(
                {
                    "batch": batch,
                    "tokens_per_s": round(tokens / wall, 1),
                    "share_of_limit": round(tokens / wall / limit, 4),
                }
            )
        del llm
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, for the tests")
    parser.add_argument("--out", type=Path, help="result file (default: benchmarks/results/)")
    parser.add_argument("--shapes", nargs="*", choices=sorted(SHAPES), default=sorted(SHAPES))
    parser.add_argument("--skip-vllm", action="store_true")
    args = parser.parse_args()

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        parser.error("no CUDA GPU here: run it on a GPU machine, or add --smoke for tiny shapes")
    card = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.machine()})"
    shapes = {"smoke": SMOKE_SHAPE} if args.smoke else {k: SHAPES[k] for k in args.shapes}
    sizes = _sizes(args.smoke)
    begin = time.perf_counter()
    limits = card_limits(torch, device, args.smoke)
    print(
        f"{card}: matmul {limits['matmul_flops'] / 1e12:.1f} TFLOP/s, "
        f"copy {limits['bandwidth_bytes_s'] / 1e9:.0f} GB/s",
        flush=True,
    )
    result: dict = {
        "card": card,
        "device": device,
        "smoke": args.smoke,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "limits": limits,
        "models": {},
    }
    for name, shape in shapes.items():
        row: dict = {"shape": shape}
        row["train"] = train_step(torch, shape, sizes, device, limits["matmul_flops"])
        print(f"{name} train: {row['train']}", flush=True)
        row["generate_hf"] = generate_hf(torch, shape, sizes, device, limits)
        print(f"{name} generate (hf): {row['generate_hf']}", flush=True)
        if device == "cuda" and not args.skip_vllm:
            row["generate_vllm"] = generate_vllm(torch, shape, sizes, limits)
            print(f"{name} generate (vllm): {row['generate_vllm']}", flush=True)
        result["models"][name] = row
    result["wall_s"] = round(time.perf_counter() - begin, 1)
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    out = args.out or RESULTS / f"gpu-{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
