"""Fuzzing the two places that read text from users: expressions and job files.

(a) :func:`tilewise.expr.parse` and :meth:`~tilewise.expr.Expression.evaluate` on
arbitrary text and on a grammar of Python-like tokens (names, numbers, operators,
the language's functions, attribute access, lambdas, dunders, imports, f-strings,
huge exponents, deep nesting): they raise nothing but ``ExpressionError``, and
nothing that parses can reach a builtin, an attribute, a file or a process.

(b) :func:`tilewise.api.load_job_file` on arbitrary TOML / YAML / JSON text and
on structurally valid job dicts with random values: it returns a Job or raises a
``TilewiseError``, runs no code (YAML through ``yaml.safe_load`` only), writes
nothing, and every output path it plans is the one named or lies directly in the
directory named.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tilewise.api
from tilewise.api import load_job_file
from tilewise.errors import ExpressionError, TilewiseError
from tilewise.expr import FUNCTIONS, RESERVED_NAMES, parse
from tilewise.job import Job
from tilewise.ops.pixel import INDICES

# Examples per property; the total is reported by `pytest tests/test_fuzz.py --hypothesis-show-statistics`.
N = 500
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------------- watching for escapes

# Audit events that mean code ran, a process started, or a file was opened where none should be.
_FORBIDDEN_EVENTS = ("exec", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                     "ctypes.dlopen", "socket.connect", "os.remove", "os.rename", "shutil.rmtree", "os.mkdir")  # fmt: skip
_WATCH: dict[str, Any] = {"on": False, "files": False, "seen": []}


def _importing() -> bool:
    """True when the import machinery is on the stack (module code and what it runs at import time)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCH["on"]:
        return
    if event not in ("exec", "open", *_FORBIDDEN_EVENTS) or _importing():
        return  # lazy imports of tilewise's or the environment's own modules run code and open files: not ours to judge
    if event in _FORBIDDEN_EVENTS:
        _WATCH["seen"].append((event, repr(args)[:200]))
    elif event == "open":
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        if not _WATCH["files"] or any(m in mode for m in "wax+"):
            _WATCH["seen"].append((event, repr(args)[:200]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one does nothing unless watching


@contextmanager
def watching(files_allowed: bool) -> Iterator[list[tuple[str, str]]]:
    """Record forbidden audit events (and any file opened, unless ``files_allowed`` for reading) inside the block."""
    seen: list[tuple[str, str]] = []
    _WATCH.update(on=True, files=files_allowed, seen=seen)
    try:
        yield seen
    finally:
        _WATCH["on"] = False


# ---------------------------------------------------------------------------------------------- (a) expressions

_ARRAYS = {
    np.dtype(np.float32): np.array([[0.0, -0.0, 1.5, -2.0, np.nan, np.inf], [-np.inf, 1e-40, 3.4e38, -1.0, 7.0, 0.25]], np.float32),
    np.dtype(np.float64): np.array([[0.0, -0.0, 1.5, -2.0, np.nan, np.inf], [-np.inf, 5e-324, 1.7e308, -1.0, 7.0, 0.25]], np.float64),
}

_NAMES = ["a", "b", "c", "nir", "red", "t", "x", "os", "sys", "self", "e", "pi", "nan", "inf", "True", "False", "None", "_", "_a", "__class__",
          "__builtins__", "__import__", "__name__", "print", "eval", "exec", "open", "globals", "locals", "vars", "getattr", "type", "object"]  # fmt: skip
_NUMBERS = ["0", "1", "2.5", ".5", "5.", "1e3", "1e-400", "1e999", "9" * 400, "0x1F", "0b101", "0o7", "1_000", "1j", "00", "09", "1e", "1__0",
            "4294967296", "-0", "3.4028235e38", "2**1024"]  # fmt: skip
_FUNCTION_NAMES = [*sorted(FUNCTIONS), "__import__", "open", "eval", "exec", "compile", "getattr", "setattr", "globals", "breakpoint",
                   "type", "print", "input", "memoryview", "help", "exit", "os.system", "np.load", "sqr", "Where"]  # fmt: skip
_ATTRIBUTES = ["__class__", "__bases__", "__subclasses__", "__globals__", "__dict__", "__code__", "__builtins__", "real", "sum", "shape",
               "T", "f_back", "gi_frame", "system"]  # fmt: skip
_BINARY = ["+", "-", "*", "/", "//", "%", "**", "&", "|", "^", "@", "<<", ">>", "==", "!=", "<", "<=", ">", ">=", "and", "or", "is",
           "is not", "in", "not in", ",", ":=", "=", ";", "if"]  # fmt: skip
_STATEMENTS = ["import os", "from os import system", "__import__('os').system('touch PWNED')", "exec('import os')", "eval('1')",
               "open('PWNED', 'w')", "().__class__.__bases__[0].__subclasses__()", "a.__class__", "[x for x in ()]", "(lambda: 1)()",
               "globals()['__builtins__']", "f'{a}'", "f'{a!r:>{b}}'", "b'x'", "'x' * 3", "__builtins__.open", "breakpoint()",
               "getattr(a, 'real')", "type(a)", "a[0]", "a[::-1]", "{}.keys()", "{a}", "(a, b)", "[a]", "*a", "await a", "yield a",
               "(yield)", "a if b else c", "(q := 1)", "del a", "assert a", "lambda: a", "sqrt(a=1)", "min(*a)", "max(**a)",
               "9 ** 9 ** 9 ** 9", "10 ** 10 ** 10", "2 ** 1024 ** 2", "-(" * 60 + "a" + ")" * 60, "a" + ".real" * 30,
               "__import__", "_", "print(1)", "os.system('x')", "sqrt.__call__(a)", "where.__globals__", "e.real", "pi()"]  # fmt: skip


def _call(parts: tuple[str, list[str], str]) -> str:
    name, args, extra = parts
    return f"{name}({', '.join([*args, extra] if extra else args)})"


def _extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(_BINARY), children).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(st.sampled_from(["-", "+", "~", "not ", "--", "*", "**", "await "]), children).map("".join),
        children.map(lambda x: f"({x})"),
        st.tuples(st.sampled_from(_FUNCTION_NAMES), st.lists(children, max_size=4), st.sampled_from(["", "k=1", "*x", "**y", "lo=a"])).map(_call),
        st.tuples(children, st.sampled_from(_ATTRIBUTES)).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        children.map(lambda x: f"(lambda q: {x})(1)"),
        children.map(lambda x: f"[{x} for q in a]"),
        children.map(lambda x: f"f'{{{x}}}'"),
        st.tuples(children, children, children).map(lambda t: f"{t[0]} if {t[1]} else {t[2]}"),
        st.tuples(st.integers(1, 160), children).map(lambda t: "(" * t[0] + t[1] + ")" * t[0]),
        st.tuples(st.integers(1, 140), st.sampled_from(["sqrt", "abs", "-", "not "]), children).map(
            lambda t: (t[1] + "(") * t[0] + t[2] + ")" * t[0] if t[1] in ("sqrt", "abs") else t[1] * t[0] + t[2]
        ),
        st.tuples(children, st.integers(2, 8)).map(lambda t: " ** ".join([t[0]] * t[1])),
        st.tuples(children, st.integers(2, 300)).map(lambda t: " + ".join([t[0]] * t[1])),
    )


