"""A safe band-math expression language, evaluated pixel by pixel with numpy.

``tilewise calc "where(t > 30, 1, 0) * (t * 9 / 5 + 32)" -i t=day.tif`` parses its
formula with :func:`parse` and evaluates it on each tile with
:meth:`Expression.evaluate`. The text is never handed to ``eval``/``exec``:
:func:`ast.parse` only builds a syntax tree, which is walked against a whitelist
and turned into a small tree of our own nodes that call numpy ufuncs.

The language
------------
- numbers: ``2``, ``0.5``, ``1e-3``; names of inputs (identifiers not starting with ``_``);
- constants ``pi``, ``e``, ``nan``, ``inf``. They are reserved: an input named like
  one is never read by an expression (see :data:`RESERVED_NAMES`), and neither is
  an input named like a function;
- arithmetic ``+ - * / // % **`` and unary ``-``/``+``;
- comparisons ``== != < <= > >=``, chains included (``0 < a < 1`` means
  ``(0 < a) & (a < 1)``); a comparison gives 1 where true and 0 where false;
- elementwise logic ``&``, ``|``, ``~`` and the same as ``and``, ``or``, ``not``;
  a number is true where it is non-zero (NaN is true, as in numpy);
- the functions of :data:`FUNCTIONS` (positional arguments only).

Numerics
--------
Everything is computed in the requested floating ``dtype`` (float32 unless
asked) with elementwise ufuncs only, so a pixel's value never depends on where
it sits in an array or on how the raster is tiled. Literals become numpy scalars
of ``dtype`` and inputs are cast to ``dtype``: ``t * 9 / 5 + 32`` gives the same
bits as numpy's ``t * 9 / 5 + 32`` on a float32 array ``t`` (NEP 50 weak Python
scalars). A subexpression of constants alone is computed in ``dtype`` too, not
in Python's double precision, so ``9 ** 9 ** 9`` is a quick ``inf``. Division by
zero and the like give ``inf``/``nan`` silently; the caller masks them.
"""

from __future__ import annotations

import ast
import difflib
import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from tilewise.errors import ExpressionError

__all__ = ["CONSTANTS", "FUNCTIONS", "MAX_DEPTH", "MAX_LENGTH", "RESERVED_NAMES", "Expression", "Function", "parse"]

MAX_LENGTH = 10_000
"""Longest expression text accepted, in characters."""

MAX_DEPTH = 100
"""Deepest nesting of operators and calls accepted (a long sum ``a + b + ...`` nests one level per term)."""

# A value met during evaluation: a numpy array or numpy scalar, of the working dtype or of bool.
_Value = Any

_SYNTAX_HINT = "check operators and parentheses"
_LANGUAGE_HINT = ("expressions use input names, numbers, + - * / // % **, comparisons, & | ~ and/or/not, "
                  "and functions such as where(cond, a, b), clip(x, lo, hi), sqrt(x)")  # fmt: skip


@dataclass(frozen=True)
class Function:
    """One function of the expression language.

    Parameters
    ----------
    name
        The name used in expressions.
    signature
        How it is called, for hints and docs: ``"clip(x, lo, hi)"``.
    description
        One line for docs.
    impl
        The elementwise numpy callable.
    min_args, max_args
        The accepted number of positional arguments; ``max_args`` None means no limit.
    condition_first
        True when the first argument is a condition (non-zero is true), not a number.
    """

    name: str
    signature: str
    description: str
    impl: Callable[..., Any] = field(repr=False)
    min_args: int
    max_args: int | None
    condition_first: bool = False

    def arity(self) -> str:
        """Describe the accepted argument count: ``"1 argument"``, ``"at least 2 arguments"``."""
        if self.max_args == self.min_args:
            return f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        if self.max_args is None:
            return f"at least {self.min_args} arguments"
        return f"{self.min_args} to {self.max_args} arguments"


def _fold(ufunc: Callable[..., Any]) -> Callable[..., Any]:
    # n-ary min/max: a left fold of the binary ufunc, so NaN propagates as in np.minimum.
    def apply(*args: _Value) -> _Value:
        return functools.reduce(ufunc, args)

    return apply


