"""The documentation says what the code does."""

from __future__ import annotations

from tests.conftest import REPO
from tilewise.docgen import functions_table


def test_expression_functions_table_is_current() -> None:
    text = (REPO / "docs" / "expressions.md").read_text(encoding="utf-8")
    assert functions_table() in text, "regenerate with: python -m tilewise.docgen (and paste into docs/expressions.md)"


def test_readme_shows_the_two_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
