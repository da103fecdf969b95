"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import numpy as np
import pytest

from tapegraph.ops import Arg


def draw(arg: Arg, rng: np.random.Generator) -> np.ndarray:
    """An array for one sample argument, as the op declares it."""
    if np.dtype(arg.dtype).kind == "b":
        return np.asarray(rng.random(size=arg.shape) < 0.5)
    if np.dtype(arg.dtype).kind in "iu":
        return rng.integers(int(arg.low), int(arg.high), size=arg.shape).astype(arg.dtype)
    return rng.uniform(arg.low, arg.high, size=arg.shape).astype(arg.dtype)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
