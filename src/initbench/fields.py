"""One type for a value a user sets: a config field, a dataset parameter, a model's argument.

:class:`Field` says a value's type, its valid range and whether null is allowed, and puts that
in words for errors (``model.depth must be an integer >= 1 (got 0)``). The config schema
(:mod:`initbench.config`), the datasets' parameters and the shipped models' arguments
(``config_fields`` on the class) are written with it; it imports nothing of the package, so
every layer may use it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Field:
    """One value a user sets: its type, its valid range, whether null is allowed, its default."""

    kind: str  # int | real | bool | str | choice | int_list | str_list
    low: float | None = None  # lower bound, exclusive when ``low_open``
    low_open: bool = False
    high: float | None = None  # upper bound, exclusive when ``high_open``
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    default: Any = None  # where the field has a code default (a dataset's parameters)

    def describe(self) -> str:
        """The valid values in words: ``an integer >= 1``, ``one of fp32, bf16``, ..."""
        if self.kind == "choice":
            names = (str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
            text = f"one of {', '.join(names)}"
        else:
            text = {
                "int": "an integer",
                "real": "a finite number",
                "bool": "true or false",
                "str": "a string",
                "int_list": "a non-empty list of integers",
                "str_list": "a list of strings",
            }[self.kind]
            if self.low is not None and self.high is not None:
                text += f" in [{self.low}, {self.high}{')' if self.high_open else ']'}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low}"
        return text + (" or null" if self.nullable else "")

    def check(self, name: str, value: Any) -> None:
        """ValueError ``<name> must be <what is valid> (got <value>)`` unless it accepts
        ``value``."""
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.describe()} (got {value!r})")

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the right type and lies in range."""
        if value is None:
            return self.nullable
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "int_list":
            item = Field("int", low=self.low)
            return isinstance(value, list | tuple) and value and all(map(item.accepts, value))
        if self.kind == "str_list":
            return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


def Int(low: int | None = None, *, nullable: bool = False) -> Field:  # noqa: N802
    return Field("int", low=low, nullable=nullable)


BOOL = Field("bool")
STR = Field("str")
POSITIVE = Int(1)
