"""Regression tests for bugs the differential tests (tests/test_differential.py) found.

Each test is the smallest graph that showed one bug, with what went wrong
in its docstring; it fails if the bug comes back.
"""

from __future__ import annotations

import numpy as np
import pytest

import tapegraph as tg
from tapegraph.ops import broadcast_to


def test_a_symbolic_size_that_no_input_gives_is_a_clear_error():
    """A "batch" dimension made by a static shape alone has no size when called.

    ``broadcast_to(w, ("batch",))`` with no input of shape ``("batch",
    ...)`` used to fail inside the lowering with a bare ``KeyError:
    'batch'``; it now names the node and says where a size must come from.
    """
    w = tg.param("w")
    program = tg.compile(tg.sum(broadcast_to(w, ("batch",))), wrt=[w])
    with pytest.raises(tg.GraphError, match=r"broadcast_to at .* has shape f64\[batch\], but no parameter or input"):
        program.value_and_grad({"w": np.array(1.0)})


def test_standalone_source_defines_a_gradient_that_is_a_constant():
    """``prog.source()`` of an objective affine in a parameter.

    The gradient is a constant folded at compile time; the generated
    module returned ``s1.copy()`` without ever assigning ``s1``, so calling
    it raised ``NameError``. ``prog.value_and_grad`` itself was right.
    Fixed in ``tapegraph/backends/source.py``: the buffers to define are
    looked for in the return line too.
    """
    p = tg.param("p")
    program = tg.compile(3.0 * p + 1.0, wrt=[p])
    namespace: dict = {}
    exec(program.source(name="step"), namespace)
    result = namespace["step"](p=np.array(2.0))
    assert result["objective"] == 7.0
    np.testing.assert_array_equal(result["grad p"], np.array(3.0))