def _f(signature: str, impl: Callable[..., Any], description: str, *, max_args: int | None = -1, cond: bool = False) -> Function:
    name, params = signature.rstrip(")").split("(")
    count = len(params.split(", "))
    return Function(name, signature, description, impl, count, count if max_args == -1 else max_args, cond)


_FUNCTION_LIST = [
    _f("where(cond, a, b)", np.where, "a where cond is true (non-zero), else b", cond=True),
    _f("clip(x, lo, hi)", np.clip, "x limited to [lo, hi]"),
    _f("minimum(a, b)", np.minimum, "the smaller of a and b (NaN if either is NaN)"),
    _f("maximum(a, b)", np.maximum, "the larger of a and b (NaN if either is NaN)"),
    _f("min(a, b)", _fold(np.minimum), "the smallest of two or more values (NaN if any is NaN)", max_args=None),
    _f("max(a, b)", _fold(np.maximum), "the largest of two or more values (NaN if any is NaN)", max_args=None),
    _f("abs(x)", np.absolute, "absolute value"),
    _f("sign(x)", np.sign, "-1, 0 or 1 by the sign of x"),
    _f("sqrt(x)", np.sqrt, "square root"),
    _f("exp(x)", np.exp, "e to the power x"),
    _f("expm1(x)", np.expm1, "exp(x) - 1, accurate near 0"),
    _f("log(x)", np.log, "natural logarithm"),
    _f("log10(x)", np.log10, "base-10 logarithm"),
    _f("log2(x)", np.log2, "base-2 logarithm"),
    _f("log1p(x)", np.log1p, "log(1 + x), accurate near 0"),
    _f("sin(x)", np.sin, "sine (radians)"),
    _f("cos(x)", np.cos, "cosine (radians)"),
    _f("tan(x)", np.tan, "tangent (radians)"),
    _f("arcsin(x)", np.arcsin, "inverse sine"),
    _f("arccos(x)", np.arccos, "inverse cosine"),
    _f("arctan(x)", np.arctan, "inverse tangent"),
    _f("arctan2(y, x)", np.arctan2, "angle of the point (x, y)"),
    _f("sinh(x)", np.sinh, "hyperbolic sine"),
    _f("cosh(x)", np.cosh, "hyperbolic cosine"),
    _f("tanh(x)", np.tanh, "hyperbolic tangent"),
    _f("hypot(x, y)", np.hypot, "sqrt(x**2 + y**2) without overflow"),
    _f("deg2rad(x)", np.deg2rad, "degrees to radians"),
    _f("rad2deg(x)", np.rad2deg, "radians to degrees"),
    _f("floor(x)", np.floor, "round down"),
    _f("ceil(x)", np.ceil, "round up"),
    _f("trunc(x)", np.trunc, "round toward zero"),
    _f("round(x)", np.rint, "round to the nearest integer, halves to even (numpy rint)"),
    _f("isnan(x)", np.isnan, "1 where x is NaN, else 0"),
    _f("isinf(x)", np.isinf, "1 where x is +-inf, else 0"),
    _f("isfinite(x)", np.isfinite, "1 where x is neither NaN nor +-inf, else 0"),
]

FUNCTIONS: Mapping[str, Function] = MappingProxyType({fn.name: fn for fn in _FUNCTION_LIST})
"""The functions an expression may call, by name."""

CONSTANTS: Mapping[str, float] = MappingProxyType({"pi": math.pi, "e": math.e, "nan": math.nan, "inf": math.inf})
"""Named constants; reserved, so an input of the same name cannot be read."""

RESERVED_NAMES: frozenset[str] = frozenset(CONSTANTS) | frozenset(FUNCTIONS)
"""Names an expression never reads as an input."""


# ----------------------------------------------------------------------------- evaluation tree


class _Context:
    """What a node needs to evaluate: the working dtype and the inputs cast to it."""

    __slots__ = ("dtype", "env")

    def __init__(self, dtype: np.dtype[Any], env: Mapping[str, np.ndarray]) -> None:
        self.dtype = dtype
        self.env = env

    def number(self, value: _Value) -> _Value:
        # Booleans (comparison results) enter arithmetic as 1/0 of the working dtype,
        # never as numpy's default float64.
        return value.astype(self.dtype) if value.dtype.kind == "b" else value

    def truth(self, value: _Value) -> _Value:
        return value if value.dtype.kind == "b" else value.astype(np.bool_)


