"""The CRD (operator/frauddemo_operator/crd.yaml): structural, documented, and what it accepts."""

from __future__ import annotations

import copy
from importlib import resources

import pytest
import yaml

from frauddemo.attack_modes import DEPRECATED_CRD_KEYS, AttackMode
from frauddemo_operator import crd, models

SAMPLE = yaml.safe_load(resources.files("frauddemo_operator").joinpath("samples/frauddemo.yaml").read_text())


def walk(schema: dict, path: str = ""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def test_names_and_version():
    c = crd.load()
    assert c["metadata"]["name"] == "frauddemos.frauddemo.io"
    assert c["spec"]["group"] == "frauddemo.io"
    assert c["spec"]["names"]["kind"] == "FraudDemo"
    assert c["spec"]["names"]["shortNames"] == ["fd"]
    assert [v["name"] for v in c["spec"]["versions"]] == ["v1alpha1"]
    v = crd.version_entry()
    assert v["served"] and v["storage"]
    assert v["subresources"] == {"status": {}}


def test_structural_every_field_typed_and_described():
    """Structural schema: every node has a type; every field under spec and status explains itself
    (what `kubectl explain` shows)."""
    schema = crd.openapi_schema()
    undocumented, untyped = [], []
    for path, node in walk(schema):
        if "type" not in node and not node.get("x-kubernetes-int-or-string"):
            untyped.append(path)
        if path.startswith(("spec", "status")) and not path.endswith("{}") and "description" not in node:
            undocumented.append(path)
    assert not untyped, untyped
    assert not undocumented, undocumented


def test_defaults_are_valid_against_their_own_schema():
    for _path, node in walk(crd.openapi_schema()):
        if "default" in node:
            sub = crd.to_jsonschema(node)
            import jsonschema

            jsonschema.validate(crd.apply_defaults(node, node["default"]), sub)


def test_printer_columns_point_at_status_fields():
    cols = {c["name"]: c for c in crd.version_entry()["additionalPrinterColumns"]}
    assert list(cols) == ["Phase", "Stores", "Lag", "Frauds", "Age"]
    status = crd.openapi_schema()["properties"]["status"]
    for name in ("Phase", "Stores", "Lag", "Frauds"):
        node = status
        for part in cols[name]["jsonPath"].split(".")[2:]:
            node = node["properties"][part]
        assert node["type"] in (cols[name]["type"], "number" if cols[name]["type"] == "integer" else node["type"])
    assert cols["Age"]["jsonPath"] == ".metadata.creationTimestamp"


def test_sample_passes_the_schema_and_the_sense_checks():
    crd.validate(SAMPLE)
    spec = models.parse(SAMPLE["metadata"]["name"], SAMPLE["spec"])
    assert spec.store_names == ["a", "b"]
    assert spec.hacked_store == "b"


def test_minimal_spec_gets_every_default():
    full = crd.default_spec({"stores": [{"name": "a"}, {"name": "b"}]})
    assert full["image"] == "frauddemo:0.1.0"
    assert full["stores"][0]["replicas"] == 2
    assert full["stores"][0]["image"] == "valkey/valkey:8.1"
    assert full["stores"][0]["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert full["replication"] == {"batchMax": 512, "retention": 100000, "lagThresholdSeconds": 5}
    # every attack mode but doubleReturnOtherStore (0.1 when neither it nor duplicateReceipt, its deprecated
    # name, is given: a default would make the old name impossible to give alone)
    assert full["pos"]["hacked"]["attackMix"] == {
        "noPhoto": 0.6,
        "mismatchedPhoto": 0.3,
        "replayedPhoto": 0,
        "doubleReturnSameStore": 0,
        "unknownReceipt": 0,
        "windowRace": 0,
        "partition": 0,
    }
    assert full["monitoring"]["release"] == "prometheus"
    assert full["security"]["networkPolicies"] is True


def attack_mix_schema() -> dict:
    return crd.openapi_schema()["properties"]["spec"]["properties"]["pos"]["properties"]["hacked"]["properties"][
        "attackMix"
    ]


def test_the_attack_mix_has_every_attack_mode_under_its_crd_key_and_the_deprecated_alias():
    schema = attack_mix_schema()
    assert list(schema["properties"]) == [m.crd_key for m in AttackMode] + list(DEPRECATED_CRD_KEYS)
    for key, sub in schema["properties"].items():
        assert (sub["type"], sub["minimum"], sub["maximum"]) == ("number", 0, 1), key
    for key, mode in DEPRECATED_CRD_KEYS.items():
        assert "default" not in schema["properties"][key] and "default" not in schema["properties"][mode.crd_key]
        assert "Deprecated" in schema["properties"][key]["description"]
        # the CEL rule a real API server applies (the emulator does not evaluate CEL; models.check does the same)
        rules = [v["rule"] for v in schema["x-kubernetes-validations"]]
        assert f"!has(self.{key}) || !has(self.{mode.crd_key})" in rules
    defaults = {k: sub["default"] for k, sub in schema["properties"].items() if "default" in sub}
    assert defaults == {m.crd_key: models.DEFAULT_MIX.get(m, 0) for m in AttackMode if m not in models.UNDEFAULTED}
    assert models.AttackMix().weights() == {m: models.DEFAULT_MIX.get(m, 0.0) for m in AttackMode}


@pytest.mark.parametrize("key", [m.crd_key for m in AttackMode] + list(DEPRECATED_CRD_KEYS))
def test_every_attack_mix_key_passes_the_schema(key):
    obj = copy.deepcopy(SAMPLE)
    obj["spec"].setdefault("pos", {}).setdefault("hacked", {})["attackMix"] = {key: 0.5}
    crd.validate(obj)


def test_an_unknown_attack_mix_key_is_refused_by_the_schema_and_the_operator():
    obj = copy.deepcopy(SAMPLE)
    obj["spec"].setdefault("pos", {}).setdefault("hacked", {})["attackMix"] = {"noPhoto": 1, "doubleReceipt": 1}
    causes = crd.errors(obj)  # strict field validation (kubectl's default)
    assert [c["field"] for c in causes] == ["spec.pos.hacked.attackMix.doubleReceipt"]
    with pytest.raises(models.InvalidSpec) as e:  # a server that kept it: the operator refuses it
        models.parse("demo", obj["spec"])
    assert e.value.reason == "SchemaViolation" and "attackMix.doubleReceipt" in e.value.message


def test_pydantic_defaults_match_the_crd_defaults():
    """The models and the CRD agree: a spec read with the CRD's defaults equals one read with only
    the models' defaults."""
    minimal = {"stores": [{"name": "a"}, {"name": "b"}]}
    from_crd = models.Spec.model_validate(crd.default_spec(minimal))
    from_models = models.Spec.model_validate(minimal)
    assert from_crd == from_models


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("spec", "stores"), [{"name": "a"}], "spec.stores"),
        (("spec", "stores", 0, "name"), "Not_OK", "spec.stores[0].name"),
        (("spec", "stores", 0, "replicas"), 9, "spec.stores[0].replicas"),
        (("spec", "stores", 1, "storage"), {"storageClassName": "fast"}, "spec.stores[1].storage.size"),
        (("spec", "stores", 1, "storage"), {"size": "lots"}, "spec.stores[1].storage.size"),
        (("spec", "imagePullPolicy"), "Sometimes", "spec.imagePullPolicy"),
        (("spec", "replication", "batchMax"), 0, "spec.replication.batchMax"),
        (("spec", "pos", "rate"), -1, "spec.pos.rate"),
        (("spec", "pos", "hacked", "attackMix", "noPhoto"), 2, "spec.pos.hacked.attackMix.noPhoto"),
        (("spec", "detection", "alertScore"), "high", "spec.detection.alertScore"),
        (("spec", "monitoring", "interval"), "soon", "spec.monitoring.interval"),
        (("spec", "dashboard", "labels"), {"team": 7}, "spec.dashboard.labels.team"),
        (("spec", "security", "networkPolicy"), True, "spec.security.networkPolicy"),
    ],
)
def test_a_broken_field_fails_on_that_field(path, value, field):
    obj = copy.deepcopy(SAMPLE)
    node = obj
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(crd.SchemaError) as e:
        crd.validate(obj)
    assert [c["field"] for c in e.value.causes] == [field], e.value.causes


def test_missing_stores_is_required():
    obj = copy.deepcopy(SAMPLE)
    del obj["spec"]["stores"]
    causes = crd.errors(obj)
    assert [c["field"] for c in causes] == ["spec.stores"]
    assert causes[0]["reason"] == "FieldValueRequired"


def test_prune_drops_unknown_fields_like_the_api_server():
    schema = crd.openapi_schema()
    obj = copy.deepcopy(SAMPLE)
    obj["spec"]["surprise"] = 1
    obj["spec"]["stores"][0]["colour"] = "red"
    obj["metadata"]["labels"] = {"kept": "yes"}
    pruned = crd.prune(schema, obj)
    assert "surprise" not in pruned["spec"] and "colour" not in pruned["spec"]["stores"][0]
    assert pruned["metadata"]["labels"] == {"kept": "yes"}
    crd.validate(pruned)


def test_the_crd_file_is_package_data():
    """The chart and the docs load this very file."""
    text = resources.files("frauddemo_operator").joinpath("crd.yaml").read_text()
    assert yaml.safe_load(text) == crd.load()
