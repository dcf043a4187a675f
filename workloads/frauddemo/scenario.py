"""Scenario 1, end to end on live stores: a purchase at store A replicates to store B; the customer
returns it at A with a photo while a hacked POS at B returns the same receipt without one, inside
the replication window. Nothing here decides anything: the report is read back from what the
stores and the detector actually wrote, with the lags measured on the way.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import time

from .controls import partitioned_from
from .detector import alert_id
from .retail import TerminalKeys, alert_key, attempt_key, decode_hash, receipt_key, verdict_key
from .store import Store
from .till import HackedTill, Till, capture, customer_id


class ScenarioError(RuntimeError):
    """The scenario cannot run as asked."""


class ScenarioUnavailable(ScenarioError):
    """A part of the stack did not answer in time (replication or the detector): try again later."""


def _server_us(store: Store) -> int:
    s, us = store.r.time()
    return s * 1_000_000 + us


PARTITIONED = "the stores are partitioned: heal the link first (frauddemo link heal)"


def wait_visible(store: Store, key: str, since_us: int, timeout: float, what: str = "the record") -> float:
    """Poll `store` for `key`; milliseconds from `since_us` (a commit clock) to first seen there.
    `what` names the record for a person in the timeout's message (never the key)."""
    deadline = time.monotonic() + timeout
    while True:
        pipe = store.r.pipeline(transaction=False)
        pipe.exists(key)
        pipe.time()
        found, (s, us) = pipe.execute()
        if found:
            return max(0.0, (s * 1_000_000 + us - since_us) / 1000)
        if time.monotonic() > deadline:
            raise ScenarioUnavailable(
                f"{what} did not reach store {store.replica} within {timeout:g} s: "
                "check the link with `frauddemo status` (a partitioned link heals "
                "with `frauddemo link heal`)"
            )
        time.sleep(0.0002)


def run_fraud(
    stores: dict[str, Store],
    keys: TerminalKeys,
    a: str,
    b: str,
    timeout: float = 15.0,
    rng: random.Random | None = None,
) -> dict:
    rng = rng or random.Random()
    if a not in stores or b not in stores or a == b:
        raise ScenarioError("scenario fraud needs two different reachable stores")
    sa, sb = stores[a], stores[b]
    if partitioned_from(sa, b) or partitioned_from(sb, a):  # it would wait for replication that cannot come
        raise ScenarioError(PARTITIONED)
    customer = customer_id(rng.randrange(100_000))
    till = Till(sa, keys, f"{a}-pos-1")
    hacked = HackedTill(sb, keys, f"{b}-pos-9")
    purchase_photo, return_photo = capture(customer, rng), capture(customer, rng)
    p = till.purchase(customer, {"jacket": 1}, purchase_photo)
    purchase_lag = wait_visible(sb, receipt_key(p["receipt"]), p["committed_us"], timeout, "the purchase")
    legit = till.return_(p["receipt"], return_photo).attempt
    with concurrent.futures.ThreadPoolExecutor(1) as watch:  # measure the lag while B is attacked
        lag = watch.submit(wait_visible, sb, attempt_key(legit.id), legit.clock, timeout, "the honest return")
        fraud = hacked.refund(p["receipt"], customer, legit.amount, None, "window-race")
        return_lag = lag.result()

    deadline = time.monotonic() + timeout
    while True:
        raw = sb.r.hgetall(alert_key(alert_id(fraud.id)))
        if raw:
            break
        if time.monotonic() > deadline:
            raise ScenarioUnavailable(
                f"no alert for the hacked return {fraud.id} within {timeout:g} s: "
                "is the detector running (frauddemo status)?"
            )
        time.sleep(0.005)
    alert, alert_clock = decode_hash(raw)
    wait_visible(sa, verdict_key(legit.id), legit.clock, timeout, "the honest return's verdict")

    attempts = []
    for att, store in ((legit, sa), (fraud, sb)):
        v = store.hgetall(verdict_key(att.id))
        photo = json.loads(v["photo"]) if v.get("photo") else None
        attempts.append(
            {
                "attempt": att.id,
                "store": att.store,
                "terminal": att.terminal,
                "photo": bool(att.photo),
                "verification": (photo or {}).get("verdict") if att.photo else "no photo",
                "similarity": (photo or {}).get("similarity"),
                "local_decision": att.decision,
                "decision": v.get("decision"),
                "score": int(v.get("score", 0)),
                "committed_us": att.clock,
            }
        )
    return {
        "receipt": p["receipt"],
        "customer": customer,
        "amount_cents": legit.amount,
        "alert": {
            "id": alert["alert"],
            "score": int(alert["score"]),
            "decision": alert["decision"],
            "reasons": [r["text"] for r in json.loads(alert["reasons"])],
            "codes": [r["code"] for r in json.loads(alert["reasons"])],
            "store": alert["store"],
        },
        "attempts": attempts,
        "replication_lag_ms": round(return_lag, 3),
        "purchase_replication_lag_ms": round(purchase_lag, 3),
        "detection_latency_ms": round((alert_clock - fraud.clock) / 1000, 3),
    }


def render(report: dict) -> str:
    """The report for a person: the alert, then both attempts side by side."""
    al = report["alert"]
    lines = [
        f"Receipt {report['receipt']} ({report['customer']}, ${report['amount_cents'] / 100:.2f})",
        f"ALERT {al['id']}: {al['decision'].upper()} score {al['score']}/100 at store {al['store']}",
    ]
    lines += [f"  - {r}" for r in al["reasons"]]
    cols = report["attempts"]
    rows = [
        ("store", "store"),
        ("terminal", "terminal"),
        ("photo", "photo"),
        ("verification", "verification"),
        ("store decision", "local_decision"),
        ("detector", "decision"),
        ("score", "score"),
    ]
    lines.append("")
    lines.append(f"{'':16}" + "".join(f"{'attempt ' + str(i + 1):28}" for i in range(len(cols))))
    for label, key in rows:
        lines.append(f"{label:16}" + "".join(f"{_word(key, c[key]):28}" for c in cols))
    lines.append("")
    lines.append(
        f"replication lag {report['replication_lag_ms']:.2f} ms (return, A->B), "
        f"detection latency {report['detection_latency_ms']:.2f} ms"
    )
    return "\n".join(lines)


def _word(key: str, value) -> str:
    """A table cell in words: a photo is 'taken' or 'none', nothing is 'n/a', never True/False/None."""
    if key == "photo":
        return "taken" if value else "none"
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