class _Node:
    __slots__ = ()

    def run(self, ctx: _Context) -> _Value:
        raise NotImplementedError


class _Literal(_Node):
    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def run(self, ctx: _Context) -> _Value:
        return ctx.dtype.type(self.value)


class _Input(_Node):
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, ctx: _Context) -> _Value:
        return ctx.env[self.name]


class _Apply(_Node):
    """A ufunc or function over numbers (``mode="number"``), truth values (``"logic"``) or both (``"where"``)."""

    __slots__ = ("args", "fn", "mode")

    def __init__(self, fn: Callable[..., Any], args: tuple[_Node, ...], mode: str = "number") -> None:
        self.fn = fn
        self.args = args
        self.mode = mode

    def run(self, ctx: _Context) -> _Value:
        values = [arg.run(ctx) for arg in self.args]
        if self.mode == "number":
            return self.fn(*(ctx.number(v) for v in values))
        if self.mode == "where":
            return self.fn(ctx.truth(values[0]), *(ctx.number(v) for v in values[1:]))
        # logical ufuncs take numbers as they are: non-zero is true.
        return functools.reduce(self.fn, values) if len(values) > 1 else self.fn(values[0])


class _Identity(_Node):
    """Unary ``+``: the operand as a number."""

    __slots__ = ("arg",)

    def __init__(self, arg: _Node) -> None:
        self.arg = arg

    def run(self, ctx: _Context) -> _Value:
        return ctx.number(self.arg.run(ctx))


class _Compare(_Node):
    """A comparison chain ``x0 op1 x1 op2 x2 ...``: each middle operand is evaluated once."""

    __slots__ = ("operands", "ops")

    def __init__(self, operands: tuple[_Node, ...], ops: tuple[Callable[..., Any], ...]) -> None:
        self.operands = operands
        self.ops = ops

    def run(self, ctx: _Context) -> _Value:
        left = ctx.number(self.operands[0].run(ctx))
        result: _Value = None
        for op, node in zip(self.ops, self.operands[1:], strict=True):
            right = ctx.number(node.run(ctx))
            part = op(left, right)
            result = part if result is None else np.logical_and(result, part)
            left = right
        return result


# ----------------------------------------------------------------------------- the public type