_LEAVES = st.one_of(st.sampled_from(_NAMES), st.sampled_from(_NUMBERS), st.integers(-(10**40), 10**40).map(str),
                    st.floats(allow_nan=False, allow_infinity=False).map(repr), st.sampled_from(_STATEMENTS))  # fmt: skip
GRAMMAR = st.recursive(_LEAVES, _extend, max_leaves=8)
SPACING = st.sampled_from(["", " ", "\n", "\t", "  \n "])


def _oracle_allows(text: str) -> bool:
    """An independent check of what may parse: only names, numbers, operators and calls of the named functions."""
    tree = ast.parse(text.lstrip(), mode="eval")
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and (node.id.startswith("_") or (node.id in FUNCTIONS and id(node) not in called)):
            return False
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords):
            return False
        if isinstance(node, ast.Constant) and not (isinstance(node.value, int | float) and not isinstance(node.value, bool)):
            return False
        allowed = (ast.Expression, ast.Name, ast.Load, ast.Constant, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call,
                   ast.operator, ast.unaryop, ast.boolop, ast.cmpop)  # fmt: skip
        if not isinstance(node, allowed):
            return False
    return True


def check_expression(text: str) -> None:
    """Parse and evaluate ``text``: only ExpressionError, no escape, and a well-formed result when it parses."""
    with watching(files_allowed=False) as seen:
        try:
            expr = parse(text)
        except ExpressionError as exc:
            assert isinstance(exc, TilewiseError) and str(exc).strip() and "\n" not in str(exc)
            assert not seen, seen
            return
        assert not seen, seen
    assert _oracle_allows(text), f"parsed but the oracle refuses: {text!r}"
    assert all(n.isidentifier() and not n.startswith("_") and n not in RESERVED_NAMES for n in expr.names), expr.names
    for dtype, arr in _ARRAYS.items():
        env = {name: arr for name in expr.names}
        with watching(files_allowed=False) as seen:
            try:
                out = expr.evaluate(env, dtype=dtype, shape=arr.shape)
            except ExpressionError:
                continue
        assert not seen, seen
        assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == arr.shape
        assert not any(np.shares_memory(out, a) for a in env.values())


