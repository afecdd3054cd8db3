"""The band-math expression language: numerics against numpy, safety, and error messages."""

from __future__ import annotations

import builtins
import dataclasses
import functools
import math
import pickle
import re
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tilewise.errors import ExpressionError, TilewiseError
from tilewise.expr import CONSTANTS, FUNCTIONS, MAX_DEPTH, MAX_LENGTH, RESERVED_NAMES, Expression, parse

F32 = np.float32


def assert_same_bits(actual: np.ndarray, expected: Any) -> None:
    """Equal dtype, shape and bits (so NaN equals NaN, and -0.0 differs from 0.0)."""
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    np.testing.assert_array_equal(actual, expected)  # NaN-aware, with a readable diff
    uint = np.dtype(f"u{actual.dtype.itemsize}")
    np.testing.assert_array_equal(np.ascontiguousarray(actual).view(uint), np.ascontiguousarray(expected).view(uint))


def sample(shape: tuple[int, ...] = (7, 23), seed: int = 0) -> dict[str, np.ndarray]:
    """Three float32 inputs with the awkward values every function must agree on."""
    rng = np.random.default_rng(seed)
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-40, 1e30, 0.5, 2.5, -2.5, 1.0, -1.0, 3.0, 90.0], F32)
    out = {}
    for i, name in enumerate("abc"):
        x = (rng.normal(0, 3, shape) * rng.choice([1, 10, 100], shape)).astype(F32)
        x.flat[i : i + special.size] = np.roll(special, 3 * i)
        out[name] = x
    return out


# ----------------------------------------------------------------------------- equality with numpy formulas

Ref = Callable[[np.ndarray, np.ndarray, np.ndarray, type], Any]

