"""The one-pass kernels of time stacks compute exactly what the numpy expressions they replace compute."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tilewise.io import valid_of
from tilewise.kernels import accumulate
from tilewise.kernels.accumulate_jit import add_valid, valid_float
from tilewise.ops.reduce import Group, ReduceOp

SPECIAL = st.sampled_from([np.nan, -9999.0, 0.0, -0.0, np.inf, -np.inf, 1e30, -1e-30])
FLOATS = st.one_of(SPECIAL, st.floats(width=32, allow_nan=True, allow_infinity=True))


@settings(max_examples=200, deadline=None)
@given(band=hnp.arrays(st.sampled_from([np.float32, np.float64]), hnp.array_shapes(min_dims=2, max_dims=2, max_side=17), elements=FLOATS),
       nodata=st.one_of(st.none(), SPECIAL))  # fmt: skip
def test_validity_kernel_equals_numpy(band: np.ndarray, nodata: float | None) -> None:
    expected = ~np.isnan(band)
    if nodata is not None and not np.isnan(nodata):
        expected &= band != np.asarray(nodata).astype(band.dtype)
    got = valid_float(band, nodata)
    assert got is not None and np.array_equal(got, expected)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=2, max_dims=2, max_side=13), dtype=st.sampled_from([np.float32, np.float64]))
def test_adding_a_date_equals_numpy(data: st.DataObject, shape: tuple[int, int], dtype: type) -> None:
    finite = st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False)
    total = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False), fill=st.nothing()))
    n = data.draw(hnp.arrays(np.int32, shape, elements=st.integers(0, 1000)))
    values = data.draw(hnp.arrays(dtype, shape, elements=finite, fill=st.nothing()))
    good = data.draw(hnp.arrays(np.bool_, shape))
    want_total, want_n, v = total.copy(), n.copy(), values.copy()
    np.copyto(v, 0, where=~good)  # the numpy path of ReduceOp
    want_total += v
    want_n += good
    assert add_valid(values, good, total, n)
    assert np.array_equal(total, want_total) and np.array_equal(n, want_n)


@pytest.mark.parametrize("stat", ["mean", "sum", "count", "std"])
def test_reduce_is_bit_identical_with_and_without_the_kernels(stat: str, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    shape = (520, 520)  # above the size where the kernels are used
    dates = []
    for i in range(9):
        v = (rng.normal(20, 5, shape) * (i + 1)).astype(np.float32)
        v[rng.random(shape) < 0.1] = -9999.0
        v[rng.random(shape) < 0.02] = np.nan
        dates.append(v)
    names = tuple((f"d{i}",) for i in range(len(dates)))
    op = ReduceOp(stat, (Group("all", names, tuple(20210101 + i for i in range(len(dates)))),))
    arrays = {f"d{i}": d for i, d in enumerate(dates)}

    def run() -> tuple[np.ndarray, np.ndarray]:
        valid = {k: valid_of(a, -9999.0) for k, a in arrays.items()}
        return op.compute(arrays, valid, np.dtype(np.float32))

    assert shape[0] * shape[1] >= accumulate.FAST_MIN_PIXELS
    fast = run()
    monkeypatch.setattr(accumulate, "FAST_MIN_PIXELS", 1 << 40)
    slow = run()
    assert np.array_equal(fast[0], slow[0], equal_nan=True) and np.array_equal(fast[1], slow[1])
