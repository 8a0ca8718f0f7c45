"""Small pieces of the markdown reports: one way to print a number in a table cell."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def cell(value: Any, spec: str = ".2f", missing: str = "-") -> str:
    """`value` for a table cell: `missing` for None / NaN, floats with `spec`, anything
    else as `str`."""
    if value is None:
        return missing
    if isinstance(value, (float, np.floating)):
        return missing if math.isnan(value) else format(float(value), spec)
    return str(value)
