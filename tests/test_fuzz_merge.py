"""Fuzzing the merge (fd_merge, the server-side function every syncer calls) with hypothesis: op
batches well-formed and malformed (wrong types, missing fields, huge values, unknown ops, bad clocks,
bad sequence numbers, broken batch shapes). Every batch is either merged, its malformed entries
skipped and named in the reply, or refused whole with a clear error; never a server error half-way
through (Redis does not roll a script back), and never a state a later write or read trips on.
The well-behaved properties (convergence, idempotence) are in test_merge_properties.py."""

import msgpack
import pytest
import redis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from test_merge_properties import flush

from frauddemo.store import Store, counter_value, ops

SRC, EPOCH = "src", "e0"
names = st.sampled_from(["k1", "k2"])
text = st.one_of(st.text(max_size=4), st.binary(max_size=4))
digits = st.integers(0, 10**6).map(lambda n: str(n).encode())
# What a number-like field may hold in a hostile entry.
junk_number = st.sampled_from(
    [b"1.5", b"-3", b"0x10", b"nan", b"inf", b"1e400", b"", b" 7", b"99999999999999999999999", b"\xff"]
)

good_op = st.one_of(
    st.builds(lambda k, f, v: [b"h", b"h:" + k.encode(), [f, v]], names, st.sampled_from([b"f", b"g"]), text),
    st.builds(lambda k, f: [b"hd", b"h:" + k.encode(), [f]], names, st.sampled_from([b"f", b"g"])),
    st.builds(lambda k, e, t: [b"sa", b"s:" + k.encode(), e, t], names, text, st.sampled_from([b"t1", b"t2"])),
    st.builds(lambda k, t: [b"sr", b"s:" + k.encode(), [t]], names, st.sampled_from([b"t1", b"t2"])),
    st.builds(lambda k, p, n: [b"c", b"c:" + k.encode(), p, n], names, st.sampled_from([b"p:x", b"n:y"]), digits),
    st.builds(lambda k, v: [b"b", b"b:" + k.encode(), v], names, st.binary(min_size=1, max_size=8)),
    st.builds(lambda k, v, t: [b"b", b"b:" + k.encode(), v, t], names, st.binary(min_size=1, max_size=8), digits),
)
bad_op = st.one_of(
    st.builds(lambda k: [b"zz", b"h:" + k.encode(), [b"f", b"1"]], names),  # unknown op
    st.builds(lambda k: [b"h", b"c:" + k.encode(), [b"f", b"1"]], names),  # wrong key type
    st.builds(lambda k: [b"h", b"h:" + k.encode(), [b"f"]], names),  # odd field list
    st.builds(lambda k: [b"h", b"h:" + k.encode(), [b"~f", b"1"]], names),  # reserved field
    st.builds(
        lambda k, n: [b"h", b"h:" + k.encode(), [b"f", n]], names, st.integers(-(2**63), 2**64 - 1)
    ),  # wrong type
    st.builds(lambda k: [b"h", b"h:" + k.encode(), [b"f", b"v"] * 3000], names),  # huge list
    st.builds(lambda k: [b"hd", b"h:" + k.encode(), [b"f"] * 5000], names),
    st.builds(lambda k: [b"sr", b"s:" + k.encode(), [b"t"] * 9000], names),
    st.builds(lambda k: [b"sa", b"s:" + k.encode(), b"x"], names),  # missing tag
    st.builds(lambda k, n: [b"c", b"c:" + k.encode(), b"p:x", n], names, junk_number),  # bad counter part
    st.builds(lambda k, n: [b"b", b"b:" + k.encode(), b"v", n], names, junk_number),  # bad TTL
    st.builds(lambda k: [b"c", b"c:" + k.encode(), b"q:x", b"1"], names),
    st.just([]),
    st.just(None),
    st.integers(-(2**63), 2**63),
    st.just({b"h": b"h:k1"}),
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63), text), max_size=5),
)


def packed(operations) -> bytes:
    return msgpack.packb(operations, use_bin_type=False)


