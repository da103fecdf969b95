"""Learning-rate schedules: plain functions of the step count.

A schedule is called with the number of steps taken so far (``state.count``
of an optimizer's state: 0 for the first step) and gives the value a
hyperparameter takes at that step. The optimizer feeds that value to its
compiled update as a number, so a whole schedule runs on one compiled
tape: nothing is specialised per value.

>>> import tapegraph as tg
>>> schedule = tg.schedules.step_decay(0.1, drop=0.5, every=2)
>>> [schedule(count) for count in range(5)]
[0.1, 0.1, 0.05, 0.05, 0.025]

Any callable ``count -> float`` serves as a schedule; these are frozen
records with readable reprs.
"""

from __future__ import annotations

import math

import attrs

from tapegraph.errors import CallError

__all__ = ["Schedule", "constant", "exponential", "step_decay", "cosine"]


def _finite(value: float, what: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise CallError(f"{what} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or positive and value == 0:
        need = "positive" if positive else "non-negative"
        raise CallError(f"{what} must be a {need} finite number, got {value!r}")
    return value


def _steps(value: int, what: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise CallError(f"{what} must be an integer {'>= 0' if allow_zero else '>= 1'}, got {value!r}")
    return value


class Schedule:
    """A value per step count: ``schedule(count) -> float``."""

    def __call__(self, count: int) -> float:
        raise NotImplementedError


@attrs.frozen
class Constant(Schedule):
    """``value`` at every step."""

    value: float

    def __call__(self, count: int) -> float:
        return self.value


@attrs.frozen
class Exponential(Schedule):
    """``initial * decay_rate ** (count / decay_steps)`` (floored with ``staircase``)."""

    initial: float
    decay_rate: float
    decay_steps: int = 1
    staircase: bool = False

    def __call__(self, count: int) -> float:
        exponent = count // self.decay_steps if self.staircase else count / self.decay_steps
        return self.initial * self.decay_rate ** exponent


@attrs.frozen
class StepDecay(Schedule):
    """``initial * drop ** (count // every)``: multiplied by ``drop`` every ``every`` steps."""

    initial: float
    drop: float
    every: int

    def __call__(self, count: int) -> float:
        return self.initial * self.drop ** (count // self.every)


@attrs.frozen
class Cosine(Schedule):
    """Linear warm-up to ``peak``, then a half cosine down to ``final``.

    For ``count < warmup_steps``: ``peak * (count + 1) / warmup_steps``.
    Then, with ``t = (count - warmup_steps) / (total_steps - warmup_steps)``
    clipped to [0, 1]: ``final + (peak - final) * (1 + cos(pi t)) / 2``.
    """

    peak: float
    total_steps: int
    warmup_steps: int = 0
    final: float = 0.0

    def __call__(self, count: int) -> float:
        if count < self.warmup_steps:
            return self.peak * (count + 1) / self.warmup_steps
        progress = min(1.0, (count - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.final + (self.peak - self.final) * (1.0 + math.cos(math.pi * progress)) / 2.0


def constant(value: float) -> Constant:
    """The same ``value`` at every step."""
    return Constant(_finite(value, "constant schedule: value"))


def exponential(initial: float, decay_rate: float, decay_steps: int = 1, staircase: bool = False) -> Exponential:
    """``initial * decay_rate ** (count / decay_steps)``; with ``staircase`` the exponent is floored.

    >>> import tapegraph as tg
    >>> tg.schedules.exponential(1.0, 0.5)(3)
    0.125
    """
    return Exponential(_finite(initial, "exponential schedule: initial"),
                       _finite(decay_rate, "exponential schedule: decay_rate", positive=True),
                       _steps(decay_steps, "exponential schedule: decay_steps"), bool(staircase))


def step_decay(initial: float, drop: float, every: int) -> StepDecay:
    """``initial``, multiplied by ``drop`` after every ``every`` steps."""
    return StepDecay(_finite(initial, "step_decay schedule: initial"), _finite(drop, "step_decay schedule: drop"),
                     _steps(every, "step_decay schedule: every"))


def cosine(peak: float, total_steps: int, warmup_steps: int = 0, final: float = 0.0) -> Cosine:
    """Linear warm-up over ``warmup_steps`` to ``peak``, then cosine decay to ``final`` at ``total_steps``.

    >>> import tapegraph as tg
    >>> schedule = tg.schedules.cosine(1.0, total_steps=4, warmup_steps=2)
    >>> [round(schedule(count), 3) for count in range(5)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    total_steps = _steps(total_steps, "cosine schedule: total_steps")
    warmup_steps = _steps(warmup_steps, "cosine schedule: warmup_steps", allow_zero=True)
    if warmup_steps >= total_steps:
        raise CallError(f"cosine schedule: warmup_steps ({warmup_steps}) must be less than total_steps ({total_steps})")
    return Cosine(_finite(peak, "cosine schedule: peak"), total_steps, warmup_steps,
                  _finite(final, "cosine schedule: final"))
