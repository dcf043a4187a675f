"""`frauddemo bench detection`: a labelled run through the whole pipeline, then a rules-only run.

The stack is the real one (`frauddemo up`'s supervisor: two stores, two syncer processes, the
detection service with its photo pool); this process plays the tills through the same library the
POS processes use. Labels travel in each store's `fd:ev:labels` stream, which only this benchmark
reads. Photos are rendered before the clock starts (the synthetic camera stands for a physical one);
each customer's purchase photo is enrolled once and reused for their purchases, every return photo
is a fresh capture.

Labelled run: purchases, then returns at a paced rate, >= 10% of them fraud spread over the eight
attack modes (a quarter of the hacked attempts from a rogue, unsigned terminal), legitimate
cross-store returns included, and a partition of the stores in the middle. Rules-only run: the same
pipeline with photos absent, as fast as the tills can write. Baseline (same run): the rate at which
the stores took the rules-only transactions from the tills, `baseline_store_tx_per_s` (the time to
write them, with the syncers and the detector running beside); the pipeline's figure is the time until
the last verdict is stored, so `rules_vs_baseline` is what waiting for every verdict costs.
"""
from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import random
import statistics
import time

from .detector import verify_photo
from .local import Supervisor
from .photos import verify as ver
from .photos.camera import SyntheticCamera
from .photos import replay
from .photos.decode import PhotoRejected
from .photos.storage import EMB_PREFIX, PHOTO_PREFIX
from .pos import MODES, HackedTill, Till, customer_id, face_of, wallet_key
from .retail import LABELS, LEGIT, TerminalKeys, purchase_ops, verdict_key
from .returns import ReturnRequest, process_returns
from .servers import free_port, read_secret
from .store import Store, ops
from .syncer import pause_key

CATALOGUE_BASKETS = ({"shirt": 1}, {"jeans": 1}, {"jacket": 1}, {"shoes": 1, "cap": 1}, {"scarf": 2},
                     {"watch": 1}, {"headphones": 1}, {"bag": 1}, {"sweater": 1})


def _render(args) -> bytes:
    customer, seed = args
    return SyntheticCamera(face_of(customer), seed=seed).capture()


def _enrol(customer: str) -> tuple[bytes, bytes]:
    """A customer's purchase photo and its embedding (computed in a pool worker); a capture without a
    usable face is taken again, as a till would."""
    for seed in range(10):
        jpeg = _render((customer, seed))
        try:
            return jpeg, ver.embed(jpeg).to_bytes()
        except PhotoRejected:
            continue
    raise RuntimeError(f"no usable capture of {customer}")


