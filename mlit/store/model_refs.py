"""What a model reference is: a local model directory, a hub id, or a URI on object storage.

Users name models in flags (``--base-model``, ``--judge-model-dir``, ``mlit serve --model``), and
trained models name their base in ``mlit_model.json``. Every place that must tell the three kinds
apart (the pre-flight checks, training, serving, vLLM's LoRA bases, model keys) asks here, so a
reference means the same thing everywhere:

- a URI has a scheme (``s3://``, ``gs://``);
- a local directory starts with ``/``, ``.`` or ``~``, has more than one ``/``, or exists here;
- anything else is a hub id (``org/name``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
MARKERS = ("mlit_demo.json",)  # files of ours that do not change the weights


@dataclass(frozen=True)
class ModelRef:
    spec: str  # as the user or the model's metadata wrote it
    kind: str  # "dir", "hub" or "uri"

    @property
    def path(self) -> Path:
        return Path(self.spec).expanduser()


def parse(spec: str) -> ModelRef:
    if "://" in spec:
        return ModelRef(spec, "uri")
    path = Path(spec).expanduser()
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or path.exists():
        return ModelRef(spec, "dir")
    return ModelRef(spec, "hub")


def check(spec: str, flag: str) -> None:
    """A local model directory (with config.json) or the syntax of a hub name (org/name); raises
    ValueError naming ``flag``. Training and judging load from these two, not from a URI."""
    ref = parse(spec)
    if ref.kind == "dir":
        if not ref.path.is_dir():
            raise ValueError(f"{flag} {spec}: no such directory")
        if not (ref.path / "config.json").exists():
            raise ValueError(f"{flag} {spec}: not a Hugging Face model directory (no config.json)")
    elif ref.kind == "uri" or not HUB_NAME.match(spec):
        raise ValueError(
            f"{flag} {spec!r}: neither a local directory nor a hub name like 'Qwen/Qwen2.5-1.5B'"
        )


def source(spec: str) -> str:
    """What ``from_pretrained`` takes: a local directory's path, or the hub id as it is."""
    ref = parse(spec)
    if ref.kind == "dir":
        if not ref.path.is_dir():
            raise ValueError(f"base model {spec!r}: no such directory")
        return str(ref.path)
    return spec


def served(spec: str) -> str:
    """A model to serve: a URI as it is (replicas copy it), or a local model directory, resolved."""
    ref = parse(spec)
    if ref.kind == "uri":
        return spec
    if not (ref.path / "config.json").exists():
        raise ValueError(f"model directory {spec!r} has no config.json")
    return str(ref.path.resolve())


def available(spec: str) -> bool:
    """A model that can be loaded on this node: a URI, a hub id, or a directory that exists."""
    return bool(spec) and (parse(spec).kind != "dir" or Path(spec).expanduser().is_dir())


def context(path: str) -> int | None:
    """The context length from a model's config.json, without loading weights."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists():
        return None
    cfg = json.loads(cfg_file.read_text())
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(name), int):
            return cfg[name]
    return None


def identity(spec: str) -> str:
    """What a model key takes for a base model: a local directory as the sha256 of its files
    (names and contents: weights, tokenizer, chat template), so a key follows the weights, not
    the path; a hub id at its revision (``org/name@<commit>``) when the revision can be known (the
    hub's API, else the local hub cache), else as it is; a URI as it is."""
    from mlit.store.checksums import cached_digest

    path = Path(spec).expanduser()
    if not path.is_dir():
        return _hub_identity(spec) if parse(spec).kind == "hub" else spec
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or rel in MARKERS:
            continue
        # Every file whole: a same-size change to a weight shard is a new base. Big shards are
        # hashed once per (size, mtime) and remembered, so planning stays fast.
        digest.update(f"{rel}:{f.stat().st_size}:{cached_digest(f)}".encode())
    return f"dir:{digest.hexdigest()[:16]}"


def _hub_identity(spec: str) -> str:
    """``org/name@<commit>``: the revision the hub serves now (online), else the one the local
    hub cache holds (offline); the bare id when neither can be known."""
    import os

    revision = None
    if not os.environ.get("HF_HUB_OFFLINE"):
        try:
            from huggingface_hub import HfApi

            revision = HfApi().model_info(spec, timeout=10).sha
        except Exception:  # offline, private, rate limited: fall back to the cache
            revision = None
    if revision is None:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{spec.replace('/', '--')}" / "refs" / "main"
        revision = ref.read_text().strip() if ref.is_file() else None
    return f"{spec}@{revision}" if revision else spec
