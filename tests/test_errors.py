"""Every case of the bad-input catalogue (tests/error_cases.py) through the real CLI entry point.

Each case must give its exit status, exactly one ``Error: ...`` line on stderr
(no traceback, nothing else), the expected text naming the bad value, a fix hint,
and leave nothing behind. docs/errors.md must be what the cases print today.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.error_cases import CASES, CATEGORIES, DOC, REGENERATE, Case, Outcome, fixture_dir, render, run_case, unexpected_leftovers


@pytest.fixture(scope="module")
def fixtures() -> Iterator[Path]:
    with fixture_dir() as root:
        yield root


@pytest.fixture(scope="module")
def outcomes() -> dict[str, Outcome]:
    """All cases run once, in catalogue order, on their own fixture directory (for the docs check)."""
    with fixture_dir() as root:
        return {c.id: run_case(c, root) for c in CASES}


def test_catalogue_is_well_formed() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    assert {c.category for c in CASES} <= set(CATEGORIES)
    assert len(CASES) >= 40
    for c in CASES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c.id), c.id
        re.compile(c.expect)
    # Every command of the CLI has cases.
    assert {"ndvi", "normdiff", "calc", "focal", "split", "merge", "run", "resume", "status", "info", "quicklook"} <= {c.command for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_error_case(case: Case, fixtures: Path) -> None:
    o = run_case(case, fixtures)
    where = f"{case.id}: tilewise {' '.join(case.argv)}\nstdout: {o.stdout}\nstderr: {o.stderr}"
    assert o.code == case.code, where
    assert "Traceback" not in o.stderr and "internal error" not in o.stderr, where
    error_lines = [line for line in o.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, where
    if case.code == 2:
        assert o.stderr.strip().splitlines() == error_lines, f"more than the one Error line on stderr\n{where}"
        assert o.stdout == "", where
    assert re.search(case.expect, o.message), f"{case.expect!r} not found in the message\n{where}"
    assert o.hint and o.hint.strip(), f"no fix hint after ' - '\n{where}"
    assert not unexpected_leftovers(o), f"left behind: {unexpected_leftovers(o)}\n{where}"
    assert not o.changed, f"changed existing files: {o.changed}\n{where}"


def test_yaml_python_tag_runs_nothing(fixtures: Path) -> None:
    case = next(c for c in CASES if c.id == "job-yaml-python-tag")
    run_case(case, fixtures)
    assert not (fixtures / "PWNED").exists()


def test_docs_errors_md_is_current(outcomes: dict[str, Outcome]) -> None:
    expected = render(list(outcomes.values()))
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert current == expected, f"docs/errors.md is out of date; regenerate it with: {REGENERATE}"


def test_verbose_shows_the_traceback_and_still_the_one_line(fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tilewise.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["-v", "calc", "a +* 2", "-i", f"a={fixtures}/ONE.tif", "-o", f"{fixtures}/OUT.tif"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" in err and "ExpressionError" in err
    assert err.strip().splitlines()[-1].startswith("Error: cannot parse expression 'a +* 2'")
    assert not (fixtures / "OUT.tif").exists()
