"""How numbers and factories are spelled in names, paths and tables: the lowest layer of the
vocabulary (grid.py re-exports these; they are defined here alone)."""

from __future__ import annotations

import math


def factory_file(spec: str) -> str:
    """The file of a factory "<file>.py:<function>" (relative to the repository root)."""
    return spec.rsplit(":", 1)[0]


def format_number(value) -> str:
    """THE spelling of a number in cell and variant names, paths and tables.

    1, 1.0 and "1.0" -> "1"; 0.50 -> "0.5"; 100.0 -> "100"; 1e-05 -> "1e-05" (12
    significant digits, so float noise never makes two names). None, NaN, pandas' NA and
    "" (an empty table cell) -> ""; text that is not a number (a transfer protocol) is
    kept, stripped.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return text
    try:
        value = float(value)
    except (TypeError, ValueError):  # None, pandas.NA
        return ""
    return "" if math.isnan(value) else format(value, ".12g")


def number_value(text) -> float:
    """The numeric value of a spelled number, for sorting and plotting (NaN if none)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")
