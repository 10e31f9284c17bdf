"""The command line shared by every `sweeps/*.py` script: flags over a typed `SweepConfig`."""

from __future__ import annotations

import sys
from dataclasses import replace

import typer

from mlit.pipeline import SweepConfig


def run_script(config: SweepConfig) -> None:
    """Parse the flags of a sweep script over its config and run the sweep."""
    from mlit.pipeline import run_sweep

    _command(config, run_sweep)


def run_paper(config: SweepConfig) -> None:
    """The same flags, for every experiment of the paper in turn (sweeps/paper.py)."""
    from mlit.pipeline import run_paper as runner

    _command(config, runner)


def _command(config: SweepConfig, runner) -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command(help=(sys.modules["__main__"].__doc__ or config.experiment))
    def main(
        preset: str = typer.Option(config.preset, help="'demo' (embedded default) or 'paper'."),
        base_model: str = typer.Option(None, help="HF hub name or local model directory."),
        judge: str = typer.Option(None, help="litellm model string (default: the demo judge)."),
        judge_api_base: str = typer.Option(None, help="Judge endpoint (self-hosted judges)."),
        judge_api_key_env: str = typer.Option(None, help="Variable holding the judge API key."),
        judge_prompt: str = typer.Option(None, help="Judge prompt template file."),
        judge_model_dir: str = typer.Option(
            None, help="An HF judge model directory to self-host on Serve (default: demo judge)."
        ),
        judge_concurrency: int = typer.Option(config.judge_concurrency),
        data: str = typer.Option(config.data, help="'sample', a JSONL/Parquet path or 'hf:NAME'."),
        languages: str = typer.Option(None, help="Restrict to these languages, e.g. 'fi,en,ru'."),
        output: str = typer.Option(None, help="Run folder (default: results/<experiment>)."),
        store: str = typer.Option(None, help="Store folder or URI (default: ~/.cache/mlit/store)."),
        workers: int = typer.Option(None, help="Ray Train workers per trial."),
        gpus_per_worker: float = typer.Option(config.gpus_per_worker),
        zero_stage: int = typer.Option(config.zero_stage, help="DeepSpeed ZeRO stage 0-3."),
        lora_rank: int = typer.Option(config.lora_rank, help="LoRA rank (0: full fine-tuning)."),
        seed: int = typer.Option(config.seed),
        budget: int = typer.Option(None, help="Examples per mixture."),
        max_steps: int = typer.Option(None, help="Override the preset's training steps."),
        pretraining_shares: str = typer.Option(None, help="JSON {lang: share} for §4.2."),
        port: int = typer.Option(None, help="Port of the Serve app (default: a free one)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; run nothing."),
    ) -> None:
        try:
            cfg = replace(
                config, preset=preset, base_model=base_model, judge=judge,
                judge_api_base=judge_api_base, judge_api_key_env=judge_api_key_env,
                judge_prompt=judge_prompt, judge_model_dir=judge_model_dir,
                judge_concurrency=judge_concurrency, data=data,
                languages=tuple(languages.split(",")) if languages else config.languages,
                output=output or config.output, store=store, workers=workers,
                gpus_per_worker=gpus_per_worker, zero_stage=zero_stage, lora_rank=lora_rank,
                seed=seed, budget=budget, max_steps=max_steps,
                pretraining_shares=pretraining_shares, serve_port=port, dry_run=dry_run,
            )  # fmt: skip
            runner(cfg)
        except (ValueError, OSError, RuntimeError) as err:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from err
        except KeyboardInterrupt:
            typer.secho("interrupted: finished work is in the store; rerun to continue",
                        fg=typer.colors.YELLOW, err=True)  # fmt: skip
            raise typer.Exit(130) from None

    app()
