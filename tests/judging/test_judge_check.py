"""`mlit judge check` (issue 51): a judge's agreement with human preferences per language, on a
fixture in MM-Eval's shape, against a loopback judge that is sound in two languages and purely
position-biased in a third."""

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mlit.judging import check

ROOT = Path(__file__).parents[2]


def mm_eval_like(path: Path, per_language: int = 24) -> Path:
    """Preference pairs in MM-Eval's published columns; in "sw" the prompts carry a marker that
    makes the loopback judge pick the first position whatever it holds."""
    rows = []
    for lang in ("en", "fi", "sw"):
        for i in range(per_language):
            mark = " [biased]" if lang == "sw" else ""
            rows.append(
                {
                    "prompt": f"Question {i} in {lang}?{mark}",
                    "chosen": f"a good answer {i} with the facts",
                    "rejected": f"a weak answer {i} without them",
                    "language": lang,
                    "subset": "chat" if i % 2 else "reasoning",
                    "chosen_model": "m1",
                    "rejected_model": "m2",
                    "id": f"{lang}-{i}",
                }
            )
    pl.DataFrame(rows).write_parquet(path)
    return path


def _check(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlit", "judge", "check", "--judge", "openai/position-biased",
         "--judge-api-base", url, "--data", str(tmp_path / "prefs.parquet"),
         "--store", str(tmp_path / "store"), *extra],
        capture_output=True, text=True,
    )  # fmt: skip


def test_agreement_per_language_names_the_biased_one_and_a_rerun_asks_nothing(endpoint, tmp_path):
    script, url = endpoint
    mm_eval_like(tmp_path / "prefs.parquet")
    out = _check(tmp_path, url, "--out", str(tmp_path / "check.csv"))
    assert out.returncode == 0, out.stderr
    table = {r["language"]: r for r in pl.read_csv(tmp_path / "check.csv").iter_rows(named=True)}
    assert table["en"]["agreement"] >= 0.9 and table["fi"]["agreement"] >= 0.9
    assert table["sw"]["agreement"] <= 0.6 and table["sw"]["order_consistency"] <= 0.1
    assert table["sw"]["within_chance"] and not table["en"]["within_chance"]
    assert "within noise of chance" in out.stdout and ": sw:" in out.stdout
    assert script.calls["position-biased"] == 2 * 3 * 24
    assert "144 judge calls (0 from the store)" in out.stdout + out.stderr
    again = _check(tmp_path, url)
    assert again.returncode == 0, again.stderr
    assert script.calls["position-biased"] == 144  # nothing asked: every verdict is stored
    assert "0 judge calls (144 from the store)" in again.stdout + again.stderr


def test_max_cost_below_the_estimate_stops_before_any_call(endpoint, tmp_path):
    script, url = endpoint
    mm_eval_like(tmp_path / "prefs.parquet", per_language=4)
    out = _check(
        tmp_path, url, "--max-cost", "0.01", "--judge-input-price", "1000",
        "--judge-output-price", "1000",
    )  # fmt: skip
    assert out.returncode == 2 and "over the budget --max-cost $0.0100" in out.stderr
    assert script.calls["position-biased"] == 0


def test_a_set_in_another_shape_is_named_with_what_it_lacks(tmp_path):
    pl.DataFrame({"prompt": ["q"], "chosen": ["a"]}).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(check.CheckError, match=r"lacks the column\(s\) rejected, language"):
        check.load(str(tmp_path / "x.parquet"))
    frame = check.load(str(mm_eval_like(tmp_path / "p.parquet", 3)))
    with pytest.raises(
        check.CheckError, match=r"no pairs in language\(s\) xx; the set has: en, fi, sw"
    ):
        check.select(frame, ["xx"], None)
    assert check.select(frame, ["en"], 2).height == 2


def test_a_hub_name_loads_its_test_split_through_datasets(tmp_path, monkeypatch):
    """The hub path: a name that is not a file goes to `datasets.load_dataset(name,
    split="test")`. The hub cannot be reached here, so `load_dataset` hands back a real
    `datasets.Dataset` of the fixture's rows; what mlit does with it is what runs."""
    import datasets

    rows = pl.read_parquet(mm_eval_like(tmp_path / "p.parquet", 3))
    asked = []

    def load_dataset(name, split):
        asked.append((name, split))
        return datasets.Dataset.from_polars(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    frame = check.load("prometheus-eval/MM-Eval")
    assert asked == [("prometheus-eval/MM-Eval", "test")]
    assert frame.height == 9 and set(frame["language"]) == {"en", "fi", "sw"}
    assert frame["id"].to_list() == rows["id"].to_list()

    def unreachable(name, split):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(check.CheckError, match=r"not loadable from the hub \(offline\)"):
        check.load("prometheus-eval/MM-Eval")
