"""The attack mix through the API (emulator) and the operator: all eight AttackMode keys reach the hacked
POS under their own names; the deprecated duplicateReceipt is read as doubleReturnOtherStore with a
DeprecatedField condition (and a Warning event) that goes once the spec stops using it; an unknown key
never reaches a pod."""

from __future__ import annotations

from frauddemo.attack_modes import DEPRECATED_CRD_KEYS, AttackMode
from frauddemo_operator import models, status
from frauddemo_testkit.testing import TWO_STORES, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)


def hacked_mix(kube_cluster, kube_ns: str, name: str = "demo") -> dict[str, float] | None:
    dep = kube_cluster.emu.get("deployments", kube_ns, f"{name}-hacked-pos")
    if dep is None:
        return None
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return {k: float(v) for k, v in (p.split("=") for p in args[args.index("--attack-mix") + 1].split(","))}


def test_all_eight_attack_modes_are_accepted_and_passed_through(kube_cluster, kube_ns):
    weights = {m.crd_key: round(0.1 * (i + 1), 1) for i, m in enumerate(AttackMode)}
    fd = kube_cluster.apply_fd(kube_ns, "demo", {**TWO_STORES, "pos": {"hacked": {"attackMix": weights}}})
    assert fd["spec"]["pos"]["hacked"]["attackMix"] == weights  # stored as given: nothing pruned
    st = kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    assert hacked_mix(kube_cluster, kube_ns) == {m.value: weights[m.crd_key] for m in AttackMode}
    assert status.DEPRECATED not in {c["type"] for c in st["conditions"]}
    # one mode changed: the hacked POS follows
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"pos": {"hacked": {"attackMix": {"windowRace": 0}}}}})
    wait_for(
        lambda: (hacked_mix(kube_cluster, kube_ns) or {}).get(AttackMode.WINDOW_RACE) == 0,
        what="the new weight in the hacked POS's arguments",
    )


def test_duplicate_receipt_is_read_as_double_return_other_store_with_a_warning_condition(kube_cluster, kube_ns):
    ((old, mode),) = DEPRECATED_CRD_KEYS.items()
    kube_cluster.apply_fd(kube_ns, "demo", {**TWO_STORES, "pos": {"hacked": {"attackMix": {old: 0.4}}}})
    st = kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    mix = hacked_mix(kube_cluster, kube_ns)
    assert mix[mode] == 0.4 and "duplicate-receipt" not in mix
    dep = kube_cluster.condition(kube_ns, "demo", status.DEPRECATED)
    assert dep["status"] == "True" and dep["reason"] == "DeprecatedFieldUsed"
    assert f"attackMix.{old} is deprecated" in dep["message"] and mode.crd_key in dep["message"]
    assert dep["observedGeneration"] == st["observedGeneration"]
    wait_for(
        lambda: [
            e
            for e in kube_cluster.events(kube_ns)
            if e.get("reason") == "DeprecatedField" and e.get("type") == "Warning"
        ],
        what="a Warning event",
    )
    # renamed: the weight stays, the condition goes
    kube_cluster.patch_fd(kube_ns, "demo", {"spec": {"pos": {"hacked": {"attackMix": {old: None, mode.crd_key: 0.4}}}}})
    wait_for(
        lambda: (
            (st := kube_cluster.reconciled(kube_ns, "demo"))
            and st["phase"] == "Ready"
            and status.DEPRECATED not in {c["type"] for c in st["conditions"]}
        ),
        what="the condition cleared",
    )
    assert hacked_mix(kube_cluster, kube_ns)[mode] == 0.4


def test_both_names_of_one_mode_are_refused_with_a_condition(kube_cluster, kube_ns):
    """The CRD's CEL rule refuses it on a real API server; the emulator does not run CEL, the operator does
    the same check."""
    ((old, mode),) = DEPRECATED_CRD_KEYS.items()
    kube_cluster.apply_fd(
        kube_ns, "demo", {**TWO_STORES, "pos": {"hacked": {"attackMix": {old: 0.2, mode.crd_key: 0.3}}}}
    )
    st = kube_cluster.wait_phase(kube_ns, "demo", "Invalid")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ConflictingAttackMix" and mode.crd_key in ready["message"]
    assert kube_cluster.condition(kube_ns, "demo", status.DEPRECATED)["status"] == "True"
    assert not any(kube_cluster.children(kube_ns).values())


def test_an_unknown_attack_mix_key_never_reaches_the_hacked_pos(kube_cluster, kube_ns):
    """The API server prunes an unknown key (kubectl's strict validation refuses it: test_operator_crd);
    the operator refuses one it is given anyway (models.parse)."""
    fd = kube_cluster.apply_fd(
        kube_ns, "demo", {**TWO_STORES, "pos": {"hacked": {"attackMix": {"noPhoto": 1, "doubleReceipt": 1}}}}
    )
    assert "doubleReceipt" not in fd["spec"]["pos"]["hacked"]["attackMix"]
    kube_cluster.wait_phase(kube_ns, "demo", "Ready")
    assert set(hacked_mix(kube_cluster, kube_ns)) == {m.value for m in AttackMode}
    try:
        models.parse("demo", {**TWO_STORES, "pos": {"hacked": {"attackMix": {"doubleReceipt": 1}}}})
    except models.InvalidSpec as e:
        assert e.reason == "SchemaViolation" and "doubleReceipt" in e.message
    else:
        raise AssertionError("an unknown attackMix key was accepted")
