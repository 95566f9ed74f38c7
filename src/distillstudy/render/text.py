"""How the report writes numbers and names: percentages, signed gains with their
confidence intervals, the CSS class of a gain cell, and file-system-safe names.

Every reported difference reads "<signed mean><unit> [<signed lo>, <signed hi>]",
with the unicode minus sign, scaled to percentage points for accuracies:

    >>> gain_text(0.05, 0.035, 0.065)
    '+5.0 pp [+3.5, +6.5]'

Temperatures and levels are never formatted here: they arrive already spelled by
`distillstudy.grid.format_number` / `grid.format_number`, and a fraction shown as
a percentage goes through `grid.format_number` too (`fraction_percent`).
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np
import pandas as pd

from distillstudy import grid


def missing(x) -> bool:
    """None, pandas' NA or a float NaN."""
    return x is None or x is pd.NA or (isinstance(x, (float, np.floating)) and math.isnan(x))


def pct(x, digits: int = 1) -> str:
    """A fraction as a percentage: 0.9234 -> '92.3%'."""
    return "n/a" if missing(x) else f"{100 * x:.{digits}f}%"


def num(x, digits: int = 3) -> str:
    return "n/a" if missing(x) else f"{x:.{digits}f}"


def signed(x, scale: float, digits: int) -> str:
    """`scale * x` with an explicit sign ('+' or the unicode minus); a value that rounds
    to zero at `digits` decimals has no sign."""
    if missing(x):
        return "n/a"
    v = scale * x
    s = f"{abs(v):.{digits}f}"
    if float(s) == 0:
        return s
    return ("+" if v > 0 else "−") + s


def gain_text(mean, lo, hi, *, scale: float = 100.0, digits: int = 1, unit: str = " pp") -> str:
    """A paired difference and its CI; a single seed has no CI and says so."""
    if missing(mean):
        return "n/a"
    ci = "CI n/a (one seed)" if missing(lo) else f"[{signed(lo, scale, digits)}, {signed(hi, scale, digits)}]"
    return f"{signed(mean, scale, digits)}{unit} {ci}"


def mean_ci_text(mean, lo, hi) -> str:
    """A mean accuracy ± the half-width of its CI in percentage points: '92.3% ± 1.2 pp'."""
    if missing(mean):
        return "n/a"
    if missing(lo):
        return pct(mean)
    return f"{pct(mean)} ± {100 * (hi - lo) / 2:.1f} pp"


def share_text(share, lo, hi) -> str:
    """A share as a whole percentage with its CI: '50% [40%, 60%]'."""
    if missing(share):
        return "n/a"
    if missing(lo):
        return f"{100 * share:.0f}%"
    return f"{100 * share:.0f}% [{100 * lo:.0f}%, {100 * hi:.0f}%]"


def fraction_percent(value: float) -> str:
    """A fraction level as a percentage, in the one spelling of levels: 0.03 -> '3%'."""
    return grid.format_number(100 * value) + "%"


def css_class(significant, mean, higher_is_better: bool = True) -> str:
    """CSS class of a gain cell: 'better' / 'worse' when the CI excludes zero, else 'nsig'."""
    if not significant or missing(mean):
        return "nsig"
    return "better" if (mean > 0) == higher_is_better else "worse"


def slug(name: str) -> str:
    """File-system and anchor safe name; a hash suffix keeps distinct names distinct."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:40] or "dataset"
    return f"{base}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"


def ratio_num(x) -> str:
    """A variance ratio: two decimals."""
    return num(x, 2)


def ratio_text(ratio, low, high) -> str:
    """A variance ratio with its CI: '0.32 [0.21, 0.48]'; without a CI it says so."""
    if missing(ratio):
        return "n/a"
    ci = "(CI n/a)" if missing(low) else f"[{ratio_num(low)}, {ratio_num(high)}]"
    return f"{ratio_num(ratio)} {ci}"


def ratio_verdict(low, high) -> str:
    """'lower' when the CI of a variance ratio lies below 1, 'higher' above 1, 'none'
    when it holds 1, 'undefined' without a CI."""
    if missing(low) or missing(high):
        return "undefined"
    return "lower" if high < 1 else "higher" if low > 1 else "none"
