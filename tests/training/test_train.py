"""The training step without Ray: masking, config errors, learning, checkpoint selection, LoRA."""

import json
import os
import subprocess
import sys

import pytest

from mlit.generation import chat, decoding
from mlit.method import mixtures
from mlit.training import trainer
from mlit.training.trainer import TrainConfig, TrainError

REPEATED = [
    ("Name a colour.", "Blue is a colour."),
    ("Name a fruit.", "An apple is a fruit."),
    ("Name an animal.", "A cat is an animal."),
    ("Name a city.", "Paris is a city."),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


def test_instruction_tokens_are_masked_and_response_tokens_are_not(tokenizer):
    from transformers import DataCollatorForSeq2Seq

    cfg = TrainConfig.demo(max_input_tokens=6, max_target_tokens=5)
    long_instruction = "Explain in great detail why the sky looks blue on a clear summer day."
    examples = [
        trainer.encode_example(tokenizer, long_instruction, "Because of scattering of light.", cfg),
        trainer.encode_example(tokenizer, "Hi", "Hello", cfg),
    ]
    for ex in examples:
        n_labels = sum(label != -100 for label in ex["labels"])
        prompt_len = len(ex["labels"]) - n_labels
        assert all(label == -100 for label in ex["labels"][:prompt_len])
        assert ex["labels"][prompt_len:] == ex["input_ids"][prompt_len:]
        assert ex["labels"][-1] == tokenizer.eos_token_id
        assert n_labels <= cfg.max_target_tokens
    # The truncated instruction keeps the chat template around at most 6 instruction tokens.
    prompt = chat.format_prompt(tokenizer, chat.truncate_text(tokenizer, long_instruction, 6))
    assert prompt.endswith("<|assistant|>\n")
    first = examples[0]
    assert first["input_ids"][: len(decoding.encode_prompt(tokenizer, prompt))] == (
        decoding.encode_prompt(tokenizer, prompt)
    )
    # A real padded batch: padding also carries -100.
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(examples)
    short = batch["labels"][1]
    pad_positions = batch["attention_mask"][1] == 0
    assert (short[pad_positions] == -100).all()
    assert (short != -100).sum() == sum(label != -100 for label in examples[1]["labels"])


def test_bad_configs_are_rejected_with_the_value():
    with pytest.raises(TrainError, match="ZeRO stage must be 0, 1, 2 or 3, got 5"):
        TrainConfig(zero_stage=5)
    with pytest.raises(TrainError, match="parameter offload needs ZeRO stage 3"):
        TrainConfig(zero_stage=2, offload_params=True)
    with pytest.raises(TrainError, match="dropout"):
        TrainConfig(dropout=1.5)


def test_unknown_base_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(TrainError, match="no such directory"):
        trainer.load_model_and_tokenizer(str(tmp_path / "nope"), TrainConfig())
    with pytest.raises(TrainError, match="cannot load base model 'no-such-org/no-such-model'"):
        trainer.load_model_and_tokenizer("no-such-org/no-such-model", TrainConfig())


def test_dev_set_that_swallows_training_is_rejected(sample):
    from mlit.data import dataset

    ids = dataset.train_ids(sample)
    with pytest.raises(mixtures.MixtureError, match="swallow"):
        mixtures.build(mixtures.uniform(["en", "fi"], "u"), ids, budget=4, dev_size=4)


def test_loss_falls_and_the_exported_checkpoint_is_the_best_evaluated(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = TrainConfig.demo(
        max_steps=40,
        eval_every=10,
        learning_rate=3e-3,
        batch_size=8,
        per_device_batch_size=8,
        dev_max_new_tokens=12,
    )
    out = tmp_path / "model"
    result = trainer.train_model(str(tiny_base), REPEATED * 8, REPEATED, cfg, out, {"x": 1})
    losses = [loss for _, loss in result.losses]
    assert losses[-1] < 0.6 * losses[0]
    scores = dict(result.curve)
    assert sorted(scores) == [10, 20, 30, 40]
    assert result.best_dev_rouge_l == max(scores.values())
    assert scores[result.best_step] == result.best_dev_rouge_l
    meta = json.loads((out / trainer.METADATA).read_text())
    assert meta["best_step"] == result.best_step and meta["x"] == 1
    assert meta["train_config"]["zero_stage"] == 2 and "torch" in meta["versions"]
    assert [list(p) for p in result.curve] == meta["dev_rouge_l_curve"]
    # The exported weights are the selected checkpoint: scoring them again gives the same number.
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    again = trainer.dev_rouge_l(model, tok, REPEATED, cfg)
    assert again == pytest.approx(result.best_dev_rouge_l, abs=1e-6)


def test_lora_exports_merged_weights_and_the_adapter(tiny_base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = TrainConfig.demo(max_steps=6, eval_every=3, lora_rank=4, dev_max_new_tokens=8)
    out = tmp_path / "lora"
    trainer.train_model(str(tiny_base), REPEATED * 2, REPEATED[:2], cfg, out)
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    tok = AutoTokenizer.from_pretrained(out)
    [done] = decoding.generate(
        model, tok, [chat.format_prompt(tok, "Name a city.")], decoding.Sampling(max_new_tokens=5)
    )
    assert done.completion_tokens >= 1
    # The adapter is kept beside the merged weights (vLLM serves it on its base's engine): the
    # base with it gives the merged model's logits.
    import torch
    from peft import PeftModel

    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == str(tiny_base)
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    with_adapter = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    ids = tok("Name a city.", return_tensors="pt").input_ids
    with torch.no_grad():
        want, got = model.eval()(ids).logits, with_adapter(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_base).eval()(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(plain, want, atol=1e-4)  # the adapter learned something


def test_demo_model_builds_offline_and_is_cached(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "mlit",
        "demo-model",
        str(tmp_path / "demo"),
        "--pretrain-steps",
        "5",
    ]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "built in" in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "cached" in second.stdout
    assert (tmp_path / "demo" / "tokenizer.json").exists()
    assert (
        json.loads((tmp_path / "demo" / "mlit_demo.json").read_text())["config"]["pretrain_steps"]
        == 5
    )
