"""Segments kept in shape (issue 48): an interrupted write's leftover is no damage and the next
compaction removes it; records a compaction killed while deleting left twice are merged."""

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlit.cli.main import app
from mlit.store import segments, upkeep
from mlit.store.artifacts import Store


def _put(store: Store, keys) -> None:
    """One small segment per key, each record a few hundred bytes that do not compress."""
    for k in keys:
        segments.write_segment(
            store, "verdicts", {k: segments.encode(k, {"raw": os.urandom(300).hex()})}
        )


def _verify(store: Store, *extra: str):
    return CliRunner().invoke(app, ["store", "verify", "--store", store.root, *extra])


def test_an_interrupted_writes_leftover_is_no_damage_and_the_next_compaction_removes_it(tmp_path):
    store = Store(str(tmp_path / "store"))
    _put(store, ["k1"])
    folder = Path(segments.folder(store, "verdicts"))
    leftover = folder / ".0f3a.parquet.5e1d.tmp"  # as atomic_write names its temporary file
    leftover.write_bytes(b"half a segment")
    out = _verify(store)
    assert out.exit_code == 0, out.output
    assert f"leftover {leftover}: a write a crash interrupted (nothing lost)" in out.output
    assert "damaged" not in out.output and "all good" in out.output
    upkeep.compact(store, "verdicts")  # a write as young as this one may be going on: kept
    assert leftover.exists()
    old = time.time() - 2 * upkeep.STALE_S
    os.utime(leftover, (old, old))
    assert upkeep.compact(store, "verdicts") == 0 and not leftover.exists()  # nothing to merge
    assert store.keys("verdicts") == ["k1"]


def test_records_a_killed_compaction_left_twice_are_merged(tmp_path, monkeypatch):
    store = Store(str(tmp_path / "store"))
    monkeypatch.setattr(upkeep, "SMALL_BYTES", 4600)  # 8 MB at scale: a few records here
    keys = [f"k{i}" for i in range(6)]
    _put(store, keys)
    assert all(size < upkeep.SMALL_BYTES for size in segments.segments(store, "verdicts").values())
    real, deleted = upkeep.delete, []

    def dying(store_, path):  # killed after deleting two of the six merged segments
        if len(deleted) == 2:
            raise KeyboardInterrupt
        deleted.append(path)
        real(store_, path)

    monkeypatch.setattr(upkeep, "delete", dying)
    with pytest.raises(KeyboardInterrupt):
        upkeep.compact(store, "verdicts", at=2, legacy=False)
    monkeypatch.setattr(upkeep, "delete", real)
    sizes = segments.segments(store, "verdicts")
    assert sum(size >= upkeep.SMALL_BYTES for size in sizes.values()) == 1  # the merged one
    out = _verify(store)
    assert out.exit_code == 0 and "6 records checked" in out.output, out.output
    assert "4 records filed twice by an interrupted compaction" in out.output
    # The next compaction (more small segments came) merges none of them twice.
    _put(store, ["k6", "k7"])
    assert upkeep.compact(store, "verdicts", at=2) == 6
    assert upkeep.duplicates(store, "verdicts") == {}
    assert store.keys("verdicts") == sorted([*keys, "k6", "k7"])
    # Large segments that share keys (an older store): `mlit store compact` merges them.
    again = {k: segments.encode(k, {"raw": os.urandom(300).hex()}) for k in ("k0", "k1", "k8")}
    segments.write_segment(store, "verdicts", again)
    assert upkeep.duplicates(store, "verdicts")
    out = CliRunner().invoke(app, ["store", "compact", "--store", store.root])
    assert out.exit_code == 0 and "records filed twice merged" in out.output, out.output
    assert upkeep.duplicates(store, "verdicts") == {}
    assert len(store.keys("verdicts")) == 9 and _verify(store).exit_code == 0