# (expression, the same formula in plain numpy). The references use Python scalar literals as
# numpy users write them (NEP 50 weak scalars); `t` is the working float type, for booleans and where().
CASES: list[tuple[str, Ref]] = [
    ("a + b", lambda a, b, c, t: a + b),
    ("a - b", lambda a, b, c, t: a - b),
    ("a * b", lambda a, b, c, t: a * b),
    ("a / b", lambda a, b, c, t: a / b),
    ("a // b", lambda a, b, c, t: a // b),
    ("a % b", lambda a, b, c, t: a % b),
    ("a ** b", lambda a, b, c, t: a**b),
    ("a ** 2", lambda a, b, c, t: a**2),
    ("a ** 0.5", lambda a, b, c, t: a**0.5),
    ("a ** -1", lambda a, b, c, t: a**-1),
    ("10 ** a", lambda a, b, c, t: 10**a),
    ("-a", lambda a, b, c, t: -a),
    ("+a", lambda a, b, c, t: +a),
    ("--a", lambda a, b, c, t: np.negative(-a)),
    ("a * 9 / 5 + 32", lambda a, b, c, t: a * 9 / 5 + 32),
    ("(a - 32) * 5 / 9", lambda a, b, c, t: (a - 32) * 5 / 9),
    ("2 * a + 1e-3 * b - 0.1", lambda a, b, c, t: 2 * a + 1e-3 * b - 0.1),
    ("1 / a", lambda a, b, c, t: 1 / a),
    ("a * -0", lambda a, b, c, t: a * -0),
    ("a * -0.0", lambda a, b, c, t: a * -0.0),
    ("a + 16777217", lambda a, b, c, t: a + 16777217),
    ("a * 1e400", lambda a, b, c, t: a * 1e400),
    ("(a - b) / (a + b)", lambda a, b, c, t: (a - b) / (a + b)),
    ("a - b * c ** 2 / 3", lambda a, b, c, t: a - b * c**2 / 3),
    ("a * pi", lambda a, b, c, t: a * math.pi),
    ("e ** a", lambda a, b, c, t: math.e**a),
    ("a + nan", lambda a, b, c, t: a + math.nan),
    ("-inf + a", lambda a, b, c, t: -math.inf + a),
    ("a == b", lambda a, b, c, t: (a == b).astype(t)),
    ("a != b", lambda a, b, c, t: (a != b).astype(t)),
    ("a < b", lambda a, b, c, t: (a < b).astype(t)),
    ("a <= 0.5", lambda a, b, c, t: (a <= 0.5).astype(t)),
    ("a > b", lambda a, b, c, t: (a > b).astype(t)),
    ("a >= -1", lambda a, b, c, t: (a >= -1).astype(t)),
    ("0 < a < 1", lambda a, b, c, t: ((a > 0) & (a < 1)).astype(t)),
    ("a < b <= c != 0", lambda a, b, c, t: ((a < b) & (b <= c) & (c != 0)).astype(t)),
    ("(a > 0) * 2", lambda a, b, c, t: (a > 0).astype(t) * 2),
    ("(a > 0) + (b > 0) - (c > 0)", lambda a, b, c, t: (a > 0).astype(t) + (b > 0).astype(t) - (c > 0).astype(t)),
    ("-(a > 0)", lambda a, b, c, t: -((a > 0).astype(t))),
    ("(a > 0) & (b > 0)", lambda a, b, c, t: ((a > 0) & (b > 0)).astype(t)),
    ("(a > 0) | (b > 0)", lambda a, b, c, t: ((a > 0) | (b > 0)).astype(t)),
    ("~(a > 0)", lambda a, b, c, t: (~(a > 0)).astype(t)),
    ("a > 0 and b > 0 and c > 0", lambda a, b, c, t: ((a > 0) & (b > 0) & (c > 0)).astype(t)),
    ("a > 0 or b > 0", lambda a, b, c, t: ((a > 0) | (b > 0)).astype(t)),
    ("not a > 0", lambda a, b, c, t: (~(a > 0)).astype(t)),
    ("a and b", lambda a, b, c, t: np.logical_and(a, b).astype(t)),
    ("a | b", lambda a, b, c, t: np.logical_or(a, b).astype(t)),
    ("~a", lambda a, b, c, t: np.logical_not(a).astype(t)),
    ("not a or b", lambda a, b, c, t: np.logical_or(np.logical_not(a), b).astype(t)),
    ("where(a > 0, a, b)", lambda a, b, c, t: np.where(a > 0, a, b)),
    ("where(a > 30, 1, 0) * (a * 9 / 5 + 32)", lambda a, b, c, t: np.where(a > 30, t(1), t(0)) * (a * 9 / 5 + 32)),
    ("where(a, 1, 2)", lambda a, b, c, t: np.where(a, t(1), t(2))),
    ("where(a > 0, b > 0, c > 0) + (a > b)", lambda a, b, c, t: np.where(a > 0, b > 0, c > 0).astype(t) + (a > b).astype(t)),
    ("where(isnan(a), -9999, a)", lambda a, b, c, t: np.where(np.isnan(a), t(-9999), a)),
    ("clip(a, -1, 1)", lambda a, b, c, t: np.clip(a, -1, 1)),
    ("clip(a, b, c)", lambda a, b, c, t: np.clip(a, b, c)),
    ("abs(a)", lambda a, b, c, t: np.abs(a)),
    ("sign(a)", lambda a, b, c, t: np.sign(a)),
    ("sqrt(a)", lambda a, b, c, t: np.sqrt(a)),
    ("sqrt(a ** 2 + b ** 2)", lambda a, b, c, t: np.sqrt(a**2 + b**2)),
    ("exp(a)", lambda a, b, c, t: np.exp(a)),
    ("expm1(a)", lambda a, b, c, t: np.expm1(a)),
    ("log(a)", lambda a, b, c, t: np.log(a)),
    ("log10(a)", lambda a, b, c, t: np.log10(a)),
    ("log2(a)", lambda a, b, c, t: np.log2(a)),
    ("log1p(a)", lambda a, b, c, t: np.log1p(a)),
    ("sin(a)", lambda a, b, c, t: np.sin(a)),
    ("cos(a)", lambda a, b, c, t: np.cos(a)),
    ("tan(a)", lambda a, b, c, t: np.tan(a)),
    ("arcsin(a / 100)", lambda a, b, c, t: np.arcsin(a / 100)),
    ("arccos(a / 100)", lambda a, b, c, t: np.arccos(a / 100)),
    ("arctan(a)", lambda a, b, c, t: np.arctan(a)),
    ("arctan2(a, b)", lambda a, b, c, t: np.arctan2(a, b)),
    ("sinh(a)", lambda a, b, c, t: np.sinh(a)),
    ("cosh(a)", lambda a, b, c, t: np.cosh(a)),
    ("tanh(a)", lambda a, b, c, t: np.tanh(a)),
    ("hypot(a, b)", lambda a, b, c, t: np.hypot(a, b)),
    ("deg2rad(a)", lambda a, b, c, t: np.deg2rad(a)),
    ("rad2deg(a)", lambda a, b, c, t: np.rad2deg(a)),
    ("floor(a)", lambda a, b, c, t: np.floor(a)),
    ("ceil(a)", lambda a, b, c, t: np.ceil(a)),
    ("trunc(a)", lambda a, b, c, t: np.trunc(a)),
    ("round(a)", lambda a, b, c, t: np.rint(a)),
    ("isnan(a)", lambda a, b, c, t: np.isnan(a).astype(t)),
    ("isinf(a)", lambda a, b, c, t: np.isinf(a).astype(t)),
    ("isfinite(a) * a", lambda a, b, c, t: np.isfinite(a).astype(t) * a),
    ("minimum(a, b)", lambda a, b, c, t: np.minimum(a, b)),
    ("maximum(a, 0)", lambda a, b, c, t: np.maximum(a, 0)),
    ("min(a, b)", lambda a, b, c, t: np.minimum(a, b)),
    ("min(a, b, c)", lambda a, b, c, t: np.minimum(np.minimum(a, b), c)),
    ("max(a, b, c, 0)", lambda a, b, c, t: np.maximum(np.maximum(np.maximum(a, b), c), 0)),
    ("max(a > 0, b)", lambda a, b, c, t: np.maximum((a > 0).astype(t), b)),
    ("  a\t+ 1  ", lambda a, b, c, t: a + 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("text", "ref"), CASES, ids=[c[0] for c in CASES])
def test_matches_numpy_formula(text: str, ref: Ref, dtype: type) -> None:
    env = sample()
    a: np.ndarray = env["a"].astype(dtype)
    b: np.ndarray = env["b"].astype(dtype)
    c: np.ndarray = env["c"].astype(dtype)
    with np.errstate(all="ignore"):
        expected = ref(a, b, c, dtype)
    assert_same_bits(parse(text).evaluate(env, dtype=dtype), expected)


def test_cases_cover_every_function_and_operator() -> None:
    texts = " ".join(text for text, _ in CASES)
    called = set(re.findall(r"([a-z_][a-z0-9_]*)\(", texts))
    assert set(FUNCTIONS) - called == set(), "every function needs a numpy reference case"
    for token in ["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "&", "|", "~", " and ", " or ", "not "]:
        assert token in texts, token
    for name in CONSTANTS:
        assert re.search(rf"\b{name}\b", texts), name


def test_celsius_to_fahrenheit_is_numpy_bit_for_bit_without_float64() -> None:
    t = np.random.default_rng(1).normal(25, 8, 4000).astype(F32)
    got = parse("t * 9 / 5 + 32").evaluate({"t": t})
    assert_same_bits(got, t * 9 / 5 + 32)
    # ... and float64 temporaries would have given other bits: the comparison above can fail.
    via64 = (t.astype(np.float64) * 9 / 5 + 32).astype(F32)
    assert (got != via64).any()


def test_dtype_float32_by_default_float64_when_asked() -> None:
    a = sample()["a"]
    assert parse("a * 2 + 1").evaluate({"a": a}).dtype == np.float32
    assert parse("a > 0").evaluate({"a": a}).dtype == np.float32
    assert parse("where(a > 0, 1, 0)").evaluate({"a": a}).dtype == np.float32
    got = parse("a / 3 + 0.1").evaluate({"a": a}, dtype=np.float64)
    assert_same_bits(got, a.astype(np.float64) / 3 + 0.1)
    assert parse("a").evaluate({"a": a}, dtype="float64").dtype == np.float64


def test_integer_and_float64_inputs_are_cast_to_the_working_dtype_first() -> None:
    counts = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    assert_same_bits(parse("n / 7").evaluate({"n": counts}), counts.astype(F32) / 7)
    x = np.random.default_rng(2).random((3, 4))  # float64
    assert_same_bits(parse("x * 3").evaluate({"x": x}), x.astype(F32) * 3)


@pytest.mark.parametrize("dtype", ["int16", "uint8", "complex64", "bool", "not-a-dtype"])
def test_non_floating_dtype_is_refused(dtype: str) -> None:
    with pytest.raises(ExpressionError, match="dtype"):
        parse("a + 1").evaluate({"a": np.ones((2, 2), F32)}, dtype=dtype)


def test_constants_are_working_dtype_scalars_not_python_numbers() -> None:
    # Python ints would give exactly 2 (after a long time for 9 ** 9 ** 9); float32 overflows to inf.
    got = parse("2 ** 200 / 2 ** 199").evaluate({}, shape=(2,))
    assert got.dtype == np.float32 and np.isnan(got).all()
    assert_same_bits(parse("2 ** 200 / 2 ** 199").evaluate({}, dtype=np.float64, shape=(2,)), np.full(2, 2.0))
    assert_same_bits(parse("1 / 3").evaluate({}, shape=()), np.asarray(F32(1) / F32(3)))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", ["9**9**9", "9.0**9**9**9**9", "10**400", "-10**400 * a", "(9**9**9) % 7 + a // 9**9**9"])
def test_huge_powers_are_quick_overflows(text: str) -> None:
    start = time.perf_counter()
    expr = parse(text)
    out = expr.evaluate({"a": np.ones((2, 3), F32)}, shape=(2, 3))
    assert time.perf_counter() - start < 2.0
    assert out.dtype == np.float32 and out.shape == (2, 3)
    assert not np.isfinite(out).any()


def test_constant_expression_fills_the_requested_shape() -> None:
    out = parse("1 + 2 * pi").evaluate({}, shape=(3, 4))
    assert_same_bits(out, np.full((3, 4), F32(1) + F32(2) * F32(math.pi)))
    assert out.flags.c_contiguous and out.flags.writeable
    assert parse("7").evaluate({"a": np.zeros((2, 5), F32)}).shape == (2, 5), "defaults to the inputs' shape"
    assert parse("7").evaluate({}).shape == ()


def test_result_is_a_new_array_never_an_input() -> None:
    a = np.arange(6, dtype=F32).reshape(2, 3)
    for text in ["a", "+a", "where(1, a, 0)", "min(a, a)"]:
        out = parse(text).evaluate({"a": a})
        assert not np.shares_memory(out, a), text
        out[...] = -1
        assert a[0, 1] == 1, text


def test_inputs_broadcast_and_mismatches_are_reported() -> None:
    row, col = np.arange(4, dtype=F32)[None, :], np.arange(3, dtype=F32)[:, None]
    assert_same_bits(parse("r * 10 + c").evaluate({"r": row, "c": col}), row * 10 + col)
    with pytest.raises(ExpressionError, match=r"different shapes.*a \(2, 3\).*b \(3, 2\)"):
        parse("a + b").evaluate({"a": np.ones((2, 3)), "b": np.ones((3, 2))})
    with pytest.raises(ExpressionError, match="shape"):
        parse("a + 1").evaluate({"a": np.ones((2, 3))}, shape=(4, 4))
    with pytest.raises(ExpressionError, match="not numeric"):
        parse("a + 1").evaluate({"a": np.array(["x", "y"])})


def test_evaluate_refuses_missing_inputs() -> None:
    with pytest.raises(ExpressionError, match="unknown name 'b'"):
        parse("a + b").evaluate({"a": np.ones((2, 2), F32)})


def test_floating_point_errors_are_silent_even_when_numpy_is_told_to_raise() -> None:
    a = np.array([0.0, -1.0, 1e30, np.nan], F32)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = parse("1 / a + log(a) + a * a * a + sqrt(a) + 0 / a").evaluate({"a": a})
    assert not np.isfinite(out).any()


def test_constants_are_reserved_and_shadow_inputs() -> None:
    e = parse("e + pi")
    assert e.names == frozenset()
    out = e.evaluate({"e": np.zeros((2, 2), F32), "pi": np.zeros((2, 2), F32)}, shape=(2, 2))
    assert_same_bits(out, np.full((2, 2), F32(math.e) + F32(math.pi)))
    assert {"pi", "e", "nan", "inf", "where", "sqrt"} <= RESERVED_NAMES


def test_evaluation_does_not_depend_on_tiling() -> None:
    env = sample((64, 97), seed=5)
    text = "where(a > b, sqrt(abs(a)) * c ** 2, log1p(abs(b)) / (c + 1)) + min(a, b, c) - clip(a, -1, 1)"
    expr = parse(text)
    whole = expr.evaluate(env)
    for step in (1, 7, 16, 33):
        pieces = [expr.evaluate({k: v[:, s : s + step] for k, v in env.items()}) for s in range(0, 97, step)]
        tiled = np.concatenate(pieces, axis=1)
        assert_same_bits(tiled, whole)


# ----------------------------------------------------------------------------- random expression trees

# A generated node: (text, reference over {name: array} and the float type, result is boolean, literal value or None).
Gen = tuple[str, Callable[[dict[str, np.ndarray], type], Any], bool, float | None]


def _num(value: Any, t: type) -> Any:
    return value.astype(t) if value.dtype == np.bool_ else value


def _truth(value: Any) -> Any:
    return value if value.dtype == np.bool_ else value.astype(np.bool_)


UNARY = {"abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "log10": np.log10, "log2": np.log2, "log1p": np.log1p,
         "expm1": np.expm1, "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin, "arccos": np.arccos,
         "arctan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "floor": np.floor, "ceil": np.ceil,
         "round": np.rint, "trunc": np.trunc, "sign": np.sign, "deg2rad": np.deg2rad, "rad2deg": np.rad2deg}  # fmt: skip
PREDICATES = {"isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite}
BINARY_FUNCTIONS = {"arctan2": np.arctan2, "hypot": np.hypot, "minimum": np.minimum, "maximum": np.maximum}
ARITHMETIC = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "//": np.floor_divide, "%": np.remainder,
              "**": np.power}  # fmt: skip
COMPARISONS = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


def _leaf_name(name: str) -> Gen:
    return name, lambda env, t: env[name], False, None


def _leaf_number(value: float) -> Gen:
    # A negative literal goes in parentheses: "-0.0 ** a" is -(0.0 ** a), as in Python, not (-0.0) ** a.
    text = f"({value!r})" if repr(value).startswith("-") else repr(value)
    return text, lambda env, t: t(value), False, value


def _leaf_constant(name: str) -> Gen:
    return name, lambda env, t: t(CONSTANTS[name]), False, None


LEAVES = st.one_of(
    st.sampled_from("abc").map(_leaf_name),
    st.sampled_from([0, 1, 2, 3, 10, 255, 0.5, 2.5, -0.0, 1e-3, 1e3, 1e30]).map(_leaf_number),
    st.sampled_from(sorted(CONSTANTS)).map(_leaf_constant),
)


def _negate(x: Gen) -> Gen:
    text, ref, _, literal = x
    if literal is not None:  # the parser folds a signed literal the way Python does: -0 is the int 0
        value = -literal
        return f"(-{text})", lambda env, t: t(value), False, value
    return f"(-{text})", lambda env, t: np.negative(_num(ref(env, t), t)), False, None


def _arith(op: str, x: Gen, y: Gen) -> Gen:
    fn = ARITHMETIC[op]
    return f"({x[0]} {op} {y[0]})", lambda env, t: fn(_num(x[1](env, t), t), _num(y[1](env, t), t)), False, None


def _compare(ops: list[str], xs: list[Gen]) -> Gen:
    text = " ".join([xs[0][0], *(f"{op} {x[0]}" for op, x in zip(ops, xs[1:], strict=True))])

    def ref(env: dict[str, np.ndarray], t: type) -> Any:
        values = [_num(x[1](env, t), t) for x in xs]
        parts = [COMPARISONS[op](values[i], values[i + 1]) for i, op in enumerate(ops)]
        return functools.reduce(np.logical_and, parts)

    return f"({text})", ref, True, None


def _logic(word: str, xs: list[Gen], symbolic: bool) -> Gen:
    # '&'/'|' next to a bare number is refused (a precedence trap), so numbers get 'and'/'or'.
    symbol = {"and": "&", "or": "|"}[word]
    use = symbol if symbolic and all(x[3] is None for x in xs) else word
    fn = np.logical_and if word == "and" else np.logical_or
    return f"({f' {use} '.join(x[0] for x in xs)})", lambda env, t: functools.reduce(fn, [x[1](env, t) for x in xs]), True, None


def _not(x: Gen, word: str) -> Gen:
    return f"({word}{x[0]})", lambda env, t: np.logical_not(x[1](env, t)), True, None


def _call(name: str, fn: Callable[..., Any], xs: list[Gen], boolean: bool = False) -> Gen:
    text = f"{name}({', '.join(x[0] for x in xs)})"
    return text, lambda env, t: fn(*(_num(x[1](env, t), t) for x in xs)), boolean, None


def _where(c: Gen, x: Gen, y: Gen) -> Gen:
    def ref(env: dict[str, np.ndarray], t: type) -> Any:
        return np.where(_truth(c[1](env, t)), _num(x[1](env, t), t), _num(y[1](env, t), t))

    return f"where({c[0]}, {x[0]}, {y[0]})", ref, False, None


def _extremum(name: str, xs: list[Gen]) -> Gen:
    pairwise = {"min": np.minimum, "max": np.maximum}[name]  # n-ary min/max is a left fold
    return _call(name, lambda *values: functools.reduce(pairwise, values), xs)


def _extend(children: st.SearchStrategy[Gen]) -> st.SearchStrategy[Gen]:
    two, three = st.lists(children, min_size=2, max_size=2), st.lists(children, min_size=3, max_size=3)
    return st.one_of(
        children.map(_negate),
        st.builds(_arith, st.sampled_from(sorted(ARITHMETIC)), children, children),
        st.builds(lambda op, x, y: _compare([op], [x, y]), st.sampled_from(sorted(COMPARISONS)), children, children),
        st.builds(_compare, st.lists(st.sampled_from(sorted(COMPARISONS)), min_size=2, max_size=2), three),
        st.builds(_logic, st.sampled_from(["and", "or"]), st.lists(children, min_size=2, max_size=3), st.booleans()),
        st.builds(_not, children, st.sampled_from(["not ", "~"])),
        st.builds(lambda n, x: _call(n, UNARY[n], [x]), st.sampled_from(sorted(UNARY)), children),
        st.builds(lambda n, x: _call(n, PREDICATES[n], [x], boolean=True), st.sampled_from(sorted(PREDICATES)), children),
        st.builds(lambda n, xs: _call(n, BINARY_FUNCTIONS[n], xs), st.sampled_from(sorted(BINARY_FUNCTIONS)), two),
        st.builds(lambda xs: _call("clip", np.clip, xs), three),
        st.builds(_extremum, st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=4)),
        st.builds(_where, children, children, children),
    )


TREES = st.recursive(LEAVES, _extend, max_leaves=12)
ARRAYS = hnp.arrays(F32, (3, 37), elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES, a=ARRAYS, b=ARRAYS, c=ARRAYS, dtype=st.sampled_from([np.float32, np.float64]), split=st.integers(1, 36))
def test_random_expression_trees_match_their_numpy_reference(tree: Gen, a: np.ndarray, b: np.ndarray, c: np.ndarray,
                                                             dtype: type, split: int) -> None:  # fmt: skip
    text, ref, _, _ = tree
    env = {"a": a, "b": b, "c": c}
    expr = parse(text)
    assert expr.names <= {"a", "b", "c"}
    got = expr.evaluate(env, dtype=dtype, shape=a.shape)
    with np.errstate(all="ignore"):
        expected = np.asarray(_num(np.asarray(ref({k: v.astype(dtype) for k, v in env.items()}, dtype)), dtype))
    assert_same_bits(got, np.broadcast_to(expected, a.shape))
    # The same pixels give the same bits whichever piece of the raster they are evaluated in.
    left = expr.evaluate({k: v[:, :split] for k, v in env.items()}, dtype=dtype, shape=(3, split))
    right = expr.evaluate({k: v[:, split:] for k, v in env.items()}, dtype=dtype, shape=(3, 37 - split))
    assert_same_bits(np.concatenate([left, right], axis=1), got)


# ----------------------------------------------------------------------------- fuzzing: only ExpressionError escapes


def _parse_and_evaluate(text: str) -> None:
    try:
        expr = parse(text)
    except ExpressionError:
        return
    env = {name: np.linspace(-2, 2, 6, dtype=F32).reshape(2, 3) for name in expr.names}
    try:
        out = expr.evaluate(env, shape=(2, 3))
    except ExpressionError:
        return
    assert out.shape == (2, 3) and out.dtype == np.float32


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_any_text_raises_only_expression_error(text: str) -> None:
    _parse_and_evaluate(text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="abce01239.+-*/%()<>=!&|~, ", max_size=40))
def test_formula_like_text_raises_only_expression_error(text: str) -> None:
    _parse_and_evaluate(text)


TOKENS = ["a", "b", "1", "2.5", "1e3", "0", " ", "+", "-", "*", "/", "**", "//", "%", "(", ")", ",", "<", "==", ">=", "&", "|",
          "~", "not ", " and ", " or ", "where(", "min(", "clip(", "sqrt(", "pi", "nan", "inf", "e", "__import__", "().__class__",
          "open('x')", "a.b", "a[0]", "lambda: ", '"s"', "9**9**9", ":=", " if ", " else ", "True", "None", "_x", "f'{a}'",
          "b'x'", "*", "x=1", "1j", "@", "^", "\\", "\n", "\x00", "...", "[", "]", "{", "}", ":", ";", "#", "yield", "await ",
          "for x in a", "__builtins__", "eval(", "exec(", "getattr(", "é", "𝔞", "1" * 50]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30), st.sampled_from(["", " "]))
