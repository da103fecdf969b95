"""Training: optimizers as pure functions with explicit state, and epochs.

Every optimizer is one declaration of its update rule as expressions
(``Optimizer.update``; plain SGD's in ``SGDStep``), appended to the
program's tape as its update section: the dump, ``source()`` and check
mode see it like any other instruction.
Its hyperparameters (step size, momentum, betas, eps, weight decay) are
``hyper`` feeds of that tape, float64 scalars given at each call, so
changing them, or following a schedule (``tapegraph.schedules``), compiles
nothing new.

Conventions follow PyTorch's ``torch.optim`` (see docs/training.md):
weight decay of ``sgd``, ``adam`` and ``rmsprop`` adds ``weight_decay * p``
to the gradient (L2); ``adamw`` decays the parameter itself first,
``p * (1 - lr * weight_decay)``; Adam's bias corrections are applied as
``lr / (1 - b1**t)`` on the step and ``sqrt(v) / sqrt(1 - b2**t)`` in the
denominator, and eps is added after the square root, as is RMSProp's.

The package, one module per role: ``hypers`` (hyperparameter feeds and
their checks), ``step`` (the step base and plain SGD), ``epoch`` (an
epoch's rows and running them, ``shuffled``), ``stateful`` (the
optimizers with state); here, the constructors ``tg.sgd``, ``tg.adam``,
``tg.adamw`` and ``tg.rmsprop``.
"""

from __future__ import annotations

from tapegraph.errors import CallError
from tapegraph.optim.epoch import shuffled
from tapegraph.optim.hypers import HyperValue, check_hyper, hyper
from tapegraph.optim.stateful import SGD, Adam, Optimizer, OptimizerState, RMSProp
from tapegraph.optim.step import SGDStep
from tapegraph.program import Program

# Private names this package keeps from the single module it replaced:
# Program.map imports _EpochPlan from here, and pickles made before the
# split name tapegraph.optim._made_again (a step or optimizer) and
# tapegraph.optim._owner_of (a state's owner); the classes they name
# (SGDStep, Adam, OptimizerState...) are the public ones above.
from tapegraph.optim.epoch import _EpochPlan  # noqa: F401
from tapegraph.optim.stateful import _owner_of  # noqa: F401
from tapegraph.optim.step import _made_again  # noqa: F401

__all__ = [
    "sgd", "adam", "adamw", "rmsprop", "SGDStep", "SGD", "Adam", "RMSProp", "Optimizer", "OptimizerState",
    "HyperValue", "hyper", "check_hyper", "shuffled",
]


def sgd(program: Program, step_size: HyperValue, momentum: HyperValue = 0.0, nesterov: bool = False,
        weight_decay: HyperValue = 0.0, donate: bool = False) -> SGDStep | SGD:
    """SGD for ``program``; plain, it is a pure step ``step(params, inputs) -> (new_params, value)``.

    With a momentum (or Nesterov momentum) or a schedule for the step
    size, it is an ``Optimizer`` with state: ``state = opt.init(params)``,
    ``state, value = opt(state, inputs)``. See ``SGDStep`` and ``SGD``.

    >>> import numpy as np, tapegraph as tg
    >>> w = tg.param("w", shape=(2,))
    >>> step = tg.sgd(tg.compile(tg.sum(tg.square(w)), wrt=[w]), step_size=0.25)
    >>> new_params, value = step({"w": np.array([1.0, 2.0])}, {})
    >>> new_params["w"], value
    (array([0.5, 1. ]), 5.0)
    """
    if callable(step_size) or callable(momentum) or momentum != 0:
        return SGD(program, step_size, momentum, nesterov, weight_decay, donate)
    if nesterov:
        raise CallError("tg.sgd: nesterov=True needs a momentum > 0")
    if callable(weight_decay):
        return SGD(program, step_size, momentum, nesterov, weight_decay, donate)
    return SGDStep(program, step_size, donate, weight_decay)


def adam(program: Program, learning_rate: HyperValue = 1e-3, b1: HyperValue = 0.9, b2: HyperValue = 0.999,
         eps: HyperValue = 1e-8, weight_decay: HyperValue = 0.0, donate: bool = False) -> Adam:
    """Adam for ``program`` (PyTorch's conventions; weight decay as L2 in the gradient). See ``Adam``."""
    return Adam(program, learning_rate, b1, b2, eps, weight_decay, donate)


def adamw(program: Program, learning_rate: HyperValue = 1e-3, b1: HyperValue = 0.9, b2: HyperValue = 0.999,
          eps: HyperValue = 1e-8, weight_decay: HyperValue = 1e-2, donate: bool = False) -> Adam:
    """AdamW for ``program``: Adam with decoupled weight decay (PyTorch's default 0.01). See ``Adam``."""
    return Adam(program, learning_rate, b1, b2, eps, weight_decay, donate, decoupled=True)


def rmsprop(program: Program, learning_rate: HyperValue = 1e-2, alpha: HyperValue = 0.99, eps: HyperValue = 1e-8,
            weight_decay: HyperValue = 0.0, donate: bool = False) -> RMSProp:
    """RMSProp for ``program`` (PyTorch's defaults and conventions). See ``RMSProp``."""
    return RMSProp(program, learning_rate, alpha, eps, weight_decay, donate)
