"""Every Prometheus metric of the runtime, in one place (conventions in docs/metrics.md: `frauddemo_` prefix,
base units, `_total` on counters, bounded label values).

Locally, many processes share one `/metrics`: the supervisor sets PROMETHEUS_MULTIPROC_DIR and the
service aggregates with prometheus_client's multiprocess collector. In pods each process serves its own.
"""

from __future__ import annotations

import bisect
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LAG_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LINK = ("source", "target")

REPLICATION_LAG = Histogram(
    "frauddemo_replication_lag_seconds",
    "End-to-end replication lag: commit at the source store to applied at the target store.",
    LINK,
    buckets=LAG_BUCKETS,
)
SYNCER_APPLIED = Counter("frauddemo_syncer_applied_ops", "Op-log entries merged into the target.", LINK)
SYNCER_SKIPPED = Counter(
    "frauddemo_syncer_skipped_ops", "Malformed op-log entries skipped (logged with their id).", LINK
)
SYNCER_RESYNCS = Counter(
    "frauddemo_syncer_resyncs", "Full-state resyncs after the target fell behind the source's log.", LINK
)
SYNCER_BACKLOG = Gauge(
    "frauddemo_syncer_backlog_ops",
    "Op-log entries written at the source, not yet applied at the target.",
    LINK,
    multiprocess_mode="livemax",
)
CLOCK_SKEW = Gauge(
    "frauddemo_store_clock_skew_seconds",
    "The source store's server clock minus the target's, measured by the link's syncer (RTT-corrected). "
    "The detector never orders returns by these clocks; a skew says a server's time is wrong.",
    LINK,
    multiprocess_mode="livemax",
)
SYNCER_STATE = Gauge(
    "frauddemo_syncer_up",
    "1 while the link is connected to both stores and replicating.",
    LINK,
    multiprocess_mode="livemax",
)


# -- the demo: stores, returns, detection (counted by the detector from every store's event streams) --
DETECTION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
PHOTO_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)

TRANSACTIONS = Counter(
    "frauddemo_transactions", "Transactions committed at a store (type: purchase or return).", ("store", "type")
)
RETURN_ATTEMPTS = Counter(
    "frauddemo_return_attempts",
    "Return attempts committed at a store, by photo presence (present or "
    "absent) and the store's local decision (approved, held or refused).",
    ("store", "photo", "decision"),
)
FRAUD_ALERTS = Counter(
    "frauddemo_fraud_alerts",
    "Alerts raised by the detector, by the alerted attempt's store, the "
    "alert's main reason and its decision (review or block).",
    ("store", "reason", "decision"),
)
DETECTION_DECISIONS = Counter(
    "frauddemo_detection_decisions",
    "Return attempts decided by the detector (allow, review, block).",
    ("store", "decision"),
)
REFUND_VALUE = Counter(
    "frauddemo_refund_value_dollars",
    "Value of return attempts by what happened to the money: refunded, "
    "held (for review), blocked (by the detector) or refused (by the store).",
    ("store", "outcome"),
)
DETECTION_LATENCY = Histogram(
    "frauddemo_detection_latency_seconds",
    "Return committed at a store to the detector's decision stored (the alert, when there is one).",
    ("store",),
    buckets=DETECTION_BUCKETS,
)
PHOTO_VERIFICATION = Histogram(
    "frauddemo_photo_verification_seconds",
    "Time to verify one return photo against the purchase photo, by outcome (match, mismatch, review, rejected).",
    ("outcome",),
    buckets=PHOTO_BUCKETS,
)
DETECTOR_EVENTS = Counter(
    "frauddemo_detector_events", "Store events consumed by the detector (type: purchase or return).", ("store", "type")
)
DETECTOR_PENDING = Gauge(
    "frauddemo_detector_pending_events",
    "Events delivered to the detectors' consumer group and not yet acknowledged, per store.",
    ("store",),
    multiprocess_mode="livemax",
)
DETECTOR_UP = Gauge(
    "frauddemo_detector_up",
    "1 while the detector is connected to the store and consuming its events.",
    ("store",),
    multiprocess_mode="livemax",
)

# -- the stores themselves (read by the detection service from INFO every few seconds) --------------
STORE_UP = Gauge(
    "frauddemo_store_up", "1 while the store answers the detection service.", ("store",), multiprocess_mode="livemax"
)
STORE_USED_MEMORY = Gauge(
    "frauddemo_store_used_memory_bytes",
    "Memory the store's server has allocated (INFO used_memory).",
    ("store",),
    multiprocess_mode="livemax",
)
STORE_MAXMEMORY = Gauge(
    "frauddemo_store_maxmemory_bytes",
    "The store's maxmemory (0: no limit). With the noeviction policy "
    "the store refuses writes beyond it rather than evict replicated data.",
    ("store",),
    multiprocess_mode="livemax",
)
STORE_WRITABLE = Gauge(
    "frauddemo_store_writable",
    "1 while the store accepts writes; 0 while it refuses them (it cannot "
    "persist, e.g. disk full, or it reached maxmemory).",
    ("store",),
    multiprocess_mode="livemax",
)

# Known label values, so that every labelled series exists (at 0) from the start: a counter with
# no series until its first event reads "No data" on a healthy stack.
TX_TYPES = ("purchase", "return")
PHOTO_PRESENCE = ("present", "absent")
LOCAL_DECISIONS = ("approved", "held", "refused")
DECISIONS = ("allow", "review", "block")
ALERT_DECISIONS = ("review", "block")
OUTCOMES = ("refunded", "held", "blocked", "refused")
PHOTO_OUTCOMES = ("match", "mismatch", "review", "rejected")


def init_link(source: str, target: str) -> None:
    """Every series of one replication link, at 0."""
    for m in (SYNCER_APPLIED, SYNCER_SKIPPED, SYNCER_RESYNCS, REPLICATION_LAG):
        m.labels(source, target)


def init_detector(stores, reasons) -> None:
    """Every series the detector counts, at 0, for these stores and alert reasons (rule codes)."""
    for o in PHOTO_OUTCOMES:
        PHOTO_VERIFICATION.labels(o)
    for s in stores:
        DETECTION_LATENCY.labels(s)
        for t in TX_TYPES:
            TRANSACTIONS.labels(s, t)
            DETECTOR_EVENTS.labels(s, t)
        for p in PHOTO_PRESENCE:
            for d in LOCAL_DECISIONS:
                RETURN_ATTEMPTS.labels(s, p, d)
        for d in DECISIONS:
            DETECTION_DECISIONS.labels(s, d)
        for o in OUTCOMES:
            REFUND_VALUE.labels(s, o)
        for r in reasons:
            for d in ALERT_DECISIONS:
                FRAUD_ALERTS.labels(s, r, d)


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
