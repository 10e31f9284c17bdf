"""Shared fixtures. Heavy stacks (Ray, torch) are imported only by the tests that need them."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mlit import data

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def sample() -> pl.DataFrame:
    return data.sample()


def rows(*specs: tuple[str, str, str, str, str | None]) -> pl.DataFrame:
    """Tiny dataset from (example_id, lang, split, instruction, response) tuples."""
    return data.from_records(dict(zip(data.COLUMNS, spec, strict=True)) for spec in specs)
