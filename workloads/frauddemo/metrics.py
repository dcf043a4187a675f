"""Every Prometheus metric of the runtime, in one place (names per DESIGN.md: `frauddemo_` prefix,
base units, `_total` on counters, bounded label values).

Locally, many processes share one `/metrics`: the supervisor sets PROMETHEUS_MULTIPROC_DIR and the
service aggregates with prometheus_client's multiprocess collector. In pods each process serves its own.
"""
from __future__ import annotations

import bisect
import os

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest, multiprocess)

LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.01, 0.025,
               0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LINK = ("source", "target")

REPLICATION_LAG = Histogram(
    "frauddemo_replication_lag_seconds",
    "End-to-end replication lag: commit at the source store to applied at the target store.",
    LINK, buckets=LAG_BUCKETS)
SYNCER_APPLIED = Counter(
    "frauddemo_syncer_applied_ops", "Op-log entries merged into the target.", LINK)
SYNCER_SKIPPED = Counter(
    "frauddemo_syncer_skipped_ops", "Malformed op-log entries skipped (logged with their id).", LINK)
SYNCER_RESYNCS = Counter(
    "frauddemo_syncer_resyncs", "Full-state resyncs after the target fell behind the source's log.", LINK)
SYNCER_BACKLOG = Gauge(
    "frauddemo_syncer_backlog_ops", "Op-log entries written at the source, not yet applied at the target.",
    LINK, multiprocess_mode="livemax")
SYNCER_STATE = Gauge(
    "frauddemo_syncer_up", "1 while the link is connected to both stores and replicating.",
    LINK, multiprocess_mode="livemax")


def observe_many(child, values) -> None:
    """Observe a batch into a histogram child: one increment per bucket, not one call per value."""
    try:
        bounds, buckets, total = child._upper_bounds, child._buckets, child._sum
    except AttributeError:  # a client version with other internals: the slow, public way
        for v in values:
            child.observe(v)
        return
    counts = [0] * len(bounds)
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)
    total.inc(sum(values))


def registry() -> CollectorRegistry | None:
    """The registry to expose: the multiprocess aggregate when running under the supervisor."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return reg
    return None


def render() -> tuple[bytes, str]:
    from prometheus_client import REGISTRY

    return generate_latest(registry() or REGISTRY), CONTENT_TYPE_LATEST