@FUZZ
@given(st.text(max_size=200))
def test_expression_arbitrary_text(text: str) -> None:
    check_expression(text)


@FUZZ
@given(GRAMMAR, SPACING, SPACING)
def test_expression_grammar(body: str, before: str, after: str) -> None:
    check_expression(before + body + after)


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(_NAMES + _NUMBERS + _BINARY + _FUNCTION_NAMES + ["(", ")", ",", ".", "[", "]", "{", "}", ":", "'", '"',
                                                                                          "f'", "\\", "#", "lambda", "import", "for", "in"]),
                          st.sampled_from(_STATEMENTS)), max_size=40), st.sampled_from(["", " "]))  # fmt: skip
def test_expression_token_soup(tokens: list[str], sep: str) -> None:
    check_expression(sep.join(tokens))


ESCAPES = ["__import__('os')", "__import__('os').system('touch PWNED')", "().__class__", "().__class__.__bases__[0].__subclasses__()",
           "open('x')", "open('PWNED', 'w')", "a.__class__", "a.real", "a.sum()", "[x for x in ()]", "(x for x in a)", "{x: 1 for x in a}",
           "(lambda: 1)()", "lambda: a", "eval('1')", "exec('import os')", "compile('1', '', 'eval')", "globals()", "locals()", "vars()",
           "getattr(a, '__class__')", "type(a)", "print(a)", "breakpoint()", "__builtins__", "__builtins__['open']", "__name__",
           "_", "_a + 1", "import os", "from os import system", "os.system('x')", "f'{a}'", "f'{__import__(\"os\")}'", "b'x'", "'x'",
           "a[0]", "a[::2]", "(q := a)", "a if a else a", "sqrt.__call__(a)", "where.__globals__", "sqrt", "pi(1)", "e.real",
           "clip(a, lo=0, hi=1)", "min(*a)", "max(**a)", "None", "True + a", "...", "a @ a", "a is a", "a in a", "{a}", "[a]", "(a, a)",
           "yield a", "await a", "\\x5f_import__('os')", "\uff3f\uff3fimport\uff3f\uff3f('os')", "ａ.__class__"]  # fmt: skip


@pytest.mark.parametrize("text", ESCAPES)
def test_escape_attempts_are_refused(text: str) -> None:
    with watching(files_allowed=False) as seen, pytest.raises(ExpressionError):
        expr = parse(text)
        # A text that parses (e.g. a lone name) must still not reach anything when evaluated.
        expr.evaluate({}, shape=(2, 3))
    assert not seen, seen
    assert not Path("PWNED").exists()


def test_huge_exponents_and_deep_nesting_stay_quick() -> None:
    import time

    for text in ["9 ** 9 ** 9 ** 9 ** 9", "a ** 1e308 ** 1e308", "(" * 99 + "a" + ")" * 99, "-" * 99 + "a", "sqrt(" * 99 + "a" + ")" * 99,
                 "a + " * 2400 + "a", "max(" + "a, " * 3000 + "a)"]:  # fmt: skip
        start = time.perf_counter()
        check_expression(text)
        assert time.perf_counter() - start < 2.0, text


# ---------------------------------------------------------------------------------------------- (b) job files


