"""The generated tables in README.md and docs/*.md match the data files they are made from.

`benchmarks/docs_tables.py` writes them from weights/manifest.json and docs/results/*.json; a
data file changed without running it leaves a stale table, which these tests catch.
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def docs_tables(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import docs_tables

    return docs_tables


def test_every_generated_region_is_current():
    run = subprocess.run([sys.executable, "benchmarks/docs_tables.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_check_finds_a_stale_region(docs_tables):
    fresh, stale = docs_tables.regenerate("<!-- generated:weights -->\n<!-- /generated:weights -->")
    assert stale == ["weights"]
    assert "`mlic-medium-gaussian`" in fresh
    again, stale = docs_tables.regenerate(fresh)
    assert (again, stale) == (fresh, [])


def test_unknown_region_is_refused(docs_tables):
    with pytest.raises(SystemExit, match="unknown generated region"):
        docs_tables.regenerate("<!-- generated:nonsense -->x<!-- /generated:nonsense -->")
