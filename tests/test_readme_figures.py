"""README tables and figures agree with the committed JSON under benchmarks/results/ (benchmarks/readme_tables.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_match_the_json(tables) -> None:
    diff = tables.differences((ROOT / "README.md").read_text())
    assert not diff, "README.md disagrees with benchmarks/results/ (python benchmarks/readme_tables.py --write):\n" + (
        "\n".join(diff))


def test_check_catches_a_changed_figure_and_write_restores_it(tables, tmp_path: Path) -> None:
    good = (ROOT / "README.md").read_text()
    bad = good.replace("| bicubic | 27.21 | 0.6852 |", "| bicubic | 27.31 | 0.6852 |", 1)
    assert bad != good
    readme = tmp_path / "README.md"
    readme.write_text(bad)
    assert tables.main(["--check", "--readme", str(readme)]) == 1
    assert tables.main(["--write", "--readme", str(readme)]) == 0
    assert readme.read_text() == good


def test_inline_figures_are_checked(tables) -> None:
    good = (ROOT / "README.md").read_text()
    low, high = tables.tiling_quality()[0].split("-")
    bad = good.replace(f"{low}-{high} dB", f"{low}-99.0 dB", 1)
    assert bad != good and tables.differences(bad)


def test_every_table_has_its_markers(tables) -> None:
    text = (ROOT / "README.md").read_text()
    for name in tables.TABLES:
        assert text.count(f"<!-- table:{name} -->") == 1 and text.count(f"<!-- /table:{name} -->") == 1, name
