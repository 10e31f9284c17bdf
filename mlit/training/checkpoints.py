"""Checkpoints inside a training run: written into the store every K steps, resumed after a loss.

A run that loses a worker (a spot node reclaimed, a process killed, the driver gone) is tried
again by Tune, by a rerun of the command, or by another sweep on the same store. Every one of
them finds the model's checkpoints under its key, takes the latest that verifies and goes on from
there: weights, optimizer and scheduler state, RNG states and the position in the data come back
(HF Trainer's own resume), and so does the dev-set selection (the best score, its step and its
weights), so the resumed run ends with the model an uninterrupted run makes.

Layout, under the store's root (a shared folder or a bucket: every node reads it)::

    checkpoints/<model key>/step-000300/        the HF Trainer checkpoint of every rank
    checkpoints/<model key>/step-000300/_CHECKPOINT.json   written last: step, workers, the files
                                                 (size, sha256, the ranks that read them) and the
                                                 dev-selection state
    checkpoints/<model key>/best-000200/        the best weights by dev ROUGE-L so far
    checkpoints/<model key>/attempts/001.json   one per attempt: where, when, resumed from which step

A step folder without its manifest is an upload that was cut off: never used, removed by the
next save. The latest two checkpoints are kept (the one before is the fallback for a damaged
latest); `delete` removes them all once the model is stored.

Collective when a process group is up (Ray Train's workers): every rank uploads the files only it
wrote (a ZeRO optimizer shard, its RNG state), rank 0 writes the manifest after all uploads; on
resume every rank fetches what it needs, checks it against the manifest, and all ranks agree on
the checkpoint they take. Imports no Ray.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlit.plumbing import console
from mlit.store.checksums import file_digest, manifest

MANIFEST = "_CHECKPOINT.json"
STOPPED = "not_retried.json"  # a failure that a retry cannot change, and why
KEEP = 2  # the latest checkpoint and the one before it (the fallback for a damaged latest)


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often one model's training run checkpoints."""

    store_root: str
    key: str  # the model key
    every: int  # steps between checkpoints; 0: none
    keep: bool = False  # keep the checkpoints after the model is stored (--keep-checkpoints)

    def due(self, step: int, max_steps: int) -> bool:
        """A checkpoint after this step? Never after the last (the export follows at once)."""
        return bool(self.every) and step % self.every == 0 and step < max_steps


@dataclass(frozen=True)
class Restored:
    path: Path  # a local copy of the checkpoint, for Trainer.train(resume_from_checkpoint=...)
    step: int
    state: dict  # the dev-selection state saved with it
    best: Path | None  # a local copy of the best weights so far (rank 0), or None
    damaged: tuple[str, ...] = ()  # later checkpoints that failed their check, with the reason


@dataclass
class Attempt:
    """This process's attempt at a model: its number, and what it resumed from."""

    number: int
    resumed_from_step: int
    damaged: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# The process group (none standalone)


def _group() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(value):
    """Every rank's ``value``, in rank order."""
    import torch.distributed as dist

    _, world = _group()
    if world == 1:
        return [value]
    out = [None] * world
    dist.all_gather_object(out, value)
    return out


def _barrier() -> None:
    import torch.distributed as dist

    if _group()[1] > 1:
        dist.barrier()


# --------------------------------------------------------------------------------------------
# The store side


def _fs(ck: Checkpointing):
    from mlit.store.filesystems import filesystem

    fs, base = filesystem(ck.store_root)
    return fs, f"{base.rstrip('/')}/checkpoints/{ck.key}"


def uri(ck: Checkpointing, *parts: str) -> str:
    """A path under the model's checkpoints, as the user would type it (s3://... on a bucket)."""
    _, folder = _fs(ck)
    path = "/".join([folder, *parts])
    return f"{ck.store_root.split('://', 1)[0]}://{path}" if "://" in ck.store_root else path


def _names(ck: Checkpointing, pattern: str) -> list[str]:
    from pyarrow import fs

    filesystem, folder = _fs(ck)
    selector = fs.FileSelector(folder, allow_not_found=True)
    return sorted(
        Path(i.path).name
        for i in filesystem.get_file_info(selector)
        if re.fullmatch(pattern, Path(i.path).name)
    )


def _read_json(ck: Checkpointing, *parts: str) -> dict | None:
    filesystem, folder = _fs(ck)
    try:
        with filesystem.open_input_stream("/".join([folder, *parts])) as fh:
            return json.loads(fh.read().decode("utf-8"))
    except (FileNotFoundError, OSError, ValueError):
        return None