payload = st.one_of(
    st.lists(good_op, min_size=1, max_size=4).map(packed),
    st.lists(st.one_of(good_op, bad_op), min_size=1, max_size=4).map(packed),
    st.binary(max_size=24),  # not msgpack at all
    st.builds(packed, st.one_of(st.integers(-(2**63), 2**63), text, st.none())),  # msgpack, not a list
)
good_clock = st.integers(10**15, 10**16 - 1).map(lambda c: b"%016d" % c)
clock = st.one_of(
    good_clock,
    good_clock,
    junk_number,
    st.just(b"-000000000000001"),
    st.just(b"0x00000000000001"),
    st.just(b"      1234567890"),
    st.binary(max_size=20),
)


@st.composite
def batches(draw):
    """(args after source and epoch, whether the batch's shape is well-formed)."""
    n = draw(st.integers(1, 6))
    args = []
    for i in range(n):
        seq = draw(st.one_of(st.just(str(i + 1).encode()), st.just(str(i + 1).encode()), junk_number))
        args += [b"%d-0" % (1000 + i), draw(clock), seq, draw(payload)]
    shape = draw(st.sampled_from(["ok"] * 6 + ["short", "bad-id", "descending", "no-epoch"]))
    if shape == "short":
        args = args[: -draw(st.integers(1, 3))]
    elif shape == "bad-id":
        args[4 * draw(st.integers(0, n - 1))] = draw(st.sampled_from([b"abc", b"", b"1-", b"-1-0", b"1.5-0"]))
    elif shape == "descending":
        args[0] = b"99999-0"
        if n == 1:
            shape = "ok"
    return args, shape


@pytest.fixture
def pair(stores):
    return stores("t", "u")


def merge(store: Store, args: list):
    return store.r.fcall("fd_merge", 0, SRC, EPOCH, *args)


def state(store: Store) -> tuple:
    ckpt = store.checkpoint(SRC)
    return store.snapshot(), {k: v for k, v in ckpt.items() if k != "updated_ms"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_any_batch_is_merged_skipped_or_refused_whole(pair, batch):
    args, shape = batch
    (_, t), (_, u) = pair["t"], pair["u"]
    flush(t, "t")
    flush(u, "u")
    seed = [b"999-0", b"%016d" % 10**15, b"0", packed([[b"h", b"h:k1", [b"f", b"seed"]]])]
    merge(t, seed)  # some state and a checkpoint to leave untouched by a refused batch
    merge(u, seed)
    before = state(t)
    if shape == "no-epoch":
        with pytest.raises(redis.ResponseError, match="BADBATCH"):
            t.r.fcall("fd_merge", 0, SRC)
        assert state(t) == before
        return
    if shape != "ok":
        with pytest.raises(redis.ResponseError, match="BADBATCH"):
            merge(t, args)
        assert state(t) == before
        return

    applied, dups, _, gap, *bad = merge(t, args)
    assert dups == 0
    # Exactly the entries up to a gap that are not named bad were applied: a twin store that gets
    # the same batch with every bad entry's operations emptied ends in the same state.
    entries = [args[i : i + 4] for i in range(0, len(args), 4)]
    twin, seq = [], 0
    for e in entries:
        s = int(e[2]) if e[2].isdigit() and len(e[2]) <= 18 else None
        if s is not None and s > seq + 1:
            assert gap == 1
            break
        twin.append(e if e[0] not in bad else [e[0], b"%016d" % 10**15, e[2], packed([])])
        seq = max(seq, s or 0)
    assert applied == len([e for e in twin if e[0] not in bad])
    merge(u, [x for e in twin for x in e])
    note(f"twin={twin} bad={bad}")
    assert t.snapshot() == u.snapshot()
    assert {k: v for k, v in t.checkpoint(SRC).items() if k != "applied"} == {
        k: v for k, v in u.checkpoint(SRC).items() if k != "applied"
    }

    # Nothing merged trips a later local write or a read.
    for key, value in t.snapshot().items():
        if key.startswith("c:"):
            assert isinstance(counter_value(value), int)
            t.write([ops.incr(key, 1)])
        elif key.startswith("h:"):
            t.write([ops.hset(key, {"f": "local"})])
        elif key.startswith("s:"):
            t.write([ops.sadd(key, "local")])
    assert (
        merge(
            t, [b"999999-0", b"%016d" % (10**16 - 1), str(seq + 1).encode(), packed([[b"h", b"h:k2", [b"z", b"1"]]])]
        )[0]
        == 1
    )