@pytest.fixture(scope="module")
def job_dir() -> Iterator[Path]:
    """A directory with a few small rasters, made the working directory while the job tests run."""
    from tests.conftest import two_band_scene, write_raster

    root = Path(tempfile.mkdtemp(prefix="tw-fuzz-"))
    one = np.ones((32, 32), np.float32)
    write_raster(root / "IN.tif", two_band_scene(32, 32), nodata=0, blocksize=None)
    write_raster(root / "NAMED.tif", two_band_scene(32, 32), nodata=0, blocksize=None, descriptions=["B04", "B08"])
    write_raster(root / "ONE.tif", one, nodata=-9999, blocksize=None)
    (root / "DUP").mkdir()
    write_raster(root / "DUP" / "ONE.tif", one, nodata=-9999, blocksize=None)
    (root / "S.SAFE" / "GRANULE").mkdir(parents=True)
    (root / "S.SAFE" / "MTD_MSIL2A.xml").write_text("<x/>")
    (root / "list.txt").write_text("IN.tif\nONE.tif\n")
    (root / "jobs").mkdir()
    import tilewise.job_focal  # noqa: F401  (imported lazily by focal jobs: import it before watching)

    cwd = os.getcwd()
    os.chdir(root)
    try:
        yield root
    finally:
        os.chdir(cwd)
        shutil.rmtree(root, ignore_errors=True)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


_COUNTER = [0]


def load_text(root: Path, data: bytes, suffix: str) -> Job | TilewiseError:
    """Write ``data`` as a job file, load it, and check the rules every load must keep."""
    _COUNTER[0] += 1
    path = root / "jobs" / f"job{_COUNTER[0]}{suffix}"
    path.write_bytes(data)
    before = _tree(root)
    try:
        with watching(files_allowed=True) as seen:
            try:
                result: Job | TilewiseError = load_job_file(str(path))
            except TilewiseError as exc:
                result = exc
        assert not seen, seen
        assert _tree(root) == before, _tree(root) ^ before
        if isinstance(result, TilewiseError):
            line = str(result)
            assert line.strip() and "\n" not in line and "Traceback" not in line, line
            assert len(line) < 2000, line[:300]
        return result
    finally:
        path.unlink()


@FUZZ
@given(st.text(max_size=300), st.sampled_from([".toml", ".yaml", ".yml", ".json", ".txt", ""]))
def test_job_file_arbitrary_text(job_dir: Path, text: str, suffix: str) -> None:
    load_text(job_dir, text.encode("utf-8", "surrogatepass"), suffix)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([".toml", ".yaml", ".json"]))
def test_job_file_arbitrary_bytes(job_dir: Path, data: bytes, suffix: str) -> None:
    load_text(job_dir, data, suffix)


_TOML_LINES = ['command = "ndvi"', 'command = "calc"', 'command = "focal"', 'inputs = ["IN.tif"]', 'inputs = { a = "ONE.tif" }',
               'output = "out.tif"', 'output = "out/"', "red = 1", "nir = 2", "size = 3", 'expression = "a + 1"', "workers = 0",
               'executor = "serial"', "tile_size = 16", "[creation_options]", 'LEVEL = "6"', "x = [", "a.b.c = 1", '"" = 1', "= 1",
               "inputs = 5", "[[inputs]]", "nodata = nan", "nodata = inf", "level = 1e999", "retries = -1", "dtype = 'uint8'",
               'index = "../../x"', "a = 1", "b = 2", "[job]", "fingerprint = 1", "items = []", "output_root = 'o'", "overviews = 1"]  # fmt: skip


@FUZZ
@given(st.lists(st.sampled_from(_TOML_LINES), max_size=12))
def test_job_file_toml_lines(job_dir: Path, lines: list[str]) -> None:
    load_text(job_dir, "\n".join(lines).encode(), ".toml")


# Structurally valid jobs with random values.
_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda ch: st.lists(ch, max_size=3) | st.dictionaries(st.text(max_size=6), ch, max_size=3),
    max_leaves=6,
)
_PATHS = st.sampled_from(["IN.tif", "ONE.tif", "NAMED.tif", "DUP/ONE.tif", "DUP", "S.SAFE", "missing.tif", "*.tif", "D*/*.tif", "jobs",
                          ".", "..", "", "IN.tif:2", "ONE.tif:1", "../x.tif", "/", "~/x.tif", "IN.tif:0"]) | st.text(max_size=10)  # fmt: skip
