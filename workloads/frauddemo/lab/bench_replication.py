"""`frauddemo bench replication`: lag, throughput, drain and convergence of the active-active links,
with Redis' own REPLICAOF between two servers of the same build measured in the same run as the floor.

Lag is "commit at the source -> visible at the target" for both systems, measured the same way:
the source's own clock at commit (returned by the write) against the moment an observer process
receives the target's keyspace notification for that key. Both run on this machine's one clock.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import hiredis
import msgpack

from .. import crdt
from ..servers import Server, ServerSpec, allocator, find_server
from ..store import Store
from ..syncer import pack_command
from .stats import summary

FIELDS = [b"store", b"a", b"customer", b"cust-0042", b"item", b"shirt", b"amount_cents", b"2999"]
REPLICAOF_WRITE = """local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'store', 'a', 'customer', 'cust-0042', 'item', 'shirt', 'amount_cents', '2999')
return t"""


# -- the observer: a separate process timing keyspace notifications at the target ----------------
def _observe(port: int, password: str, prefix: bytes, out_path: str, ready, stop) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    reader = hiredis.Reader()
    sock.sendall(pack_command(b"AUTH", password.encode())[0])
    sock.sendall(pack_command(b"CONFIG", b"SET", b"notify-keyspace-events", b"Eh")[0])
    sock.sendall(pack_command(b"SUBSCRIBE", b"__keyevent@0__:hset")[0])
    pending = 3
    while pending:
        reader.feed(sock.recv(65536))
        while pending and reader.gets() is not False:
            pending -= 1
    seen: dict[int, int] = {}
    n = len(prefix)
    sock.settimeout(0.1)
    ready.set()
    while not stop.is_set():
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        t = time.time_ns() // 1000
        reader.feed(data)
        while (msg := reader.gets()) is not False:
            key = msg[2]
            if key[:n] == prefix:
                seen.setdefault(int(key[n:]), t)
    with open(out_path, "wb") as f:
        f.write(msgpack.packb(seen))


class Observer:
    def __init__(self, server: Server, prefix: bytes, workdir: Path):
        ctx = mp.get_context("spawn")
        self.out = workdir / f"seen-{server.spec.port}-{time.monotonic_ns()}.bin"
        self.ready, self.stop_ev = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=_observe, args=(server.spec.port, server.password, prefix, str(self.out), self.ready, self.stop_ev)
        )
        self.proc.start()
        if not self.ready.wait(20):
            self.proc.kill()
            raise RuntimeError("observer did not subscribe")

    def finish(self) -> dict[int, int]:
        self.stop_ev.set()
        self.proc.join(30)
        return msgpack.unpackb(self.out.read_bytes(), strict_map_key=False)


# -- paced writers -------------------------------------------------------------------------------
def _ours_cmd(i: int) -> bytes:
    payload = msgpack.packb([[b"h", b"h:bench:%d" % i, FIELDS]], use_bin_type=False)
    return pack_command(b"FCALL", b"fd_write", b"0", payload)[0]


def _ours_commit(reply) -> int:
    return int(reply[0])


def _replicaof_cmd(sha: bytes):
    def cmd(i: int) -> bytes:
        return pack_command(b"EVALSHA", sha, b"1", b"bench:%d" % i)[0]

    return cmd


def _replicaof_commit(reply) -> int:
    return int(reply[0]) * 1_000_000 + int(reply[1])


def paced_writes(
    client, make_cmd, parse_commit, start: int, rate: float, seconds: float, max_batch: int = 400
) -> tuple[dict[int, int], float]:
    """Offer `rate` writes/s for `seconds`, pipelined per millisecond tick; {i: commit_us}, achieved/s."""
    conn = client.connection_pool.get_connection()
    commits: dict[int, int] = {}
    i = start
    t0 = time.perf_counter()
    end = t0 + seconds
    try:
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            due = int((now - t0) * rate) - (i - start)
            if due <= 0:
                time.sleep(0.0005)
                continue
            due = min(due, max_batch)
            conn.send_packed_command([b"".join(make_cmd(k) for k in range(i, i + due))])
            for k in range(i, i + due):
                reply = conn.read_response()
                if isinstance(reply, Exception):
                    raise reply
                commits[k] = parse_commit(reply)
            i += due
        elapsed = time.perf_counter() - t0
    finally:
        client.connection_pool.release(conn)
    return commits, (i - start) / elapsed


def _lags(commits: dict[int, int], seen: dict[int, int], skip_first: int) -> tuple[list, int]:
    keys = sorted(commits)[skip_first:]
    missing = sum(1 for k in keys if k not in seen)
    return [seen[k] - commits[k] for k in keys if k in seen], missing


# -- processes -------------------------------------------------------------------------------------
def _syncer(src: Server, dst: Server) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "frauddemo",
            "--log-level",
            "WARNING",
            "syncer",
            "--source",
            src.url,
            "--target",
            dst.url,
            "--source-password-file",
            str(src.spec.password_file),
            "--target-password-file",
            str(dst.spec.password_file),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _caught_up(src: Store, dst: Store) -> bool:
    return int(dst.checkpoint(src.replica).get("seq", 0)) >= src.seq()


def _wait(pred, timeout: float, step: float = 0.002) -> float:
    deadline = time.perf_counter() + timeout
    while not pred():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(step)
    return time.perf_counter()


def _fill(store: Store, make_ops, n: int, batch: int = 1000) -> None:
    """Write n entries as fast as possible (each its own fd_write, pipelined)."""
    for i in range(0, n, batch):
        store.write_many([make_ops(j) for j in range(i, min(n, i + batch))])


# -- the benchmark -------------------------------------------------------------------------------
def run(
    rates=(5000, 20000),
    seconds: float = 5.0,
    warmup_s: float = 0.5,
    sustain_rates=(5000, 10000, 15000, 20000, 25000, 30000, 40000, 50000, 60000),
    sustain_s: float = 3.0,
    backlog: int = 300_000,
    conflict_ops: int = 100_000,
    log=lambda m: print(m, file=sys.stderr),
) -> dict:
    binary = find_server()
    lib = allocator(binary)
    result: dict = {
        "server": subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip(),
        "server_allocator": Path(lib).name if lib else "built in",
        "cores": os.cpu_count(),
        "lag_ms": {},
        "replicaof_lag_ms": {},
    }
    with tempfile.TemporaryDirectory(prefix="frauddemo-bench-") as tmp, ExitStack() as stack:
        tmp = Path(tmp)

        def pair(tag: str, retention: int = 2_000_000):
            servers = [Server(ServerSpec.create(n, tmp / tag, binary)) for n in ("a", "b")]
            for s in servers:
                stack.callback(s.kill)
            stores = [Store.connect(s.url, s.password, replica=s.spec.name, retention=retention) for s in servers]
            return servers, stores

        # 1. lag at offered rates, ours and REPLICAOF, measured identically
        (sa, sb), (a, b) = pair("lag")
        procs = [_syncer(sa, sb), _syncer(sb, sa)]
        for p in procs:
            stack.callback(_stop, p)
        _wait(lambda: b.checkpoint("a") is not None and b.link_status("a").get("state") == "up", 20)
        (ra, rb), _ = pair("replicaof")
        rb_client = rb.spec.client()
        rb_client.config_set("masterauth", ra.password)
        rb_client.replicaof("127.0.0.1", ra.spec.port)
        _wait(lambda: rb_client.info("replication")["master_link_status"] == "up", 20, 0.05)
        ra_client = ra.spec.client()
        sha = ra_client.script_load(REPLICAOF_WRITE).encode()
        start = 0
        for rate in rates:
            for name, server, client, make, parse, prefix, key in (
                ("lag_ms", sb, a.r, _ours_cmd, _ours_commit, b"h:bench:", "ours"),
                ("replicaof_lag_ms", rb, ra_client, _replicaof_cmd(sha), _replicaof_commit, b"bench:", "replicaof"),
            ):
                obs = Observer(server, prefix, tmp)
                commits, achieved = paced_writes(client, make, parse, start, rate, seconds)
                time.sleep(0.3)
                lags, missing = _lags(commits, obs.finish(), int(rate * warmup_s))
                result[name][str(rate)] = {
                    **summary(lags, scale=1e-3),
                    "offered_per_s": rate,
                    "achieved_per_s": round(achieved),
                    "not_seen": missing,
                }
                log(f"{key} at {rate}/s: {result[name][str(rate)]}")
                start += len(commits)

        # 2. the highest one-way rate with no growing backlog
        sustained, steps = 0, []
        for rate in sustain_rates:
            seq0 = a.seq()
            _, achieved = paced_writes(a.r, _ours_cmd, _ours_commit, start, rate, sustain_s)
            start += int(achieved * sustain_s) + 1
            backlog_end = a.seq() - int(b.checkpoint("a")["seq"])
            _wait(lambda: _caught_up(a, b), 60)
            ok = achieved >= 0.95 * rate and backlog_end <= 0.05 * rate
            steps.append(
                {
                    "offered_per_s": rate,
                    "achieved_per_s": round(achieved),
                    "backlog_at_end": backlog_end,
                    "written": a.seq() - seq0,
                    "ok": ok,
                }
            )
            log(f"sustain {steps[-1]}")
            if not ok:
                break
            sustained = round(achieved)
        result["sustained_writes_per_s"] = sustained
        result["sustain_steps"] = steps

        # 3. one syncer draining a backlog
        _stop(procs[0])
        seq0 = a.seq()
        applied0 = int(b.checkpoint("a").get("applied", 0))
        _fill(a, lambda j: [["h", f"h:drain:{j}", FIELDS]], backlog)
        procs[0] = _syncer(sa, sb)
        stack.callback(_stop, procs[0])
        t0 = _wait(lambda: int(b.checkpoint("a")["seq"]) > seq0, 30, 0.0005)
        first = int(b.checkpoint("a")["seq"]) - seq0
        t1 = _wait(lambda: _caught_up(a, b), 120, 0.001)
        result["drain_ops_per_s"] = round((backlog - first) / (t1 - t0))
        result["drain_backlog"] = backlog
        drain_dup = int(b.checkpoint("a")["applied"]) - applied0 - backlog
        log(f"drain {result['drain_ops_per_s']}/s")
        for p in procs:
            _stop(p)

        # 4. conflicting writes at both stores during a partition, then heal
        (ca_srv, cb_srv), (ca, cb) = pair("converge")
        keys = max(1, conflict_ops // 10)
        _fill(ca, lambda j: [["h", f"h:c:{j % keys}", [b"v", b"a%d" % j, b"by", b"a"]]], conflict_ops)
        _fill(cb, lambda j: [["h", f"h:c:{j % keys}", [b"v", b"b%d" % j, b"by", b"b"]]], conflict_ops)
        t_heal = time.perf_counter()
        heal = [_syncer(ca_srv, cb_srv), _syncer(cb_srv, ca_srv)]
        for p in heal:
            stack.callback(_stop, p)
        t_conv = _wait(lambda: _caught_up(ca, cb) and _caught_up(cb, ca), 120, 0.002)
        result["convergence_s"] = round(t_conv - t_heal, 3)
        result["conflict_ops"] = {"a": conflict_ops, "b": conflict_ops, "keys": keys}
        for p in heal:
            _stop(p)
        snap_a, snap_b = ca.snapshot(), cb.snapshot()
        result["identical_after_convergence"] = snap_a == snap_b
        expected = crdt.replay({"a": ca.r.xrange("fd:log"), "b": cb.r.xrange("fd:log")})
        result["lost"] = sum(1 for k, v in expected.items() if snap_a.get(k) != v) + sum(
            1 for k in snap_a if k not in expected
        )
        result["duplicated"] = max(0, drain_dup) + sum(
            max(0, int(dst.checkpoint(src.replica)["applied"]) - src.seq()) for src, dst in ((ca, cb), (cb, ca))
        )
        log(f"convergence {result['convergence_s']}s identical={result['identical_after_convergence']}")
        for s in (a, b, ca, cb):
            s.close()
        ra_client.close()
        rb_client.close()
    return result
