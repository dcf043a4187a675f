"""Property tests of the merge: commutative, idempotent, convergent under any interleaving and
duplication of op batches, and equal to the independent Python replay (frauddemo.crdt)."""

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frauddemo import crdt
from frauddemo.store import Store, ops
from frauddemo.syncer import copy_blobs

KEYS = ["k1", "k2"]


def photo_key(value: bytes) -> str:
    return "b:photo:" + hashlib.sha256(value).hexdigest()


FIELDS = ["f", "g", "h"]

op_strategy = st.one_of(
    st.builds(
        lambda k, m: ops.hset(f"h:{k}", m),
        st.sampled_from(KEYS),
        st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=3), min_size=1, max_size=3),
    ),
    st.builds(
        lambda k, fs: ops.hdel(f"h:{k}", fs),
        st.sampled_from(KEYS),
        st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True),
    ),
    st.builds(lambda k, e: ops.sadd(f"s:{k}", e), st.sampled_from(KEYS), st.sampled_from("xyz")),
    st.builds(lambda k, e: ops.srem(f"s:{k}", e), st.sampled_from(KEYS), st.sampled_from("xyz")),
    st.builds(lambda k, d: ops.incr(f"c:{k}", d), st.sampled_from(KEYS), st.integers(-5, 5).filter(bool)),
    # Content-addressed photos (a key is the SHA-256 of its bytes): the same key at two replicas
    # holds the same bytes, which is what makes set-once blobs converge.
    st.builds(lambda v: ops.blob(photo_key(v), v), st.sampled_from([b"x", b"y", b"\xff\xd8"])),
)
writes_strategy = st.lists(st.lists(op_strategy, min_size=1, max_size=3), min_size=1, max_size=12)


def flush(store: Store, replica: str) -> None:
    store.r.flushall()
    Store.connect(_url(store), _pw(store), replica=replica).close()


def _url(store):
    kw = store.r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"


def _pw(store):
    return store.r.connection_pool.connection_kwargs["password"]


def deliver(target: Store, source: str, epoch: str, entries: list, origin: Store | None = None) -> list:
    """What a syncer does with one batch: copy the blobs it refers to from `origin` (they travel by
    reference), then merge it."""
    if origin is not None:
        copy_blobs(origin, target, entries)
    args = [source, epoch]
    for eid, f in entries:
        args += [eid, f[b"c"], f[b"s"], f[b"o"]]
    return target.r.fcall("fd_merge", 0, *args)


@pytest.fixture
def trio(stores):
    return stores("a", "b", "c")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wa=writes_strategy, wb=writes_strategy, seed=st.integers(0, 2**32 - 1))
def test_any_interleaving_and_duplication_converges_to_the_replay(trio, wa, wb, seed):
    (_, a), (_, b), (_, c) = trio["a"], trio["b"], trio["c"]
    for s, name in ((a, "a"), (b, "b"), (c, "c")):
        flush(s, name)
    a.epoch, b.epoch = (a.r.hget("fd:meta", "epoch").decode(), b.r.hget("fd:meta", "epoch").decode())
    for w in wa:  # concurrent writes: nothing replicated between a and b yet
        a.write(w)
    for w in wb:
        b.write(w)
    logs = {"a": a.r.xrange("fd:log"), "b": b.r.xrange("fd:log")}
    blobs = {k.decode(): a.r.get(k) or b.r.get(k) for s in (a, b) for k in s.r.scan_iter(match="b:*")}
    expected = crdt.replay(logs, blobs)
    assert b"\xff\xd8" not in b"".join(f[b"o"] for entries in logs.values() for _, f in entries), (
        "blob bytes must stay out of the op log"
    )

    rng = random.Random(seed)
    # Cut each log into batches, send them interleaved, and re-send random earlier batches.
    plan = []
    for name, entries in logs.items():
        cuts = (
            sorted(rng.sample(range(1, len(entries)), min(len(entries) - 1, rng.randint(0, 3))))
            if len(entries) > 1
            else []
        )
        bounds = [0, *cuts, len(entries)]
        batches = [entries[i:j] for i, j in zip(bounds, bounds[1:])]
        plan.append([(name, batch) for batch in batches])
    order = []
    queues = [list(p) for p in plan]
    while any(queues):
        q = rng.choice([q for q in queues if q])
        order.append(q.pop(0))
        if rng.random() < 0.3:
            order.append(rng.choice(order))  # duplicate delivery of an earlier batch
    epochs = {"a": a.epoch, "b": b.epoch}
    origins = {"a": a, "b": b}
    for name, batch in order:
        deliver(c, name, epochs[name], batch, origins[name])
    assert c.snapshot() == expected
    assert int(c.checkpoint("a")["applied"]) == len(logs["a"])  # duplicates never re-applied
    assert int(c.checkpoint("b")["applied"]) == len(logs["b"])

    # Both origins, after a full exchange, equal the replay and each other.
    deliver(a, "b", b.epoch, logs["b"], b)
    deliver(b, "a", a.epoch, logs["a"], a)
    assert a.snapshot() == b.snapshot() == expected


logged_op = st.sampled_from(
    [
        [b"h", b"h:k", [b"f", b"1"]],
        [b"h", b"h:k", [b"f", b"2", b"g", b"x"]],
        [b"hd", b"h:k", [b"f"]],
        [b"sa", b"s:k", b"x", b"t1"],
        [b"sa", b"s:k", b"x", b"t2"],
        [b"sr", b"s:k", [b"t1"]],
        [b"c", b"c:k", b"p:a", b"3"],
        [b"c", b"c:k", b"p:a", b"5"],
        [b"c", b"c:k", b"n:b", b"2"],
        [b"b", b"b:k", b"v"],
        [b"br", b"b:r", b"60000"],
        [b"br", b"b:gone"],
    ]
)
BLOBS = {"b:r": b"referenced"}  # b:gone: a reference to a blob its origin no longer holds


@st.composite
def tagged_ops(draw):
    """Distinct operations with distinct tags: a tag names exactly one write of one replica."""
    chosen = draw(st.lists(logged_op, max_size=10))
    clocks = draw(st.lists(st.integers(1, 5), min_size=len(chosen), max_size=len(chosen)))
    reps = draw(st.lists(st.sampled_from("ab"), min_size=len(chosen), max_size=len(chosen)))
    seen, out = set(), []
    for op, c, r in zip(chosen, clocks, reps):
        tag = b"%016d:%s" % (c, r.encode())
        if tag not in seen:
            seen.add(tag)
            out.append((op, tag))
    return out


def _state(seq):
    state = {}
    for op, tag in seq:
        crdt.apply_logged(state, op, tag, BLOBS)
    return state


@settings(max_examples=300, deadline=None)
@given(tagged_ops(), st.randoms())
def test_model_is_commutative_and_idempotent(seq, rnd):
    """The replay model itself: any order, any duplication, same state."""
    shuffled = list(seq)
    rnd.shuffle(shuffled)
    doubled = shuffled + [x for x in seq if rnd.random() < 0.5]
    assert _state(seq) == _state(shuffled) == _state(doubled)