@dataclass(frozen=True)
class Expression:
    """A parsed expression, ready to evaluate on arrays.

    Build one with :func:`parse` (cached), or as ``Expression(text)``: the
    names are always derived from the text. Equal texts give equal expressions;
    pickling ships the text and parses again.

    Attributes
    ----------
    text
        The expression as written.
    names
        The input names it reads (not function names, not constants).
    """

    text: str
    names: frozenset[str] = frozenset()
    _root: _Node | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Compiled here, so that any way of making one (dataclasses.replace included) stays consistent.
        names, root = _compile(self.text)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "_root", root)

    def __reduce__(self) -> tuple[Any, ...]:
        return (parse, (self.text,))

    def check_names(self, available: Iterable[str]) -> None:
        """Raise unless every name the expression reads is available.

        Parameters
        ----------
        available
            The input names on hand.

        Raises
        ------
        ExpressionError
            Naming the first unknown name (alphabetically) and listing the inputs.
        """
        have = set(available)
        missing = sorted(self.names - have)
        if missing:
            name = missing[0]
            inputs = ", ".join(sorted(have)) or "(none)"
            more = f" (and {', '.join(repr(m) for m in missing[1:])})" if len(missing) > 1 else ""
            close = difflib.get_close_matches(name, sorted(have), n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise ExpressionError(f"unknown name {name!r}{more} in expression {_show(self.text)}",
                                  f"{guess}inputs are: {inputs}; add -i {name}=PATH[:BAND]")  # fmt: skip

    def evaluate(
        self, env: Mapping[str, np.ndarray], dtype: DTypeLike = np.float32, shape: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """Evaluate the expression elementwise.

        Parameters
        ----------
        env
            One array per input name (extra names are ignored); cast to ``dtype``.
        dtype
            The floating-point type computed in and returned.
        shape
            The result's shape; by default the broadcast shape of the inputs read
            (needed for an expression that reads no input, which otherwise gives a
            0-d array).

        Returns
        -------
        numpy.ndarray
            A new C-contiguous array of ``dtype`` (never a view of an input).

        Raises
        ------
        ExpressionError
            For a missing input, inputs of incompatible shapes, a non-numeric input
            or a non-floating ``dtype``.
        """
        dt = _float_dtype(dtype)
        self.check_names(env.keys())
        names = sorted(self.names)
        arrays: dict[str, np.ndarray] = {}
        for name in names:
            try:
                arrays[name] = np.asarray(env[name]).astype(dt, copy=False)
            except (TypeError, ValueError) as exc:
                raise ExpressionError(f"input {name!r} of expression {_show(self.text)} is not numeric: {exc}",
                                      "pass numeric arrays") from None  # fmt: skip
        target = self._target_shape(arrays if names else {k: np.asarray(v) for k, v in env.items()}, shape)
        assert self._root is not None
        with np.errstate(all="ignore"):
            try:
                value = np.asarray(self._root.run(_Context(dt, arrays)))
            except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
                raise ExpressionError(f"cannot evaluate expression {_show(self.text)}: {exc}", _LANGUAGE_HINT) from None
            if value.dtype != dt:
                value = value.astype(dt)
        originals = [np.asarray(env[n]) for n in names]
        if (value.shape == target and value.flags.c_contiguous and value.flags.writeable
                and not any(np.may_share_memory(value, a) for a in originals)):  # fmt: skip
            return value
        try:
            return np.array(np.broadcast_to(value, target), dtype=dt, order="C")
        except ValueError:
            raise ExpressionError(f"result of shape {value.shape} of expression {_show(self.text)} does not fit shape {target}",
                                  "pass inputs of the requested shape") from None  # fmt: skip

    def _target_shape(self, arrays: Mapping[str, np.ndarray], shape: tuple[int, ...] | None) -> tuple[int, ...]:
        if shape is not None:
            try:
                target = tuple(int(n) for n in shape)
                if np.broadcast_shapes(target, *(a.shape for a in arrays.values())) != target:
                    raise ValueError("inputs do not fit")
            except (TypeError, ValueError):
                got = ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
                raise ExpressionError(f"inputs of expression {_show(self.text)} ({got}) do not fit shape {shape}",
                                      "pass arrays of the requested shape") from None  # fmt: skip
            return target
        try:
            return tuple(np.broadcast_shapes(*(a.shape for a in arrays.values())))
        except ValueError:
            got = ", ".join(f"{k} {a.shape}" for k, a in arrays.items())
            raise ExpressionError(f"inputs of expression {_show(self.text)} have different shapes: {got}",
                                  "all inputs must share one pixel grid") from None  # fmt: skip


def _float_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.kind != "f":
        raise ExpressionError(f"cannot evaluate in dtype {dtype!r}", "use a floating-point dtype: float32 or float64")
    return dt


def _show(text: str, limit: int = 60) -> str:
    """Quote a piece of user text for a message, shortened when long."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# ----------------------------------------------------------------------------- parsing


def parse(text: str) -> Expression:
    """Parse an expression of the band-math language.

    Parameters
    ----------
    text
        E.g. ``"where(t > 30, 1, 0) * (t * 9 / 5 + 32)"``; at most
        :data:`MAX_LENGTH` characters and :data:`MAX_DEPTH` levels of nesting.

    Returns
    -------
    Expression
        The parsed expression with the input names it reads.

    Raises
    ------
    ExpressionError
        For anything that is not a valid expression; no other exception escapes,
        whatever the text.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be text, not {type(text).__name__}", "write the formula as a string")
    return _parse_cached(text)


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> Expression:
    # Safe to cache: an Expression is immutable, and a failure raises (and is not cached).
    return Expression(text)


def _compile(text: str) -> tuple[frozenset[str], _Node]:
    """Check and compile a text into the names it reads and an evaluation tree; raises only ExpressionError."""
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be text, not {type(text).__name__}", "write the formula as a string")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression {_show(text)} is too long ({len(text)} characters, at most {MAX_LENGTH})",
                              "shorten it, or split the work into several calc steps")  # fmt: skip
    try:
        return _compile_checked(text)
    except ExpressionError:
        raise
    except (RecursionError, MemoryError):
        raise _too_deep(text) from None
    except Exception as exc:  # the promise: nothing but ExpressionError leaves parse
        raise ExpressionError(f"cannot parse expression {_show(text)}: {type(exc).__name__}: {exc}", _SYNTAX_HINT) from None


def _too_deep(text: str) -> ExpressionError:
    return ExpressionError(f"expression {_show(text)} is nested too deeply (at most {MAX_DEPTH} levels)",
                           "use fewer nested parentheses, operators or calls (a long sum nests one level per term)")  # fmt: skip


def _compile_checked(text: str) -> tuple[frozenset[str], _Node]:
    source = text.lstrip()  # eval mode rejects leading whitespace as an indent
    if not source:
        raise ExpressionError("expression is empty", "write a formula such as 'a * 2'")
    try:
        # Warnings the compiler would print (e.g. "invalid decimal literal" for `1and b`) become syntax errors.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise _syntax_error(text, len(text) - len(source), exc) from None
    except ValueError as exc:  # null bytes on some Python versions
        raise ExpressionError(f"cannot parse expression {_show(text)}: {exc}", _SYNTAX_HINT) from None
    _check_depth(text, tree.body)
    builder = _Builder(source)
    root = builder.build(tree.body)
    return frozenset(builder.names), root


def _syntax_error(text: str, skipped: int, exc: SyntaxError) -> ExpressionError:
    reason = exc.msg or "invalid syntax"
    if "nested" in reason or "too complex" in reason:  # the parser's own nesting limits
        return _too_deep(text)
    if "digits" in reason:  # Python's limit on int literal length
        return ExpressionError(f"number in expression {_show(text)} has too many digits", "write large numbers as 1e300")
    where = ""
    if exc.lineno and exc.offset and exc.lineno > 0 and exc.offset > 0:
        source = text[skipped:]
        lines = source.split("\n")
        index = sum(len(line) + 1 for line in lines[: exc.lineno - 1]) + exc.offset - 1
        index = min(max(index + skipped, 0), len(text))
        line = text.count("\n", 0, index) + 1
        column = index - (text.rfind("\n", 0, index) + 1) + 1
        where = f" at line {line}, column {column}" if "\n" in text.rstrip() else f" at column {column}"
        if text[index : index + 1] == "=" and text[index : index + 2] != "==":
            reason = "'=' assigns"
            return ExpressionError(f"cannot parse expression {_show(text)}{where}", f"{reason}; use == to compare")
    hint = _SYNTAX_HINT if reason == "invalid syntax" else f"{reason}; {_SYNTAX_HINT}"
    return ExpressionError(f"cannot parse expression {_show(text)}{where}", hint)


def _check_depth(text: str, root: ast.AST) -> None:
    # Iterative, so that a tree far too deep is refused before anything recurses over it.
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(text)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))


