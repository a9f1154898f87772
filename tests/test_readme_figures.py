"""README tables and figures agree with the committed JSON under benchmarks/results/ (benchmarks/readme_tables.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


_spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_tables)


@pytest.fixture(scope="module")
def tables():
    return readme_tables


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_readme_tables_match_the_json(tables, readme: str) -> None:
    diff = tables.differences(readme)
    assert not diff, "README.md disagrees with benchmarks/results/ (python benchmarks/readme_tables.py --write):\n" + (
        "\n".join(diff))


def test_check_catches_a_changed_figure_and_write_restores_it(tables, readme: str, tmp_path: Path) -> None:
    bad = readme.replace("| bicubic | 27.21 | 0.6852 |", "| bicubic | 27.31 | 0.6852 |", 1)
    assert bad != readme
    path = tmp_path / "README.md"
    path.write_text(bad)
    assert tables.main(["--check", "--readme", str(path)]) == 1
    assert tables.main(["--write", "--readme", str(path)]) == 0
    assert path.read_text() == readme


def test_every_table_has_its_markers(tables, readme: str) -> None:
    for name in tables.TABLES:
        assert readme.count(f"<!-- table:{name} -->") == 1 and readme.count(f"<!-- /table:{name} -->") == 1, name


@pytest.mark.parametrize("name", list(readme_tables.TABLES))
def test_a_changed_table_figure_is_caught(tables, readme: str, name: str) -> None:
    """The last figure of each table, one digit changed."""
    body = tables.block(name).search(readme)
    last = max(m.start() for m in re.finditer(r"\d", body.group(2))) + body.start(2)
    bad = readme[:last] + str((int(readme[last]) + 1) % 10) + readme[last + 1:]
    assert tables.differences(bad), name


def test_every_prose_figure_is_checked(tables, readme: str) -> None:
    """Each figure in FIGURES, changed in the README, makes the check fail."""
    for name, (regex, make) in tables.FIGURES.items():
        match = re.search(regex, readme, re.S)
        assert match, name
        values = make()
        assert len(values) == len(match.groups()), name
        for i in range(1, len(values) + 1):
            bad = readme[:match.start(i)] + "99.9" + readme[match.end(i):]
            assert tables.differences(bad), f"{name}: figure {i} ({match.group(i)})"
