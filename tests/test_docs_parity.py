"""docs/parity.md stays true: every test it names exists, and every parity test is named on it."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]


def parity_tests() -> set[str]:
    """The test functions of every ``tests/test_parity_*.py``."""
    names = set()
    for path in (ROOT / "tests").glob("test_parity_*.py"):
        tree = ast.parse(path.read_text())
        functions = (node for node in tree.body if isinstance(node, ast.FunctionDef))
        names |= {node.name for node in functions if node.name.startswith("test_")}
    return names


def test_parity_page_names_exactly_the_parity_tests():
    named = set(re.findall(r"`(test_\w+)`", (ROOT / "docs/parity.md").read_text()))
    defined = parity_tests()
    assert named - defined == set(), "docs/parity.md names tests that do not exist"
    assert defined - named == set(), "parity tests missing from docs/parity.md"