def _write_json(ck: Checkpointing, value: dict, *parts: str) -> None:
    filesystem, folder = _fs(ck)
    path = "/".join([folder, *parts])
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as fh:  # one PUT; a local file is small enough
        fh.write(json.dumps(value, indent=1, ensure_ascii=False).encode())


def _upload(ck: Checkpointing, local: Path, rels: list[str], *parts: str) -> None:
    from pyarrow import fs

    filesystem, folder = _fs(ck)
    for rel in rels:
        target = "/".join([folder, *parts, rel])
        filesystem.create_dir(target.rsplit("/", 1)[0], recursive=True)
        fs.copy_files(
            str(local / rel),
            target,
            source_filesystem=fs.LocalFileSystem(),
            destination_filesystem=filesystem,
        )


def _download(ck: Checkpointing, files: dict, dest: Path, *parts: str) -> str | None:
    """Copy ``files`` (rel -> {size, sha256}) to ``dest`` and check them; the problem, or None."""
    from pyarrow import fs

    filesystem, folder = _fs(ck)
    for rel, want in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.copy_files(
                "/".join([folder, *parts, rel]),
                str(target),
                source_filesystem=filesystem,
                destination_filesystem=fs.LocalFileSystem(),
            )
        except (FileNotFoundError, OSError):
            return f"{rel} is missing"
        if target.stat().st_size != want["size"]:
            return f"{rel} is {target.stat().st_size} bytes, {want['size']} expected"
        if file_digest(target) != want["sha256"]:
            return f"{rel} does not match its sha256 (edited or damaged)"
    return None


# A file of one data-parallel rank: its ZeRO optimizer (and, at stage 3, parameter) shard and its
# RNG state. Every other file (weights, scheduler, trainer state with the data position, the
# DeepSpeed model states of model-parallel rank 00) is read by every rank.
_RANK_FILE = re.compile(r"(?:zero_pp_rank_|rng_state_)(\d+)")


def _reads(rel: str, rank: int) -> bool:
    tag = _RANK_FILE.search(Path(rel).name)
    return tag is None or int(tag.group(1)) == rank


# --------------------------------------------------------------------------------------------
# Saving


def save(ck: Checkpointing, step: int, local: Path, state: dict, best: Path | None) -> None:
    """Upload the checkpoint HF Trainer just wrote to ``local`` (on every rank), then its
    manifest; ``best`` is the local folder of the best weights so far (rank 0)."""
    rank, world = _group()
    mine = manifest(local)
    everyone = _gather(mine)
    owner = {}
    for r, files in enumerate(everyone):
        for rel in files:
            owner.setdefault(rel, r)  # a file several ranks wrote is uploaded once
    name = f"step-{step:06d}"
    _upload(ck, local, [rel for rel in mine if owner[rel] == rank], name)
    best_name = None
    if rank == 0 and state.get("best_step"):
        best_name = f"best-{state['best_step']:06d}"
        if _read_json(ck, best_name, MANIFEST) is None:
            files = manifest(best)
            _upload(ck, best, list(files), best_name)
            _write_json(ck, {"step": state["best_step"], "files": files}, best_name, MANIFEST)
    _barrier()  # every rank's files are up before the manifest says the checkpoint exists
    if rank == 0:
        files = {
            rel: {**everyone[r][rel], "ranks": [i for i, f in enumerate(everyone) if rel in f]}
            for rel, r in owner.items()
        }
        record = {"step": step, "workers": world, "files": files, "state": state}
        _write_json(ck, {**record, "best": best_name, "time": time.time()}, name, MANIFEST)
        _prune(ck, step)


def _prune(ck: Checkpointing, latest: int) -> None:
    """Keep the latest KEEP checkpoints and the best weights they name; remove the rest
    (older checkpoints, and uploads that were cut off before their manifest)."""
    filesystem, folder = _fs(ck)
    found = {n: _read_json(ck, n, MANIFEST) for n in _names(ck, r"step-\d+")}
    kept = [n for n, m in found.items() if m is not None][-KEEP:]
    named = {found[n].get("best") for n in kept}
    for n in _names(ck, r"(step|best)-\d+"):
        if n in kept or n in named or int(n.split("-")[1]) > latest:
            continue
        filesystem.delete_dir(f"{folder}/{n}")


