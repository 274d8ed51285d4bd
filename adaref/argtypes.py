"""argparse ``type=`` checkers shared by the command-line programs.

Each returns a parser that turns the flag's text into a value or raises
``argparse.ArgumentTypeError``, so argparse reports ``argument --flag: must be ...,
got '...'`` and exits with code 2 before any work starts.
"""
from __future__ import annotations

import argparse
import math


def _bound(minimum, maximum) -> str:
    return f">= {minimum:g}" if maximum is None else f"in {minimum:g}..{maximum:g}"


def integer(minimum: int, maximum: int | None = None, why: str = ""):
    """An integer in ``minimum..maximum`` (no upper bound if ``maximum`` is None).

    >>> integer(1, 5)("3")
    3
    >>> integer(1, 5, " (the experts)")("9")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an integer in 1..5 (the experts), got '9'
    >>> integer(0)("x")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be an integer >= 0, got 'x'
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be an integer {_bound(minimum, maximum)}{why}, got {text!r}")
        return value
    return parse


def number(minimum: float, above: bool = False, why: str = ""):
    """A finite float ``>= minimum`` (``> minimum`` if ``above``).

    >>> number(0.0)("0")
    0.0
    >>> number(0.0, above=True)("nan")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be a finite number > 0, got 'nan'
    """
    bound = f"{'>' if above else '>='} {minimum:g}{why}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text!r}")
        return value
    return parse


def integer_list(minimum: int, maximum: int | None = None):
    """One integer or several, comma-separated, distinct, each in ``minimum..maximum``.

    >>> integer_list(0)("0,1,2")
    [0, 1, 2]
    >>> integer_list(1, 5)("1,1")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be distinct integers in 1..5, got '1,1'
    """
    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"give an integer or comma-separated integers, got {text!r}") from None
        if (len(set(values)) != len(values) or min(values) < minimum
                or (maximum is not None and max(values) > maximum)):
            raise argparse.ArgumentTypeError(f"must be distinct integers {_bound(minimum, maximum)}, got {text!r}")
        return values
    return parse