def _pct(values, q) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Bench:
    def __init__(self, purchases: int, returns: int, fraud_share: float, customers: int, return_rate: float,
                 seed: int = 7):
        self.n_purchases, self.n_returns = purchases, returns
        self.fraud_share, self.n_customers, self.return_rate = fraud_share, customers, return_rate
        self.rng = random.Random(seed)
        self.customers = [customer_id(i) for i in range(customers)]

    # -- the stack --------------------------------------------------------------------------------
    def start(self) -> None:
        self.sup = Supervisor(["a", "b"], port=free_port(), headless=True, rate=0, hacked_rate=0)
        self.sup.start()
        self.sup.wait_ready()
        self.stores = {n: Store.connect(spec.url, spec.password) for n, spec in self.sup.servers.items()}
        self.keys = TerminalKeys.from_secret(read_secret(self.sup.terminal_key_file))
        a, b = self.stores["a"], self.stores["b"]
        self.tills = {"a": Till(a, self.keys, "a-pos-1"), "b": Till(b, self.keys, "b-pos-1")}
        self.hacked = HackedTill(b, self.keys, "b-pos-9")
        self.rogue = HackedTill(b, self.keys, "b-rogue-1", rogue=True)

    def stop(self) -> None:
        for s in self.stores.values():
            s.close()
        self.sup.stop()
        self.sup.cleanup()

    def wait_replicated(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            a, b = self.stores["a"], self.stores["b"]
            if (int(b.checkpoint("a").get("seq", 0)) >= a.seq() and int(a.checkpoint("b").get("seq", 0)) >= b.seq()):
                return
            time.sleep(0.05)
        raise RuntimeError("the stores did not converge")

    def set_partition(self, on: bool) -> None:
        for t, s in self.stores.items():
            for src in self.stores:
                if src != t:
                    s.r.set(pause_key(src), "1") if on else s.r.delete(pause_key(src))
        want = "partitioned" if on else "up"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all((s.link_status(src).get("state") == want) for t, s in self.stores.items()
                   for src in self.stores if src != t):
                return
            time.sleep(0.02)
        raise RuntimeError(f"links did not become {want}")

    # -- workload ---------------------------------------------------------------------------------
    def write_purchases(self, n: int, photos: dict[str, str] | None) -> list[tuple[str, str, str]]:
        """n purchases spread over both stores, in pipelined batches; (receipt, store, customer)."""
        out, batches = [], {"a": [], "b": []}
        for _ in range(n):
            store = self.rng.choice("ab")
            c = self.rng.choice(self.customers)
            rid, w = purchase_ops(store, f"{store}-pos-1", c, self.rng.choice(CATALOGUE_BASKETS),
                                  photos[c] if photos else "")
            batches[store].append(w + [ops.sadd(wallet_key(c), rid)])
            out.append((rid, store, c))
            if len(batches[store]) == 500:
                self.stores[store].write_many(batches[store])
                batches[store] = []
        for store, batch in batches.items():
            if batch:
                self.stores[store].write_many(batch)
        return out

    def plan_returns(self, receipts: list[tuple[str, str, str]]) -> list[tuple]:
        """Actions in order: ("legit", store, rid, customer) and ("fraud", mode, rid, customer, rogue),
        with ("partition", on) markers; double returns refer back to an earlier legit return."""
        rng = self.rng
        pool = receipts[:]
        rng.shuffle(pool)
        n_fraud = max(len(MODES), round(self.n_returns * self.fraud_share))
        per_mode = -(-n_fraud // len(MODES))
        actions: list[tuple] = []
        legit_slots = self.n_returns - per_mode * len(MODES) - 4 * per_mode  # pairs bring their own legit half
        for _ in range(legit_slots):
            rid, store, c = pool.pop()
            where = store if rng.random() < 0.8 else ("b" if store == "a" else "a")  # 20% cross-store
            actions.append(("legit", where, rid, c))
        for mode in ("no-photo", "mismatched-photo", "replayed-photo", "unknown-receipt"):
            for _ in range(per_mode):
                rid, _, c = pool.pop()
                if mode == "unknown-receipt":
                    rid = "r-unknown-" + "%016x" % rng.getrandbits(64)
                actions.insert(rng.randrange(len(actions) + 1), ("fraud", mode, rid, c, rng.random() < 0.25))
        for mode, first in (("double-return-same-store", "b"), ("double-return-other-store", "a")):
            for _ in range(per_mode):
                rid, _, c = pool.pop()
                i = rng.randrange(len(actions) // 2)
                actions.insert(i, ("legit", first, rid, c))
                j = rng.randrange(i + 20, len(actions) + 1)
                actions.insert(j, ("fraud", mode, rid, c, rng.random() < 0.25))
        window = []
        for _ in range(per_mode):
            rid, _, c = pool.pop()
            window.append([("legit", "a", rid, c), ("fraud", "window-race", rid, c, rng.random() < 0.25)])
        for pair in window:
            i = rng.randrange(len(actions) + 1)
            actions[i:i] = pair
        block = [("partition", True)]
        for _ in range(per_mode):
            rid, _, c = pool.pop()
            block += [("legit", "a", rid, c), ("fraud", "partition", rid, c, rng.random() < 0.25)]
            rid, store, c = pool.pop()
            block.append(("legit", store, rid, c))
        block.append(("partition", False))
        mid = len(actions) // 2
        actions[mid:mid] = block
        return actions

    def photos_for(self, actions, receipts) -> dict[int, bytes | None]:
        """The return photo of every action, rendered before the clock starts (all cores)."""
        jobs = {}
        for i, act in enumerate(actions):
            if act[0] == "legit" or (act[0] == "fraud" and act[1] in (
                    "double-return-same-store", "double-return-other-store", "window-race", "partition")):
                jobs[i] = (act[3], self.rng.getrandbits(62))
            elif act[0] == "fraud" and act[1] == "mismatched-photo":
                other = self.rng.choice([c for c in self.customers if c != act[3]])
                jobs[i] = (other, self.rng.getrandbits(62))
            elif act[0] == "fraud" and act[1] == "unknown-receipt" and self.rng.random() < 0.5:
                jobs[i] = (self.rng.choice(self.customers), self.rng.getrandbits(62))
        with multiprocessing.get_context("spawn").Pool() as pool:
            rendered = pool.map(_render, list(jobs.values()), chunksize=16)
        return dict(zip(jobs, rendered))

    def run_actions(self, actions, photos: dict[int, bytes | None], enrolled: dict[str, bytes],
                    receipts_by_id: dict) -> int:
        gap = 1.0 / self.return_rate
        next_t = time.monotonic()
        attempts = 0
        for i, act in enumerate(actions):
            if act[0] == "partition":
                self.set_partition(act[1])
                next_t = time.monotonic()  # the wait for the links is not owed to the pacing as a burst
                continue
            if act[0] == "legit":
                _, store, rid, c = act
                self.tills[store].return_(rid, photos.get(i))
            else:
                _, mode, rid, c, rogue = act
                till = self.rogue if rogue else self.hacked
                _, _, amount = receipts_by_id.get(rid, (None, None, 4999))
                photo = enrolled[c] if mode == "replayed-photo" else photos.get(i)
                till.refund(rid, c, amount, photo, mode)
            attempts += 1
            paired = i + 1 < len(actions) and actions[i + 1][0] == "fraud" and actions[i + 1][1] in (
                "window-race", "partition") and act[0] == "legit"
            if not paired:  # the hacked half of a pair follows at once, inside the replication window
                next_t = max(next_t + gap, time.monotonic() - gap)  # a slow till is not caught up in bursts
                time.sleep(max(0.0, next_t - time.monotonic()))
        return attempts

    def wait_verdicts(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(s.r.xlen("fd:ev:verdicts") for s in self.stores.values()) >= n:
                return
            time.sleep(0.05)
        raise RuntimeError("the detector did not judge every attempt in time")

    def results(self) -> dict:
        """Per attempt: label, decision, latency (verdict clock - attempt clock)."""
        labels = {}
        for s in self.stores.values():
            for _, f in s.r.xrange(LABELS):
                labels[f[b"att"].decode()] = f[b"label"].decode()
        rows = []
        for name, s in self.stores.items():
            mine = list(labels)
            pipe = s.r.pipeline(transaction=False)
            for aid in mine:
                pipe.hgetall(verdict_key(aid))
                pipe.hget(f"h:ret:{aid}", "~receipt")
            res = pipe.execute()
            for k, aid in enumerate(mine):
                v, tag = res[2 * k], res[2 * k + 1]
                if not v or tag is None or tag.decode().split(":")[1] != name:
                    continue  # judged at the attempt's own store only
                first = min(int(x[:16]) for key, x in v.items() if key[:1] == b"~")
                rows.append({"att": aid, "label": labels[aid], "decision": v[b"decision"].decode(),
                             "reason": (v.get(b"reason") or b"").decode(),
                             "store": name, "latency_ms": (first - int(tag[:16])) / 1000})
        return {"rows": rows, "labels": len(labels)}


def accuracy(rows: list[dict]) -> dict:
    fraud = [r for r in rows if r["label"] != LEGIT]
    legit = [r for r in rows if r["label"] == LEGIT]
    caught = [r for r in fraud if r["decision"] in ("review", "block")]
    blocked = [r for r in rows if r["decision"] == "block"]
    per_mode = {}
    for m in MODES:
        rs = [r for r in fraud if r["label"] == m]
        per_mode[m] = {"recall": round(sum(r["decision"] != "allow" for r in rs) / len(rs), 4) if rs else None,
                       "count": len(rs)}
    lat = [r["latency_ms"] for r in rows]
    alert_lat = [r["latency_ms"] for r in rows if r["decision"] != "allow"]
    return {
        "recall": round(len(caught) / len(fraud), 4) if fraud else None,
        "block_precision": round(sum(r["label"] != LEGIT for r in blocked) / len(blocked), 4) if blocked else None,
        "review_rate_legit": round(sum(r["decision"] == "review" for r in legit) / len(legit), 4) if legit else None,
        "block_rate_legit": round(sum(r["decision"] == "block" for r in legit) / len(legit), 4) if legit else None,
        "per_mode": per_mode,
        # why legitimate customers were stopped, by the verdict's main reason (what to tune next)
        "legit_flagged_by": dict(collections.Counter(r["reason"] for r in legit if r["decision"] != "allow")),
        "detection_latency_ms": {"p50": round(_pct(lat, 0.5), 2), "p99": round(_pct(lat, 0.99), 2),
                                 "mean": round(statistics.fmean(lat), 2) if lat else None},
        "alert_latency_ms": {"p50": round(_pct(alert_lat, 0.5), 2), "p99": round(_pct(alert_lat, 0.99), 2)},
        "attempts": len(rows), "fraud_attempts": len(fraud), "legit_attempts": len(legit),
    }


def photo_capacity(samples: int = 60) -> dict:
    """Verifications per second of a pool sized to the cores, the way the detector runs them."""
    cams = [SyntheticCamera(face_of(customer_id(i)), seed=i) for i in range(samples)]
    purchases = [ver.embed(c.capture()).to_bytes() for c in cams[:10]]
    probes = [c.capture() for c in cams]
    cfg = ver.VerifyConfig()
    workers = multiprocessing.cpu_count()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(verify_photo, probes[:workers], purchases[:workers], [[]] * workers, [cfg] * workers))
        t0 = time.perf_counter()
        list(pool.map(verify_photo, probes, [purchases[i % 10] for i in range(samples)], [[]] * samples,
                      [cfg] * samples))
        dt = time.perf_counter() - t0
    return {"photo_verifications_per_s": round(samples / dt, 1), "workers": workers}


def run(purchases: int = 10_000, returns: int = 3_000, fraud_share: float = 0.12, customers: int = 1_500,
        return_rate: float = 25.0, rules_purchases: int = 20_000, rules_returns: int = 6_000) -> dict:
    t_start = time.monotonic()
    b = Bench(purchases, returns, fraud_share, customers, return_rate)
    b.start()
    try:
        # Before the clock: photos rendered, each customer's purchase photo enrolled once.
        with multiprocessing.get_context("spawn").Pool() as pool:
            enrol = dict(zip(b.customers, pool.map(_enrol, b.customers, chunksize=16)))
        enrol_imgs = {c: jpeg for c, (jpeg, _) in enrol.items()}
        enrolled = {c: replay.sha256(jpeg) for c, jpeg in enrol_imgs.items()}
        blobs = [[ops.blob(PHOTO_PREFIX + enrolled[c], jpeg), ops.blob(EMB_PREFIX + enrolled[c], emb)]
                 for c, (jpeg, emb) in enrol.items()]
        for i in range(0, len(blobs), 200):
            b.stores["a"].write_many(blobs[i:i + 200])
        b.wait_replicated()

        t0 = time.monotonic()
        receipts = b.write_purchases(purchases, enrolled)
        b.wait_replicated()
        purchase_s = time.monotonic() - t0
        by_id = {rid: (store, c, 4999) for rid, store, c in receipts}
        actions = b.plan_returns(receipts)
        photos = b.photos_for(actions, receipts)
        t_returns = time.monotonic()
        n = b.run_actions(actions, photos, enrol_imgs, by_id)
        b.wait_verdicts(n)
        t_end = time.monotonic()
        labelled = accuracy(b.results()["rows"])
        run_s = t_end - t_returns  # the return photos were rendered before t_returns

        # Rules-only run: the same pipeline, photos absent, as fast as the tills go.
        r0 = time.monotonic()
        verdicts_before = sum(s.r.xlen("fd:ev:verdicts") for s in b.stores.values())
        rules_receipts = b.write_purchases(rules_purchases, None)
        b.rng.shuffle(rules_receipts)
        reqs = {"a": [], "b": []}
        for rid, store, c in rules_receipts[:rules_returns]:
            reqs[store].append(ReturnRequest(rid, None, label=LEGIT))
        for store, rs in reqs.items():
            for i in range(0, len(rs), 200):
                process_returns(b.stores[store], b.tills[store].photos, b.keys, f"{store}-pos-1", rs[i:i + 200])
        r_written = time.monotonic()
        b.wait_verdicts(verdicts_before + rules_returns)
        r_end = time.monotonic()
        rules_tx = rules_purchases + rules_returns
    finally:
        b.stop()
    capacity = photo_capacity()
    return {
        **labelled,
        "throughput_tx_per_s": round((purchases + n) / (purchase_s + run_s), 1),
        "rules_throughput_tx_per_s": round(rules_tx / (r_end - r0), 1),
        "photo_verifications_per_s": capacity["photo_verifications_per_s"],
        "photo_workers": capacity["workers"],
        "baseline_store_tx_per_s": round(rules_tx / (r_written - r0), 1),
        "rules_vs_baseline": round((r_written - r0) / (r_end - r0), 3),
        "purchases": purchases, "returns": n, "return_rate_per_s": return_rate,
        "return_rate_actual_per_s": round(n / run_s, 1),
        "labelled_purchases_s": round(purchase_s, 1), "labelled_returns_s": round(run_s, 1), "rules_tx": rules_tx,
        "total_s": round(time.monotonic() - t_start, 1),
    }
