"""RecordBuilder's gradient figure: given, derived from the update (FromUpdate), or none."""

import math

import numpy as np
import pytest

from weightwatch.run.rows import FromUpdate, RecordBuilder
from weightwatch.run.schema import COLUMNS

G = COLUMNS.index("grad_rms")


def rows(builder, arrays, grads):
    builder.start(len(arrays))
    for (path, a), g in zip(arrays.items(), grads):
        builder.add(path, a, trainable=True, frozen=False, grad=g)
    return builder.finish()


def test_grad_rms_given_or_from_the_update():
    b = RecordBuilder()
    w0 = np.zeros((4, 5), np.float32)
    first = rows(b, {"d/kernel": w0, "d/bias": np.zeros(5, np.float32)}, [FromUpdate(0.1), 0.25])
    assert np.isnan(first.values[0, G]) and first.values[1, G] == 0.25  # no update yet: none
    w1 = w0 + np.float32(0.03)  # every element moved by 0.03 over a step of 0.1 (lr x steps)
    second = rows(b, {"d/kernel": w1, "d/bias": np.zeros(5, np.float32)}, [FromUpdate(0.1), None])
    assert second.values[0, G] == pytest.approx(0.3, rel=1e-5) and np.isnan(second.values[1, G])
    third = rows(b, {"d/kernel": w1, "d/bias": np.zeros(5, np.float32)}, [FromUpdate(0.0), math.inf])
    assert np.isnan(third.values[0, G])  # no step: nothing to divide by