_BINARY: dict[type[ast.operator], tuple[Callable[..., Any], str]] = {
    ast.Add: (np.add, "number"),
    ast.Sub: (np.subtract, "number"),
    ast.Mult: (np.multiply, "number"),
    ast.Div: (np.true_divide, "number"),
    ast.FloorDiv: (np.floor_divide, "number"),
    ast.Mod: (np.remainder, "number"),
    ast.Pow: (np.power, "number"),
    ast.BitAnd: (np.logical_and, "logic"),
    ast.BitOr: (np.logical_or, "logic"),
}
_REFUSED_BINARY: dict[type[ast.operator], tuple[str, str]] = {
    ast.BitXor: ("^", "use ** for powers, or (a != 0) != (b != 0) for exclusive or"),
    ast.MatMult: ("@", "matrix products are not elementwise; use *"),
    ast.LShift: ("<<", "bit shifts are not supported; multiply by a power of 2"),
    ast.RShift: (">>", "bit shifts are not supported; divide by a power of 2"),
}
_COMPARE: dict[type[ast.cmpop], Callable[..., Any]] = {
    ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
    ast.Gt: np.greater, ast.GtE: np.greater_equal,
}  # fmt: skip
_REFUSED_COMPARE: dict[type[ast.cmpop], str] = {ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}
# Constructs refused by node type: (what it is, how to do without it).
_REFUSED: dict[type[ast.AST], tuple[str, str]] = {
    ast.Attribute: ("attribute access", "attributes cannot be read; use input names and functions"),
    ast.Subscript: ("subscript", "indexing is not supported; pick a band with -i NAME=PATH:BAND"),
    ast.Lambda: ("lambda", "functions cannot be defined; write the formula inline"),
    ast.ListComp: ("comprehension", "loops are not supported; the formula already applies to every pixel"),
    ast.SetComp: ("comprehension", "loops are not supported; the formula already applies to every pixel"),
    ast.DictComp: ("comprehension", "loops are not supported; the formula already applies to every pixel"),
    ast.GeneratorExp: ("comprehension", "loops are not supported; the formula already applies to every pixel"),
    ast.IfExp: ("conditional expression (if/else)", "use where(cond, a, b)"),
    ast.NamedExpr: ("assignment expression (:=)", "expressions cannot assign; write the formula inline"),
    ast.JoinedStr: ("f-string", "strings are not supported"),
    ast.FormattedValue: ("f-string", "strings are not supported"),
    ast.Tuple: ("tuple", "an expression has one result; pass several values to a function such as min(a, b)"),
    ast.List: ("list", "lists are not supported; pass several values to a function such as min(a, b)"),
    ast.Set: ("set", "sets are not supported"),
    ast.Dict: ("dict", "dicts are not supported"),
    ast.Starred: ("starred argument", "pass arguments one by one"),
    ast.Slice: ("slice", "indexing is not supported"),
    ast.Await: ("await", "not supported in expressions"),
    ast.Yield: ("yield", "not supported in expressions"),
    ast.YieldFrom: ("yield from", "not supported in expressions"),
}


