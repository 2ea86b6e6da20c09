"""Small, dependency-free statistics the report and the selection share.

Why here and not scipy: the intervals are a few lines, and having them in one place means the
report and ``select`` can never disagree about what "95 %" means.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Wilson 1927).

    Why Wilson and not the normal approximation: with the small n of a product sweep (5-50
    products per category) and pass rates near 0 or 1, p ± z·sqrt(p(1-p)/n) collapses to a
    zero-width interval at 0 % or 100 %, claiming a certainty the data does not have. Returns
    (nan, nan) for n = 0: no evidence is not a rate of zero.
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, not {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))