_OUTPUTS = st.sampled_from(["out.tif", "out/", "o/x.tif", "DUP/", "DUP", "", ".", "./", "..", "../escape.tif", "ONE.tif", "a/../b.tif",
                            "out.vrt", "/nonexistent/o.tif", "o.tif/"]) | st.text(max_size=10)  # fmt: skip
_BANDS = st.sampled_from([1, 2, 3, 0, -1, "1", "2", "B04", "B08", "red", "nir", "ONE.tif", "IN.tif:1", "NAMED.tif:2", None, 1.5, True])
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "red": _BANDS, "nir": _BANDS, "a": _BANDS, "b": _BANDS,
    "index": st.sampled_from([*INDICES, "NDRE", "x", "../../evil", "a/b", "", "..", "n d", 5]) | st.text(max_size=10),
    "expression": st.sampled_from(["a + 1", "a * b", "red - nir", "__import__('os')", "", "1"]) | st.text(max_size=15),
    "scales": st.dictionaries(st.sampled_from(["a", "b", "zz"]), st.floats() | st.text(max_size=3), max_size=2),
    "offsets": st.dictionaries(st.sampled_from(["a", "b"]), st.floats() | st.integers(), max_size=2),
    "scale": st.floats() | st.text(max_size=3), "offset": st.floats() | st.none(),
    "name": st.text(max_size=8), "from_list": st.sampled_from(["list.txt", "missing.txt", "IN.tif", "DUP"]),
    "stat": st.sampled_from(["mean", "median", "count", "avg", ""]), "size": st.integers(-3, 70), "radius": st.integers(-1, 20),
    "edge": st.sampled_from(["nodata", "partial", "reflect", "nearest", "wrap"]), "min_valid": st.floats(-1, 2),
    "subtract": st.booleans(), "bands": st.lists(st.integers(-1, 3), max_size=3), "mosaic": st.booleans(),
    "dtype": st.sampled_from(["uint8", "float32", "float16", "int64", ""]), "nodata": st.floats() | st.integers(-(2**40), 2**40),
    "compress": st.sampled_from(["zstd", "deflate", "LZW", "brotli", ""]), "level": st.integers(-5, 30),
    "predictor": st.integers(0, 4), "creation_options": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
    "overviews": st.booleans(), "tile_size": st.integers(-5, 5000), "align": st.sampled_from(["bilinear", "nearest", "bilinar", ""]),
    "executor": st.sampled_from(["serial", "threads", "processes", "magic", ""]), "workers": st.integers(-2, 8),
    "retries": st.integers(-2, 30),
    "fail_fast": st.booleans(), "keep_tiles": st.booleans(), "bogus_option": _JSONISH,
}  # fmt: skip


# A valid job per command; the strategy changes a few of its values (or adds options), so most examples get deep into the builders.
_BASES: dict[str, dict[str, Any]] = {
    "ndvi": {"inputs": ["IN.tif"], "red": 1, "nir": 2, "output": "out.tif"},
    "normdiff": {"inputs": ["NAMED.tif"], "index": "x", "a": 2, "b": 1, "output": "out/"},
    "calc": {"expression": "a + 1", "inputs": {"a": "ONE.tif"}, "output": "c.tif"},
    "focal": {"inputs": ["ONE.tif"], "size": 3, "output": "f.tif"},
}
_VALUES["inputs"] = (
    st.lists(_PATHS, max_size=3) | _PATHS | st.dictionaries(st.sampled_from(["a", "b", "red", "nir", "_x", "1a", "e", "sqrt"]), _PATHS, max_size=3)
)
_VALUES["output"] = _OUTPUTS


@st.composite
def job_dicts(draw: st.DrawFn) -> dict[str, Any]:
    command = draw(st.sampled_from(sorted(_BASES)) | st.text(max_size=6)) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(sorted(_BASES)))
    job: dict[str, Any] = {"command": command, **_BASES.get(command, _BASES["ndvi"])}
    keys = draw(st.lists(st.sampled_from(sorted(_VALUES)), max_size=4, unique=True))
    for key in keys:
        job[key] = draw(_JSONISH) if draw(st.integers(0, 3)) == 0 else draw(_VALUES[key])
    return job


