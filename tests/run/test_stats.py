"""weightwatch.stats.tensor_row against a float64 numpy recomputation.

The recorder's statistics are computed in one blocked float32 pass; every
figure here is checked against the obvious float64 formula (conftest's
``reference_row``) on tensors built to stress that pass: non-finite values,
awkward dtypes, several blocks, sizes that are not a multiple of the block.
"""

from __future__ import annotations

import math

try:  # ships with TensorFlow and JAX; bfloat16 is covered where it is installed
    import ml_dtypes
except ImportError:
    ml_dtypes = None
import numpy as np
import pytest

from weightwatch.run import stats
from weightwatch.run.schema import (
    COLUMNS, DELTA_COLUMNS, FIRST_COLUMNS, GRAD_COLUMNS, PENALTY_COLUMNS, REPLICA_COLUMNS, STAT_COLUMNS,
)
from weightwatch.run.stats import tensor_row

BLOCK = stats.BLOCK


def rng(seed=0):
    return np.random.default_rng(seed)


def test_columns_layout():
    assert COLUMNS == ("trainable", "frozen") + STAT_COLUMNS + DELTA_COLUMNS + GRAD_COLUMNS + REPLICA_COLUMNS \
        + PENALTY_COLUMNS
    # Columns are only ever appended: the first layout stays a prefix, so old runs still read.
    assert FIRST_COLUMNS == ("trainable", "frozen") + STAT_COLUMNS + DELTA_COLUMNS
    row, _ = tensor_row(np.ones(3, np.float32))
    assert set(row) == set(STAT_COLUMNS + DELTA_COLUMNS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 7, 1000, BLOCK, BLOCK + 1, 2 * BLOCK + 123])
