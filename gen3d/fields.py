"""Ranges of config values, declared on the dataclass fields that hold them:

    steps: PosInt = 100                      # an integer >= 1
    ema: Annotated[float, AtLeast(0), Below(1)] = 0.0

``learners.config`` checks every value of a config against its field's range (and every
number for being finite) before a run starts, and names the key and the file when one is out
of it. ``problem(value, hint)`` is that check for one value. Light: no torch at import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin


class Range:
    """A condition on a value; ``problem`` says what is wrong with one, or None."""

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class AtLeast(Range):
    low: float

    def problem(self, value: Any) -> str | None:
        return None if value >= self.low else f"must be >= {self.low:g}"


@dataclass(frozen=True)
class Above(Range):
    low: float

    def problem(self, value: Any) -> str | None:
        return None if value > self.low else f"must be > {self.low:g}"


@dataclass(frozen=True)
class AtMost(Range):
    high: float

    def problem(self, value: Any) -> str | None:
        return None if value <= self.high else f"must be <= {self.high:g}"


@dataclass(frozen=True)
class Below(Range):
    high: float

    def problem(self, value: Any) -> str | None:
        return None if value < self.high else f"must be < {self.high:g}"


@dataclass(frozen=True)
class Finite(Range):
    """Any finite number, by design (every number is checked for being finite; this marks a
    field that has no narrower range)."""

    def problem(self, value: Any) -> str | None:
        return None if math.isfinite(value) else "must be a finite number"


@dataclass(frozen=True)
class NonEmpty(Range):
    def problem(self, value: Any) -> str | None:
        return None if len(value) > 0 else "must not be empty"


@dataclass(frozen=True)
class Device(Range):
    """A torch device string: auto (the GPU when torch can use one), cpu, cuda, cuda:1, ..."""

    def problem(self, value: Any) -> str | None:
        if value == "auto":
            return None
        import torch

        try:
            torch.device(value)
        except (RuntimeError, TypeError):
            return "must be auto or a torch device such as cpu, cuda or cuda:1"
        return None


PosInt = Annotated[int, AtLeast(1)]
NonNegInt = Annotated[int, AtLeast(0)]
PosFloat = Annotated[float, Above(0)]
NonNegFloat = Annotated[float, AtLeast(0)]
UnitFloat = Annotated[float, AtLeast(0), AtMost(1)]
FiniteFloat = Annotated[float, Finite()]
NonEmptyStr = Annotated[str, NonEmpty()]
DeviceStr = Annotated[str, Device()]


def ranges(hint: Any) -> tuple[Range, ...]:
    """The ranges a (resolved, ``include_extras``) type hint declares; () if none."""
    if get_origin(hint) is Annotated:
        return tuple(m for m in get_args(hint)[1:] if isinstance(m, Range))
    if get_origin(hint) in (Union, UnionType):  # Optional[Annotated[...]]
        return tuple(r for a in get_args(hint) for r in ranges(a))
    return ()


def problem(value: Any, hint: Any) -> str | None:
    """What is wrong with ``value`` for a field typed ``hint`` ("must be >= 1"), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if value is None:  # an optional field left unset
        return None
    for r in ranges(hint):
        msg = r.problem(value)
        if msg:
            return msg
    return None