# --------------------------------------------------------------------------------------------
# Resuming


def restore(ck: Checkpointing, dest: Path) -> Restored | None:
    """The latest checkpoint that verifies on every rank, copied under ``dest``; None when there
    is none. A damaged one (a file missing, truncated or edited) is reported once, with its path,
    and the one before it is tried."""
    rank, world = _group()
    names = _gather(_names(ck, r"step-\d+") if rank == 0 else None)[0]
    damaged = []
    for name in reversed(names):
        meta = _read_json(ck, name, MANIFEST)
        if meta is None:
            continue  # an upload that was cut off: not a checkpoint
        if meta.get("workers") != world:
            damaged.append(
                f"{uri(ck, name)}: written by {meta.get('workers')} workers, this run has "
                f"{world} (ZeRO shards do not move between worker counts)"
            )
            continue
        local = dest / f"checkpoint-{meta['step']}"
        mine = {r: f for r, f in meta["files"].items() if _reads(r, rank)}
        problem = _download(ck, mine, local, name)
        best = None
        if problem is None and rank == 0 and meta.get("best"):
            best_manifest = _read_json(ck, meta["best"], MANIFEST)
            best = dest / "best"
            problem = (
                f"{meta['best']}: its manifest is missing"
                if best_manifest is None
                else _download(ck, best_manifest["files"], best, meta["best"])
            )
        problems = _gather(problem)
        if not any(problems):
            return Restored(local, meta["step"], meta["state"], best, tuple(damaged))
        for p in filter(None, problems):
            damaged.append(f"{uri(ck, name)}: {p}")
    if damaged and rank == 0:
        for line in damaged:
            console.warn(f"[train] checkpoint {line}; not used")
    return None


def report(restored: Restored) -> None:
    """The damaged checkpoints skipped, once (rank 0: every rank knows the same list)."""
    if _group()[0] != 0:
        return
    for line in restored.damaged:
        console.warn(f"[train] checkpoint {line}; resuming from step {restored.step}")


# --------------------------------------------------------------------------------------------
# Attempts, and the end of a model's checkpoints


def begin(ck: Checkpointing, resumed_from_step: int, damaged=()) -> Attempt:
    """Record an attempt at the model (rank 0 writes; every rank gets the same number)."""
    rank, _ = _group()
    number = _gather(1 + len(attempts(ck)) if rank == 0 else None)[0]
    filesystem, folder = _fs(ck)
    if rank == 0 and stopped(ck) is not None:
        filesystem.delete_file(f"{folder}/{STOPPED}")  # an earlier run gave up; this one tries
    attempt = Attempt(number, resumed_from_step, list(damaged))
    if rank == 0:
        record = {
            "attempt": number,
            "started": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "resumed_from_step": resumed_from_step,
            "damaged": list(damaged),
        }
        _write_json(ck, record, "attempts", f"{number:03d}.json")
    return attempt


def ended(ck: Checkpointing, attempt: Attempt, **outcome) -> None:
    """Add how an attempt ended (the step it failed at, the error); rank 0 writes."""
    if _group()[0] != 0:
        return
    record = _read_json(ck, "attempts", f"{attempt.number:03d}.json") or {}
    _write_json(ck, {**record, **outcome}, "attempts", f"{attempt.number:03d}.json")


def attempts(ck: Checkpointing) -> list[dict]:
    """Every attempt at the model so far, in order."""
    from pyarrow import fs

    filesystem, folder = _fs(ck)
    selector = fs.FileSelector(f"{folder}/attempts", allow_not_found=True)
    names = sorted(Path(i.path).name for i in filesystem.get_file_info(selector))
    return [r for n in names if (r := _read_json(ck, "attempts", n)) is not None]


def stop(ck: Checkpointing, reason: str) -> None:
    """Say that the model is not retried in this run, and why (rank 0 writes)."""
    if _group()[0] == 0:
        _write_json(ck, {"reason": reason, "time": time.time()}, STOPPED)


def stopped(ck: Checkpointing) -> str | None:
    """Why the model was not retried, or None."""
    return (_read_json(ck, STOPPED) or {}).get("reason")


def delete(ck: Checkpointing) -> None:
    """Every checkpoint of the model and its attempt records (the model is stored)."""
    filesystem, folder = _fs(ck)
    if filesystem.get_file_info(folder).type.name != "NotFound":
        filesystem.delete_dir(folder)
