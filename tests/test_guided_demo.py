"""The dashboard's guided demo (issue 19 items 2 and 8), without a browser: the link status that tells
a partition's story (since when, the backlog it builds, what the heal merged) and the page's labels
for every reason code the detector can emit. The browser half is in test_web_browser.py."""

from __future__ import annotations

import pathlib
import re
import time

from conftest import wait_until
from frauddemo import detection
from frauddemo.config import StoreRef
from frauddemo.store import ops
from frauddemo.storeset import StoreSet
from frauddemo.syncer import pause_key

APP_JS = pathlib.Path(__file__).resolve().parent.parent / "workloads" / "frauddemo" / "static" / "app.js"


def test_every_reason_code_the_detector_emits_has_a_label_in_the_page():
    codes = {v for k, v in vars(detection).items() if k.isupper() and isinstance(v, str) and v in detection.WEIGHTS}
    assert codes == set(detection.WEIGHTS), "every weighted rule has a code constant"
    block = re.search(r"const REASONS = \{(.*?)\};", APP_JS.read_text(), re.S).group(1)
    labelled = dict(re.findall(r"(\w+): '([^']+)'", block))
    assert codes <= set(labelled), f"no label for {sorted(codes - set(labelled))}"
    assert all(labelled[c] and labelled[c] != c for c in codes)


def _link(status: dict, source: str, target: str) -> dict:
    return next(lk for lk in status["links"] if lk["source"] == source and lk["target"] == target)


def test_a_partition_reports_since_when_its_backlog_and_what_the_heal_merged(stores, links):
    named = stores("a", "b")
    (sa, a), (sb, b) = named["a"], named["b"]
    links.mesh([sa, sb])
    view = StoreSet([StoreRef(n, *srv.credentials("detector")) for n, (srv, _) in named.items()])
    try:
        wait_until(lambda: _link(view.status(), "a", "b")["state"] == "up", 15, what="the a -> b link up")
        up = _link(view.status(), "a", "b")
        assert up["partitioned_for_ms"] is None and up["healed_ms_ago"] is None

        b.r.set(pause_key("a"), "1")  # b stops hearing from a
        wait_until(lambda: _link(view.status(), "a", "b")["state"] == "partitioned", 10, what="the partition")
        for i in range(12):
            a.write([ops.hset(f"h:guided:{i}", {"v": str(i)})])
        wait_until(lambda: _link(view.status(), "a", "b")["backlog"] == 12, 10, what="the backlog to climb to 12")
        time.sleep(1.0)
        held = _link(view.status(), "a", "b")
        assert held["state"] == "partitioned" and held["partitioned_for_ms"] >= 1000, held
        assert not b.r.exists("h:guided:0")
        assert _link(view.status(), "b", "a")["partitioned_for_ms"] is None  # the other direction is up

        b.r.delete(pause_key("a"))
        wait_until(lambda: b.r.exists("h:guided:11"), 10, what="the merge after the heal")
        wait_until(lambda: _link(view.status(), "a", "b")["backlog"] == 0, 10, what="the backlog merged")
        healed = _link(view.status(), "a", "b")
        assert healed["state"] == "up" and healed["partitioned_for_ms"] is None
        assert healed["healed_backlog"] == 12, healed
        assert healed["last_partition_ms"] >= held["partitioned_for_ms"]
        assert 0 <= healed["healed_ms_ago"] < 10_000
    finally:
        view.close()