def test_python_token_soup_raises_only_expression_error(tokens: list[str], sep: str) -> None:
    _parse_and_evaluate(sep.join(tokens))


PATHOLOGICAL = [
    "(" * 5000, ")" * 5000, "(" * 150 + "a" + ")" * 150, "(" * 300 + "a" + ")" * 300, "-" * 100000, "-" * 9999 + "a",
    "~" * 9999 + "a", "not " * 2400 + "a", "a+" * 4999 + "a", "a**" * 3000 + "a", "f(" * 3000 + "a" + ")" * 3000,
    "[" * 5000, "a<" * 4999 + "a", "a and " * 1600 + "a", "min(" + "a," * 4000 + "a)", "1" * 5000, "1." + "1" * 9000,
    "9**9**9", "\x00", "", "   ", "# only a comment", "a" * (MAX_LENGTH + 1), "a" * MAX_LENGTH, "\ud800", "a +\n b",
]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", PATHOLOGICAL, ids=[f"{t[:12]!r}x{len(t)}" for t in PATHOLOGICAL])
def test_pathological_text_raises_only_expression_error(text: str) -> None:
    start = time.perf_counter()
    _parse_and_evaluate(text)
    assert time.perf_counter() - start < 5.0


def test_length_and_depth_limits_name_themselves() -> None:
    with pytest.raises(ExpressionError, match=rf"too long \({MAX_LENGTH + 1} characters, at most {MAX_LENGTH}\)"):
        parse("a" * (MAX_LENGTH + 1))
    deep = "-(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
    with pytest.raises(ExpressionError, match=rf"nested too deeply \(at most {MAX_DEPTH} levels\)"):
        parse(deep)
    assert parse("-(" * (MAX_DEPTH - 1) + "a" + ")" * (MAX_DEPTH - 1)).names == {"a"}
    assert parse(" + ".join(f"x{i}" for i in range(50))).names == {f"x{i}" for i in range(50)}
    assert parse("a<" * 1000 + "a").names == {"a"}, "a long comparison chain is one level"