def test_random_tensor_matches_float64(ref_row, check_row, dtype, size):
    r = rng(size)
    prev = r.normal(0.1, 0.5, size=size).astype(dtype)
    x = (prev + r.normal(0, 1e-2, size=size)).astype(dtype)
    x[:: max(1, size // 5)] = 0.0  # some exact zeros
    got, _ = tensor_row(x, prev)
    check_row(got, ref_row(x, prev), where=f"{dtype.__name__}[{size}]")
    first, direction = tensor_row(x)
    check_row(first, ref_row(x), where="no prev")
    assert direction is None


def test_returned_types_are_json_scalars():
    x = rng().normal(size=50).astype(np.float32)
    row, _ = tensor_row(x, x * 1.5)
    for k, v in row.items():
        assert v is None or type(v) in (int, float, bool), (k, type(v))
    assert type(row["size"]) is int and type(row["nan"]) is int and type(row["changed"]) is bool


@pytest.mark.parametrize("size", [10, BLOCK + 17])
def test_nan_and_inf_are_counted_not_averaged(ref_row, check_row, size):
    r = rng(3)
    x = r.normal(size=size).astype(np.float32)
    x[1] = np.nan
    x[3] = np.inf
    x[-1] = -np.inf
    x[size // 2] = np.nan
    got, _ = tensor_row(x)
    exp = ref_row(x)
    assert got["nan"] == 2 and got["inf"] == 2
    check_row(got, exp)
    assert math.isfinite(got["l2"]) and math.isfinite(got["std"])
    # An update touching a non-finite value has no size: None, but it did change.
    prev = np.where(np.isfinite(x), x, 0).astype(np.float32)
    got, direction = tensor_row(x, prev)
    assert got["changed"] is True and got["d_l2"] is None and got["d_absmax"] is None
    assert got["d_cos"] is None and direction is None


def test_all_nan_tensor_has_no_statistics():
    x = np.full(20, np.nan, np.float32)
    got, _ = tensor_row(x, np.zeros(20, np.float32))
    assert got["size"] == 20 and got["nan"] == 20 and got["inf"] == 0
    for col in ("l2", "mean", "std", "min", "max", "absmax", "zero_frac", "d_l2", "d_absmax", "d_cos"):
        assert got[col] is None, col


def test_empty_tensor():
    x = np.zeros((0, 4), np.float32)
    got, _ = tensor_row(x)
    assert got["size"] == 0 and got["nan"] == 0 and got["inf"] == 0
    assert got["l2"] is None and got["mean"] is None and got["zero_frac"] is None
    got, _ = tensor_row(x, x.copy(), units=4)
    assert got["changed"] is False and got["d_l2"] == 0.0


@pytest.mark.parametrize("dtype", [np.float16, *([ml_dtypes.bfloat16] if ml_dtypes else []),
                                   np.int32, np.int64, np.uint8, np.bool_])
def test_narrow_float_int_and_bool_inputs(ref_row, check_row, dtype):
    r = rng(5)
    if dtype is np.bool_:
        prev = r.random(300) < 0.5
        x = prev.copy()
        x[:7] = ~x[:7]
    elif np.dtype(dtype).kind in "iu":
        prev = r.integers(0, 100, size=300).astype(dtype)
        x = prev.copy()
        x[::10] += 1
    else:
        prev = r.normal(size=300).astype(dtype)
        x = (prev.astype(np.float32) + r.normal(0, 0.1, 300).astype(np.float32)).astype(dtype)
    got, direction = tensor_row(x, prev)
    assert direction is None  # no update direction kept for these
    exp = ref_row(x, prev)
    check_row(got, exp, where=np.dtype(dtype).name)
    assert got["changed"] is True
    same, _ = tensor_row(x, x.copy())
    assert same["changed"] is False and same["d_l2"] == 0.0


def test_float16_changed_is_exact_not_rounded():
    # A change below float16 resolution of the float64 copy would still be a change.
    prev = np.array([1.0, 2.0], np.float16)
    x = prev.copy()
    x[1] = np.nextafter(x[1], np.float16(3))
    got, _ = tensor_row(x, prev)
    assert got["changed"] is True and got["d_l2"] > 0


@pytest.mark.parametrize("mean,std", [(1e4, 1e-2), (-3e3, 1e-3), (1.0, 1e-6)])
def test_large_mean_small_std_keeps_std_accuracy(ref_row, mean, std):
    x = rng(11).normal(mean, std, size=2 * BLOCK + 5).astype(np.float32)
    got, _ = tensor_row(x)
    exp = ref_row(x)
    assert exp["std"] > 0
    # The naive E[x^2]-E[x]^2 in float32 loses every digit here; shifted sums must not.
    assert got["std"] == pytest.approx(exp["std"], rel=1e-4)
    assert got["mean"] == pytest.approx(exp["mean"], rel=1e-7)
    assert got["l2"] == pytest.approx(exp["l2"], rel=1e-6)


def test_values_near_float32_max_do_not_overflow(ref_row, check_row):
    x = rng(2).uniform(0.5, 1.0, size=1000).astype(np.float32) * np.float32(3.3e38)
    x[::2] *= -1
    got, _ = tensor_row(x)
    exp = ref_row(x)
    assert math.isfinite(exp["l2"]) and exp["l2"] > float(np.finfo(np.float32).max)
    check_row(got, exp)
    assert got["l2"] == pytest.approx(exp["l2"], rel=1e-5)


def test_values_near_float32_max_across_blocks(ref_row):
    x = np.concatenate([np.full(BLOCK, 3e38, np.float32), np.full(BLOCK + 3, -3e38, np.float32)])
    with np.errstate(over="ignore"):
        got, _ = tensor_row(x)
    exp = ref_row(x)
    assert got["l2"] == pytest.approx(exp["l2"], rel=1e-6)
    assert got["std"] == pytest.approx(exp["std"], rel=1e-6)


def test_finite_update_larger_than_float32_max(ref_row):
    prev = np.array([-3e38, 1.0], np.float32)
    x = np.array([3e38, 1.0], np.float32)
    with np.errstate(over="ignore"):
        got, _ = tensor_row(x, prev)
    assert got["d_l2"] == pytest.approx(ref_row(x, prev)["d_l2"], rel=1e-6)


def test_d_l2_of_a_uniform_update_over_many_blocks(ref_row):
    prev = rng(21).normal(size=4 * BLOCK + 7).astype(np.float32)
    x = prev + np.float32(0.01)
    got, _ = tensor_row(x, prev)
    assert got["d_l2"] == pytest.approx(ref_row(x, prev)["d_l2"], rel=1e-5)


@pytest.mark.parametrize("rows,units", [(50, 12), (600, 300), (3, 40000)])
def test_dead_units_counts_unchanged_columns(ref_row, rows, units):
    r = rng(units)
    prev = r.normal(size=(rows, units)).astype(np.float32)
    x = prev + r.normal(0, 1e-3, size=prev.shape).astype(np.float32)
    dead = r.choice(units, size=max(1, units // 7), replace=False)
    x[:, dead] = prev[:, dead]
    # A column that changes in one row only is alive.
    alive_one_row = np.setdiff1d(np.arange(units), dead)[0]
    x[:, alive_one_row] = prev[:, alive_one_row]
    x[rows - 1, alive_one_row] += 1.0
    assert x.size > BLOCK or rows * units < BLOCK
    got, _ = tensor_row(x, prev, units=units)
    assert got["dead_units"] == len(dead) == ref_row(x, prev, units=units)["dead_units"]
    assert got["changed"] is True
    # Nothing changed: every unit is dead.  No units given: not computed.
    assert tensor_row(x, x.copy(), units=units)[0]["dead_units"] == units
    assert tensor_row(x, prev)[0]["dead_units"] is None


def _three_steps(size, second):
    r = rng(size)
    x0 = r.normal(size=size).astype(np.float32)
    d = r.normal(0, 1e-2, size=size).astype(np.float32)
    x1 = x0 + d
    x2 = x1 + second(d, r)
    return x0, x1, x2


@pytest.mark.parametrize("size", [100, 2 * BLOCK + 999])
@pytest.mark.parametrize("second,expected", [
    (lambda d, r: -d, -1.0),               # the update reverses: oscillation
    (lambda d, r: d, 1.0),                 # the same update again
    (lambda d, r: 0.5 * d, 1.0),           # same direction, smaller step
])
def test_d_cos_between_consecutive_updates(size, second, expected):
    x0, x1, x2 = _three_steps(size, second)
    row1, dir1 = tensor_row(x1, x0)
    assert row1["d_cos"] is None  # no previous update yet
    assert dir1 is not None
    row2, _ = tensor_row(x2, x1, dir1)
    assert row2["d_cos"] == pytest.approx(expected, abs=2e-3)


def test_d_cos_matches_float64_for_unrelated_updates(ref_row):
    size = BLOCK + 4321
    x0, x1, x2 = _three_steps(size, lambda d, r: (0.3 * d + r.normal(0, 1e-2, size=d.size)).astype(np.float32))
    _, dir1 = tensor_row(x1, x0)
    row2, _ = tensor_row(x2, x1, dir1)
    exp = ref_row(x2, x1, x0)["d_cos"]
    assert 0.05 < exp < 0.95
    assert row2["d_cos"] == pytest.approx(exp, abs=2e-3)


def test_d_cos_undefined_after_a_zero_update_and_when_not_tracked():
    x0 = np.arange(10, dtype=np.float32)
    _, dir_zero = tensor_row(x0, x0.copy())
    row, _ = tensor_row(x0 + 1, x0, dir_zero)
    assert row["d_cos"] is None  # previous update was zero: no direction
    _, d1 = tensor_row(x0 + 1, x0, track_direction=False)
    assert d1 is None
    row, _ = tensor_row(x0 + 2, x0 + 1, d1)
    assert row["d_cos"] is None


def test_shape_of_previous_must_match():
    # A previous copy of another size (rebuilt layer) gives no deltas, not an error.
    got, _ = tensor_row(np.ones(5, np.float32), np.ones(4, np.float32))
    assert got["d_l2"] is None and got["changed"] is None
