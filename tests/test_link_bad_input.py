"""What a link does with bad peers and bad log entries: a clear log line, retries, never a crash."""

import logging
import socket
import threading

import msgpack
import pytest

from conftest import wait_until
from frauddemo import cli
from frauddemo.servers import free_port
from frauddemo.store import ops
from frauddemo.syncer import LinkConfig, LinkStats, Syncer


def _run(cfg):
    stats = LinkStats()
    s = Syncer(cfg, stats)
    t = threading.Thread(target=s.run, daemon=True)
    t.start()
    return s, t, stats


def _stop(s, t):
    s.stop()
    t.join(10)
    assert not t.is_alive()


def test_wrong_password_is_logged_and_retried(store_servers, caplog):
    a, b = store_servers(2)
    caplog.set_level(logging.WARNING, "frauddemo.syncer")
    s, t, stats = _run(LinkConfig(a.url, b.url, a.password, "wrong", "a", "b", backoff_max_s=0.2))
    wait_until(lambda: caplog.text.count("authentication refused") >= 2, what="two auth failures")
    assert stats.state == "down" and t.is_alive()
    _stop(s, t)


def test_unreachable_peer_is_logged_and_retried(store_servers, caplog):
    (a,) = store_servers(1)
    caplog.set_level(logging.WARNING, "frauddemo.syncer")
    s, t, stats = _run(
        LinkConfig(a.url, f"redis://127.0.0.1:{free_port()}/0", a.password, None, "a", "b", backoff_max_s=0.2)
    )
    wait_until(lambda: caplog.text.count("peer unreachable") >= 2, what="two connection failures")
    assert t.is_alive()
    _stop(s, t)


def test_a_peer_that_is_not_redis(store_servers, caplog):
    (a,) = store_servers(1)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def http_like():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            c.close()

    th = threading.Thread(target=http_like, daemon=True)
    th.start()
    caplog.set_level(logging.WARNING, "frauddemo.syncer")
    s, t, stats = _run(
        LinkConfig(a.url, f"redis://127.0.0.1:{srv.getsockname()[1]}/0", a.password, None, "a", "b", backoff_max_s=0.2)
    )
    try:
        wait_until(lambda: caplog.text.count(" down: ") >= 2, what="two failures against a non-Redis peer")
        assert t.is_alive() and stats.applied == 0
    finally:
        _stop(s, t)
        stop.set()
        th.join(5)
        srv.close()


def test_malformed_log_entries_are_skipped_counted_and_logged(stores, links, caplog):
    named = stores("a", "b")
    (sa_srv, a), (sb_srv, b) = named["a"], named["b"]
    caplog.set_level(logging.ERROR, "frauddemo.syncer")
    a.write([ops.hset("h:before", {"v": "1"})])
    bad_ids = [
        a.r.xadd("fd:log", {"c": "1795000000000000", "s": "2", "o": b"\xc1 not msgpack"}).decode(),
        a.r.xadd("fd:log", {"junk": "only"}).decode(),
        a.r.xadd(
            "fd:log", {"c": "1795000000000000", "s": "3", "o": msgpack.packb([["h", "h:zz", ["~x", "1"]]])}
        ).decode(),  # reserved field
    ]
    a.write([ops.hset("h:after", {"v": "2"})])
    links.start(sa_srv, sb_srv)
    wait_until(lambda: b.hgetall("h:after"), what="the write after the bad entries")
    assert b.hgetall("h:before") == {"v": "1"} and not b.r.exists("h:zz")
    stats = links.stats[("a", "b")]
    assert stats.malformed == 3 and set(bad_ids) <= set(stats.malformed_ids)
    for i in bad_ids:
        assert f"skipped malformed op-log entry {i}" in caplog.text


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["syncer", "--source", "redis://:secret@127.0.0.1:1", "--target", "redis://127.0.0.1:2"], "not in the URL"),
        (["syncer", "--source", "http://127.0.0.1:1", "--target", "redis://127.0.0.1:2"], "not a redis://"),
        (["detector", "--store", "A=redis://127.0.0.1:1"], "store name"),
        (["detector", "--store", "a"], "NAME=URL"),
        (
            [
                "syncer",
                "--source",
                "redis://127.0.0.1:1",
                "--target",
                "redis://127.0.0.1:2",
                "--source-password-file",
                "/nonexistent/pw",
            ],
            "cannot read password file",
        ),
    ],
)
def test_cli_refuses_bad_configuration(argv, msg, capsys):
    assert cli.main(argv) == 2
    assert msg in capsys.readouterr().err