def test_parse_refuses_non_text() -> None:
    for value in (None, 3, b"a + b", ["a"]):
        with pytest.raises(ExpressionError, match="must be text"):
            parse(value)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- security


@pytest.mark.parametrize(
    ("text", "construct"),
    [
        ("__import__('os')", "name '__import__'"),
        ("__import__('os').system('true')", "attribute access"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("a.__class__", "attribute access 'a.__class__'"),
        ("().__class__.__bases__", "attribute access"),
        ("a.__class__.__mro__[1].__subclasses__()", "attribute access"),
        ("__builtins__", "name '__builtins__'"),
        ("eval('1')", "unknown function 'eval'"),
        ("exec('1')", "unknown function 'exec'"),
        ("getattr(a, 'x')", "unknown function 'getattr'"),
        ("sqrt.__call__(a)", "attribute access"),
        ("a[0]", "subscript 'a[0]'"),
        ("lambda: 1", "lambda"),
        ("(lambda: 1)()", "call of"),
        ("[x for x in a]", "comprehension"),
        ("sum(x for x in a)", "unknown function 'sum'"),
        ("'s'", "string"),
        ("b'x'", "bytes"),
        ("f'{a}'", "f-string"),
        ("(x := 1)", "assignment expression (:=)"),
        ("a if a > 0 else b", "conditional expression"),
        ("(a, b)", "tuple"),
        ("[a, b]", "list"),
        ("{a: b}", "dict"),
        ("{a}", "set"),
        ("1j", "complex number"),
        ("a @ b", "operator '@'"),
        ("a ^ 2", "operator '^'"),
        ("a << 2", "operator '<<'"),
        ("a is b", "comparison 'is'"),
        ("a in b", "comparison 'in'"),
        ("True", "boolean constant 'True'"),
        ("None", "constant 'None'"),
        ("...", "constant '...'"),
        ("sqrt(x=a)", "keyword argument in call to 'sqrt'"),
        ("max(**a)", "'**' argument in call to 'max'"),
        ("max(*a)", "starred argument in call to 'max'"),
        ("_x + 1", "name '_x'"),
        ("sqrt + 1", "function 'sqrt' is used without calling it"),
        ("pi(2)", "'pi' is a constant, not a function"),
        ("a > 0 & b > 0", "'&' with a number"),
        ("await a", "await"),
        ("(yield)", "yield"),
    ],
)
def test_forbidden_constructs_are_named(text: str, construct: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert construct in info.value.message
    assert info.value.hint, "every refusal suggests a fix"
    assert isinstance(info.value, TilewiseError)


FIXES = [("a if a > 0 else b", "where("), ("True", "1 or 0"), ("a ^ 2", "**"), ("a > 0 & b > 0", "(t > 30) & (t < 40)"),
         ("a = 1", "=="), ("1and b", "invalid decimal literal")]  # fmt: skip


@pytest.mark.parametrize(("text", "fix"), FIXES)
def test_refusals_suggest_the_fix(text: str, fix: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert fix in (info.value.hint or "")


def test_parse_and_evaluate_never_call_eval_or_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    text = "where(q > 0.5, sqrt(q) * 3, -q) + max(q, 1, 2) - (0 < q < 1) * 0.25"  # a text never parsed before (no cache)
    q = np.linspace(-1, 2, 12, dtype=F32)
    with np.errstate(invalid="ignore"):
        expected = np.where(q > 0.5, np.sqrt(q) * 3, -q) + np.maximum(np.maximum(q, 1), 2)
    expected -= ((q > 0) & (q < 1)).astype(F32) * 0.25
    assert_same_bits(parse(text).evaluate({"q": q}), expected)


def test_python_names_are_plain_inputs() -> None:
    expr = parse("open + exec * os")
    assert expr.names == {"open", "exec", "os"}
    env = {n: np.full((2, 2), v, F32) for n, v in [("open", 1), ("exec", 2), ("os", 3)]}
    assert_same_bits(expr.evaluate(env), np.full((2, 2), 7, F32))


# ----------------------------------------------------------------------------- messages and the public type


def test_syntax_error_names_text_and_column() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("a +* b")
    assert info.value.message == "cannot parse expression 'a +* b' at column 4"
    assert info.value.hint == "check operators and parentheses"
    with pytest.raises(ExpressionError, match=r"'sqrt\(a' at column 5 - '\(' was never closed"):
        parse("sqrt(a")
    with pytest.raises(ExpressionError, match=r"at column 6"):
        parse("  a +* b")  # leading blanks are accepted and counted
    with pytest.raises(ExpressionError, match=r"at line 2, column 1"):
        parse("a\n+* b")
    with pytest.raises(ExpressionError, match="empty"):
        parse("  ")


def test_unknown_function_is_named_with_suggestions() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("sqr(a) + 1")
    assert "unknown function 'sqr'" in info.value.message
    assert "did you mean 'sqrt'?" in (info.value.hint or "")
    assert all(name in (info.value.hint or "") for name in ("where", "clip", "log10", "max"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clip(a, 1)", "function 'clip' takes 3 arguments, got 2"),
        ("where(a, 1)", "function 'where' takes 3 arguments, got 2"),
        ("sqrt(a, b)", "function 'sqrt' takes 1 argument, got 2"),
        ("sqrt()", "function 'sqrt' takes 1 argument, got 0"),
        ("arctan2(a)", "function 'arctan2' takes 2 arguments, got 1"),
        ("min(a)", "function 'min' takes at least 2 arguments, got 1"),
        ("max()", "function 'max' takes at least 2 arguments, got 0"),
    ],
)
def test_wrong_arity_names_function_and_count(text: str, expected: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert expected in info.value.message
    name = text.split("(")[0]
    assert (info.value.hint or "").startswith(f"call it as {FUNCTIONS[name].signature}")


def test_check_names_lists_the_inputs() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("x + a").check_names(["b", "a"])
    assert info.value.message == "unknown name 'x' in expression 'x + a'"
    assert info.value.hint == "inputs are: a, b; add -i x=PATH[:BAND]"
    with pytest.raises(ExpressionError, match=r"unknown name 'nri' \(and 'zz'\)") as info:
        parse("nri + zz").check_names(["nir", "red"])
    assert (info.value.hint or "").startswith("did you mean 'nir'?")
    parse("a * b + pi").check_names(["a", "b", "c"])  # extra inputs are fine
    parse("where(1 > 0, 2, 3)").check_names([])


def test_expression_reports_the_names_it_reads() -> None:
    expr = parse("where(a > pi, sqrt(b), e * nan + inf) + min(c, a)")
    assert expr.names == frozenset({"a", "b", "c"})
    assert expr.text == "where(a > pi, sqrt(b), e * nan + inf) + min(c, a)"


def test_expression_is_frozen_comparable_and_picklable() -> None:
    expr = parse("a * 2 + b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        expr.text = "b"  # type: ignore[misc]
    assert expr == parse("a * 2 + b") and hash(expr) == hash(parse("a * 2 + b"))
    assert expr != parse("a * 2 + c")
    again = pickle.loads(pickle.dumps(expr))
    assert again == expr
    env = sample()
    assert_same_bits(again.evaluate(env), expr.evaluate(env))
    direct = Expression("a - b")
    assert direct.names == {"a", "b"}
    assert_same_bits(direct.evaluate(env), env["a"] - env["b"])
    changed = dataclasses.replace(direct, text="c * 2")
    assert changed.names == {"c"}
    assert_same_bits(changed.evaluate(env), env["c"] * 2)
    with pytest.raises(ExpressionError, match="attribute access"):
        Expression("a.b")


def test_functions_table_is_public_and_read_only() -> None:
    assert {"where", "clip", "min", "max", "sqrt", "round", "arctan2", "isnan"} <= set(FUNCTIONS)
    for name, fn in FUNCTIONS.items():
        assert fn.name == name and fn.signature.startswith(name + "(") and fn.description
    with pytest.raises(TypeError):
        FUNCTIONS["evil"] = FUNCTIONS["abs"]  # type: ignore[index]