def _check_outputs(job: Job, named: Any) -> None:
    """Every planned output is the path named, or a file directly in the directory named; the work directory beside it."""

    def parent(p: str) -> str:
        return os.path.dirname(p) or "."

    assert isinstance(named, str) and named, named
    base = os.path.normpath(named)
    for item in job.items:
        out = os.path.normpath(item.output)
        assert out == base or parent(out) == base, (named, item.output)
        assert os.path.basename(out) not in ("", ".", ".."), item.output
    root = os.path.normpath(job.output_root)
    assert root == base, (named, job.output_root)
    assert parent(os.path.normpath(job.workdir)) in (root, parent(root)), (root, job.workdir)


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(job_dicts(), st.sampled_from(["json", "yaml"]))
def test_job_dicts_with_random_values(job_dir: Path, job: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        text, suffix = json.dumps(job), ".json"
    else:
        try:
            text, suffix = yaml.safe_dump(job), ".yaml"
        except yaml.YAMLError:
            assume(False)
    result = load_text(job_dir, text.encode("utf-8", "surrogatepass"), suffix)
    if isinstance(result, Job):
        _check_outputs(result, job["output"])


@pytest.mark.parametrize("doc", [
    "!!python/object/apply:os.system ['touch PWNED']",
    "!!python/object/new:os.system [touch PWNED]",
    "command: !!python/object/apply:subprocess.check_output [[touch, PWNED]]",
    "command: !!python/name:os.system",
    "!!python/module:os",
    "command: ndvi\ninputs: !!python/object/apply:os.getcwd []\noutput: o.tif",
    "command: !!binary aGVsbG8=\n",
    "a: &a [*a]\ncommand: ndvi\ninputs: *a\noutput: o.tif",
    "command: ndvi\n" + "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 9))
    + "inputs: *l8\noutput: o.tif\n",
    "[" * 5000,
    "command: ndvi\ninputs: " + "[" * 3000 + "]" * 3000,
])  # fmt: skip
def test_yaml_tags_aliases_and_nesting_are_refused(job_dir: Path, doc: str) -> None:
    result = load_text(job_dir, doc.encode(), ".yaml")
    assert isinstance(result, TilewiseError)
    assert not (job_dir / "PWNED").exists()


def test_yaml_is_read_with_safe_load_only(job_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = inspect.getsource(tilewise.api.load_job_file)
    assert "yaml.safe_load(" in source and "yaml.load(" not in source and "unsafe_load" not in source and "full_load" not in source
    loaders: list[Any] = []
    real_load = yaml.load

    def spy(stream: Any, Loader: Any) -> Any:
        loaders.append(Loader)
        return real_load(stream, Loader)

    monkeypatch.setattr(yaml, "load", spy)
    result = load_text(job_dir, b"command: ndvi\ninputs: [IN.tif]\nred: 1\nnir: 2\noutput: out.tif\n", ".yaml")
    assert isinstance(result, Job) and loaders and all(issubclass(L, yaml.SafeLoader) for L in loaders)


@pytest.mark.parametrize("index", ["../../evil", "a/b", "..", "/abs", "x/../../y", "n d", ""])
def test_index_names_cannot_steer_outputs(job_dir: Path, index: str) -> None:
    job = {"command": "normdiff", "inputs": ["IN.tif"], "index": index, "a": 2, "b": 1, "output": "out/"}
    result = load_text(job_dir, json.dumps(job).encode(), ".json")
    assert isinstance(result, TilewiseError) and "index name" in str(result)


def test_valid_job_files_load(job_dir: Path) -> None:
    ok = load_text(job_dir, b'command = "ndvi"\ninputs = ["IN.tif", "DUP/ONE.tif"]\nred = 1\nnir = 2\noutput = "out/"\n', ".toml")
    assert isinstance(ok, Job) and ok.batch
    _check_outputs(ok, "out/")
    calc = load_text(job_dir, json.dumps({"command": "calc", "expression": "a + 1", "inputs": {"a": "ONE.tif"}, "output": "c.tif"}).encode(), ".json")
    assert isinstance(calc, Job)
    _check_outputs(calc, "c.tif")