def _is_number_literal(node: ast.expr) -> bool:
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _fold_literal(node: ast.expr) -> float:
    if isinstance(node, ast.UnaryOp):
        value = _fold_literal(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    assert isinstance(node, ast.Constant) and isinstance(node.value, int | float)
    return node.value


class _Builder:
    """Turn a whitelisted Python syntax tree into evaluation nodes, collecting input names."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.names: set[str] = set()

    def snippet(self, node: ast.AST) -> str:
        try:
            segment = ast.get_source_segment(self.source, node)
        except Exception:  # positions are a nicety; never let them fail the parse
            segment = None
        return _show(segment or type(node).__name__)

    def refuse(self, what: str, node: ast.AST, hint: str) -> ExpressionError:
        return ExpressionError(f"{what} {self.snippet(node)} is not allowed in expressions", hint)

    def build(self, node: ast.expr) -> _Node:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.BoolOp):
            fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            return _Apply(fn, tuple(self.build(v) for v in node.values), "logic")
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        what, hint = _REFUSED.get(type(node), (f"construct {type(node).__name__}", _LANGUAGE_HINT))
        raise self.refuse(what, node, hint)

    def constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _Literal(_to_float(value))
        if isinstance(value, bool):
            raise self.refuse("boolean constant", node, "use 1 or 0 (comparisons already give 1 or 0)")
        if value is None:
            raise self.refuse("constant", node, "use nan for a missing value, or 0")
        if isinstance(value, str):
            raise self.refuse("string", node, "strings are not supported; use numbers and input names")
        if isinstance(value, bytes):
            raise self.refuse("bytes literal", node, "bytes are not supported; use numbers and input names")
        if isinstance(value, complex):
            raise self.refuse("complex number", node, "only real numbers are supported")
        raise self.refuse("constant", node, _LANGUAGE_HINT)

    def name(self, node: ast.Name) -> _Node:
        ident = node.id
        if ident.startswith("_"):
            raise ExpressionError(f"name {ident!r} is not allowed in expressions (names may not start with '_')",
                                  "rename the input so that it starts with a letter")  # fmt: skip
        if ident in CONSTANTS:
            return _Literal(CONSTANTS[ident])
        if ident in FUNCTIONS:
            raise ExpressionError(f"function {ident!r} is used without calling it in expression {_show(self.source)}",
                                  f"call it as {FUNCTIONS[ident].signature}; function names cannot name inputs")  # fmt: skip
        self.names.add(ident)
        return _Input(ident)

    def unary(self, node: ast.UnaryOp) -> _Node:
        if isinstance(node.op, ast.USub | ast.UAdd) and _is_number_literal(node.operand):
            # Fold a signed literal as Python does (so -0 is the integer 0, i.e. +0.0, as in numpy's `a * -0`).
            return _Literal(_to_float(_fold_literal(node)))
        operand = self.build(node.operand)
        if isinstance(node.op, ast.USub):
            return _Apply(np.negative, (operand,))
        if isinstance(node.op, ast.UAdd):
            return _Identity(operand)
        return _Apply(np.logical_not, (operand,), "logic")  # `not` and `~` are both elementwise logical not

    def binary(self, node: ast.BinOp) -> _Node:
        op = type(node.op)
        if op in _REFUSED_BINARY:
            symbol, hint = _REFUSED_BINARY[op]
            raise self.refuse(f"operator '{symbol}' in", node, hint)
        fn, mode = _BINARY[op]
        if mode == "logic" and (_is_number_literal(node.left) or _is_number_literal(node.right)):
            # `t > 30 & t < 40` parses as `t > (30 & t) < 40`: refuse rather than compute nonsense.
            symbol = "&" if op is ast.BitAnd else "|"
            hint = f"'{symbol}' binds tighter than comparisons: write (t > 30) {symbol} (t < 40), or use 'and'/'or'"
            raise self.refuse(f"'{symbol}' with a number in", node, hint)
        return _Apply(fn, (self.build(node.left), self.build(node.right)), mode)

    def compare(self, node: ast.Compare) -> _Node:
        ops = []
        for op in node.ops:
            if type(op) in _REFUSED_COMPARE:
                raise self.refuse(f"comparison '{_REFUSED_COMPARE[type(op)]}' in", node, "use == or != to compare values")
            ops.append(_COMPARE[type(op)])
        operands = (self.build(node.left), *(self.build(c) for c in node.comparators))
        return _Compare(operands, tuple(ops))

    def call(self, node: ast.Call) -> _Node:
        if not isinstance(node.func, ast.Name):
            if isinstance(node.func, ast.Attribute):
                raise self.refuse("attribute access", node.func, "attributes cannot be read; call functions by name: sqrt(a)")
            raise self.refuse("call of", node, "only the named functions can be called, e.g. sqrt(a)")
        ident = node.func.id
        if ident.startswith("_"):
            raise ExpressionError(f"name {ident!r} is not allowed in expressions (names may not start with '_')",
                                  _functions_hint())  # fmt: skip
        if ident in CONSTANTS:
            raise ExpressionError(f"{ident!r} is a constant, not a function, in expression {_show(self.source)}",
                                  f"write {ident} * (...) to multiply")  # fmt: skip
        fn = FUNCTIONS.get(ident)
        if fn is None:
            close = difflib.get_close_matches(ident, FUNCTIONS, n=1)
            guess = f"did you mean {close[0]!r}? " if close else ""
            raise ExpressionError(f"unknown function {ident!r} in expression {_show(self.source)}", guess + _functions_hint())
        if node.keywords:
            keyword = node.keywords[0]
            what = f"keyword argument in call to {ident!r}:" if keyword.arg else f"'**' argument in call to {ident!r}:"
            raise self.refuse(what, keyword, f"pass arguments by position: {fn.signature}")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.refuse(f"starred argument in call to {ident!r}:", arg, f"pass arguments one by one: {fn.signature}")
        count = len(node.args)
        if count < fn.min_args or (fn.max_args is not None and count > fn.max_args):
            raise ExpressionError(f"function {ident!r} takes {fn.arity()}, got {count} in {self.snippet(node)}",
                                  f"call it as {fn.signature}{', ...' if fn.max_args is None else ''}")  # fmt: skip
        args = tuple(self.build(a) for a in node.args)
        return _Apply(fn.impl, args, "where" if fn.condition_first else "number")


def _functions_hint() -> str:
    return "functions are: " + ", ".join(sorted(FUNCTIONS))


def _to_float(value: float) -> float:
    # Python ints beyond the float range become +-inf, as a float literal like 1e999 does.
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
