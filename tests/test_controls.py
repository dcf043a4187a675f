"""The demo's controls (frauddemo.controls) and the till's attack vocabulary: one module names the
control keys; the reset is one server-side function (fd_reset, Store.reset); the hacked POS's attack
mix is read in AttackMode terms, a deprecated alias with a warning."""

import logging
import random
import re
from pathlib import Path

import pytest

from frauddemo import controls
from frauddemo.attack_modes import AttackMode
from frauddemo.pos import parse_mix
from frauddemo.retail import PURCHASES, TerminalKeys
from frauddemo.till import Till, capture, wallet_key

RUNTIME = Path(controls.__file__).parent
KEYS = TerminalKeys(bytes(range(32)))


def test_only_the_controls_module_spells_the_control_keys():
    """acl.py's key patterns aside (an ACL names keys by pattern), no other module writes them out."""
    spelt = re.compile(r"""["']fd:(ctl|reset|pause:)""")
    found = [
        str(p.relative_to(RUNTIME))
        for p in RUNTIME.rglob("*.py")
        if p.name not in ("controls.py", "acl.py") and spelt.search(p.read_text())
    ]
    assert found == []


def test_the_attack_mix_is_read_in_attack_modes():
    mix = parse_mix(",".join(f"{m}=1" for m in AttackMode))
    assert list(mix) == list(AttackMode) and all(isinstance(m, AttackMode) for m in mix)
    with pytest.raises(ValueError) as e:
        parse_mix("teleport=1")
    assert all(m.value in str(e.value) for m in AttackMode)


def test_a_deprecated_alias_in_the_mix_is_accepted_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="frauddemo.pos"):
        mix = parse_mix("duplicate-receipt=2,no-photo=1")
    assert mix == {AttackMode.DOUBLE_RETURN_OTHER_STORE: 2.0, AttackMode.NO_PHOTO: 1.0}
    assert any(
        "duplicate-receipt" in r.getMessage() and "double-return-other-store" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="frauddemo.pos"):
        parse_mix("double-return-other-store=1")
    assert not caplog.records


def test_the_switches_round_trip(stores):
    ((_, a),) = stores("a").values()
    assert not controls.hacked_paused(a) and not controls.partitioned_from(a, "b")
    controls.set_hacked(a, False)
    controls.set_partition(a, "b", True)
    assert controls.hacked_paused(a) and controls.partitioned_from(a, "b")
    controls.set_hacked(a, True)
    controls.set_partition(a, "b", False)
    assert not controls.hacked_paused(a) and not controls.partitioned_from(a, "b")


def test_store_reset_wipes_the_data_in_one_call_and_reports_the_log_position(stores):
    ((_, a),) = stores("a").values()
    till = Till(a, KEYS, "a-pos-1")
    p = till.purchase("cust-00001", {"shirt": 1}, capture("cust-00001", random.Random(1)))
    a.r.xgroup_create(PURCHASES, "detectors", id="0", mkstream=True)
    controls.set_partition(a, "b", True)  # a control, not data: kept
    assert a.r.exists(f"h:rcpt:{p['receipt']}") and a.r.xlen(PURCHASES) == 1
    position = a.position()
    deleted, epoch, seq, sid = a.reset(controls.RESET_KEY, "tok-1")
    assert deleted >= 3 and (epoch, seq, sid) == position  # the reset itself is never logged
    assert not a.r.exists(f"h:rcpt:{p['receipt']}") and not a.r.exists(wallet_key("cust-00001"))
    assert a.r.xlen(PURCHASES) == 0 and a.r.xinfo_groups(PURCHASES)[0]["name"] == b"detectors"
    assert controls.reset_token(a) == "tok-1" and controls.partitioned_from(a, "b")
    assert a.position() == position


def test_the_detector_user_may_reset_a_store_a_hacked_till_wrote_to(stores):
    """The API runs the reset as the detector role: fd_reset must pass its ACL on every key it meets,
    the hacked till's ground-truth labels stream (fd:ev:labels) included."""
    from frauddemo.store import Store
    from frauddemo.till import HackedTill

    ((srv, a),) = stores("a").values()
    till = Till(a, KEYS, "a-pos-1")
    p = till.purchase("cust-00001", {"shirt": 1}, capture("cust-00001", random.Random(1)))
    HackedTill(a, KEYS, "a-pos-9").refund(p["receipt"], "cust-00001", 100, None, AttackMode.NO_PHOTO)
    assert a.r.xlen("fd:ev:labels") == 1
    url, password = srv.credentials("detector")
    detector = Store.connect(url, password=password)
    try:
        deleted, *_ = detector.reset(controls.RESET_KEY, "tok-2")
    finally:
        detector.close()
    assert deleted > 0 and a.r.xlen("fd:ev:labels") == 0 and controls.reset_token(a) == "tok-2"
