"""The lab's statistics, one of each: percentiles (nearest rank), latency summaries, means and rates
with 95% Wilson intervals. Every function answers None for no data (never 0, NaN or an IndexError), so
a bench that measured nothing reports null in its JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> list[float] | None:
    """95% Wilson score interval of k successes in n trials ([low, high]); None without trials."""
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"{k} successes in {n} trials")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 4), round(min(1.0, c + h), 4)]


def rate(k: int, n: int) -> dict:
    """{"value", "ci95", "k", "n"} for k of n."""
    return {"value": round(k / n, 4) if n else None, "ci95": wilson(k, n), "k": int(k), "n": int(n)}


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank: a value that was measured; None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q}: give 0..100")
    v = sorted(values)
    if not v:
        return None
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]


def mean(values: Iterable[float]) -> float | None:
    v = list(values)
    return math.fsum(v) / len(v) if v else None


def rounded(x: float | None, digits: int) -> float | None:
    """round() that keeps None (no data) as None."""
    return None if x is None else round(float(x), digits)


def summary(
    values: Iterable[float], quantiles: Iterable[int] = (50, 95, 99), scale: float = 1.0, digits: int = 3
) -> dict:
    """{"p50", "p95", "p99", "max", "samples"} of `values` times `scale` (e.g. 1e-3: microseconds to
    ms), rounded; every figure None for no values."""
    v = sorted(values)
    out = {f"p{q}": rounded(None if not v else percentile(v, q) * scale, digits) for q in quantiles}
    out["max"] = rounded(v[-1] * scale, digits) if v else None
    out["samples"] = len(v)
    return out
