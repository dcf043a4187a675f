"""Small statistics for the benchmarks: Wilson intervals for rates, bootstrap-free and exact enough."""
from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.959964) -> list[float] | None:
    """95% Wilson score interval of k successes in n trials ([low, high]); None without trials."""
    if n <= 0:
        return None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 4), round(min(1.0, c + h), 4)]


def rate(k: int, n: int) -> dict:
    """{"value", "ci95", "k", "n"} for k of n."""
    return {"value": round(k / n, 4) if n else None, "ci95": wilson(k, n), "k": int(k), "n": int(n)}


def percentile(values, q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100 * len(v)) - 1))]
