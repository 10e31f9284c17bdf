"""The command line of every `sweeps/*.py` script (and of `mlit train`), generated from
`SweepConfig`'s fields.

Each field is a flag (``base_model`` -> ``--base-model``; a field may name its flag in its metadata),
its help is the field's ``metadata["help"]``, and its default is the value the script's ``CONFIG``
set. Only flags given on the command line replace those values: a script that pins
``preset="paper"``, a base model and a judge runs as written with no flags at all.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import Field, fields, replace

import click

from mlit.generation.answer_client import SamplingParams
from mlit.planning.config import SweepConfig
from mlit.plumbing import console, interrupts
from mlit.sweep.phases import SweepFailed

FIXED = ("experiment",)  # what the script is; not a flag


def flag_name(f: Field) -> str:
    return "--" + f.metadata.get("flag", f.name).replace("_", "-")


def _sampling(text: str) -> SamplingParams:
    values = {}
    for part in filter(None, text.split(",")):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in ("temperature", "top_p", "max_tokens", "seed"):
            raise click.BadParameter(
                f"{part!r}: give name=value with names temperature, top_p, max_tokens, seed"
            )
        values[name.strip()] = (
            float(value) if name.strip() in ("temperature", "top_p") else int(value)
        )
    return SamplingParams(**values)


def _languages(text: str) -> tuple[str, ...]:
    return tuple(code.strip() for code in text.split(",") if code.strip())


def _converter(f: Field) -> tuple[click.ParamType | type, Callable | None]:
    hint = str(f.type)
    if "SamplingParams" in hint:
        return click.STRING, _sampling
    if "tuple" in hint:
        return click.STRING, _languages
    for name, kind in (("bool", click.BOOL), ("int", click.INT), ("float", click.FLOAT)):
        if hint.split(" ")[0] == name:
            return kind, None
    return click.STRING, None


def _shown(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, SamplingParams):
        return ",".join(f"{k}={v}" for k, v in vars(value).items())
    return str(value)


def options(config: SweepConfig, only: tuple[str, ...] | None = None) -> list[click.Option]:
    """One click option per config field (or per field in ``only``); its default (shown in
    --help) is the script's value."""
    out = []
    for f in fields(SweepConfig):
        if f.name in FIXED or (only is not None and f.name not in only):
            continue
        value, help = getattr(config, f.name), f.metadata.get("help")
        kind, _ = _converter(f)
        if kind is click.BOOL:
            names = [f"{flag_name(f)}/--no-{flag_name(f)[2:]}", f.name]
            out.append(click.Option(names, default=value, help=help, show_default=True))
        else:
            out.append(
                click.Option(
                    [flag_name(f), f.name],
                    type=kind,
                    default=_shown(value),
                    help=help,
                    show_default=value is not None,
                )
            )
    return out


def apply(config: SweepConfig, given: dict) -> SweepConfig:
    """The script's config with the flags given on the command line applied; checked again."""
    by_name = {f.name: f for f in fields(SweepConfig)}
    changes = {}
    for name, raw in given.items():
        _, convert = _converter(by_name[name])
        changes[name] = convert(raw) if convert and raw is not None else raw
    return replace(config, **changes)


def given(values: dict) -> dict:
    """Only what the user typed: a default is the script's own value and must not replace it."""
    ctx = click.get_current_context()
    source = click.core.ParameterSource.COMMANDLINE
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) == source}


def _verbatim(doc: str) -> str:
    """Keep a script docstring's indented command examples as written (click rewraps text)."""
    paragraphs = doc.strip().split("\n\n")
    return "\n\n".join("\b\n" + p if p.startswith("    ") else p for p in paragraphs)


def command(config: SweepConfig, runner: Callable[[SweepConfig], object]) -> click.Command:
    def main(**values) -> None:
        interrupts.install()
        try:
            cfg = apply(config, given(values))
            # Quiet: library output to a log file, mlit's lines on the console (`--verbose`
            # keeps everything on the console; a dry run starts no library that talks).
            ours = not interrupts.ray_running()  # a Ray this command starts is its to stop
            with console.quiet(not (cfg.verbose or cfg.dry_run)):
                try:
                    runner(cfg)
                finally:  # inside the quiet block: Ray's last lines go to the log too
                    if ours:
                        interrupts.shutdown_ray()
        except SweepFailed as err:  # the work ran; too much of it failed
            console.fail(str(err), 1)
        except (Exception, KeyboardInterrupt) as err:
            console.exit_for(err)

    doc = _verbatim(sys.modules["__main__"].__doc__ or config.experiment)
    return click.Command("sweep", callback=main, params=options(config), help=doc)


def run_script(config: SweepConfig) -> None:
    """Parse the flags of a sweep script over its config and run the sweep."""
    from mlit.sweep.pipeline import run_sweep

    command(config, run_sweep)(standalone_mode=True)


def run_paper(config: SweepConfig) -> None:
    """The same flags, for every experiment of the paper in turn (sweeps/paper.py)."""
    from mlit.sweep.pipeline import run_paper as runner

    command(config, runner)(standalone_mode=True)
