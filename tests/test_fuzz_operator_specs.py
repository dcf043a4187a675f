"""Random FraudDemo specs into the operator's validation: specs generated from the CRD's own schema
(crd.yaml), then the same specs with wrong types and values. Each one ends as exactly one of: a
schema error naming the field (what the API server answers), an InvalidSpec with a reason and a
message (the Ready=False condition the operator writes), or a spec the builders turn into children.
Never another exception. (tests/test_operator_invalid.py has the cases one by one and the condition
end to end through the emulator.)"""

from __future__ import annotations

import itertools
import json
import re

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from frauddemo_operator import builders, crd, models
from frauddemo_operator.builders import Owner
from frauddemo_testkit.testing import FD_PATH, wait_for

pytest_plugins = ("frauddemo_testkit.pytest_plugin",)

SPEC_SCHEMA = crd.openapi_schema()["properties"]["spec"]
FD_NAMES = st.one_of(st.from_regex(r"[a-z]([a-z0-9-]{0,40}[a-z0-9])?", fullmatch=True), st.just("demo"))
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid(schema: dict) -> st.SearchStrategy:
    """Values the schema accepts (the keywords crd.yaml uses: type, enum, bounds, pattern, lengths,
    required, items, additionalProperties); optional fields are left out at random, so defaults apply."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        if not props and isinstance(schema.get("additionalProperties"), dict):
            return st.dictionaries(
                st.from_regex(r"[a-z][a-z0-9./-]{0,20}", fullmatch=True),
                valid(schema["additionalProperties"]),
                max_size=3,
            )
        return st.fixed_dictionaries(
            {k: valid(v) for k, v in props.items() if k in required},
            optional={k: valid(v) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(
            valid(schema["items"]), min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 5), 5)
        )
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(
            st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=schema.get("minLength", 0), max_size=30
        )
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    raise AssertionError(f"crd.yaml uses a schema this generator does not know: {schema}")


WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just("a" * 5000),
    st.just(-1),
    st.just(10**30),
    st.just(float("inf")),
)


def paths(obj, at=()):
    """Every place in a spec a value could be replaced (and the spec itself)."""
    yield at
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, at + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, at + (i,))


def replaced(obj, at, value):
    if not at:
        return value
    out = list(obj) if isinstance(obj, list) else dict(obj)
    out[at[0]] = replaced(obj[at[0]], at[1:], value)
    return out


@st.composite
def broken(draw):
    """A valid spec with 1-3 values swapped for anything, or a field added anywhere."""
    spec = draw(valid(SPEC_SCHEMA))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(list(paths(spec))))
        if draw(st.booleans()) or not at:
            spec = replaced(spec, at, draw(WRONG))
        else:
            parent = spec
            for p in at[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                spec = replaced(spec, at[:-1], {**parent, draw(st.text(min_size=1, max_size=8)): draw(WRONG)})
    return spec


def resource(name: str, spec, namespace: str = "ns") -> dict:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def outcome(name: str, spec):
    """What the cluster and the operator make of a spec: ('schema', causes) | ('invalid', e) | ('ok', kids)."""
    causes = crd.errors(resource(name, spec))
    if causes:
        assert all(c["field"] and c["message"] and c["reason"] for c in causes), causes
        with pytest.raises(crd.SchemaError):
            crd.validate(resource(name, spec))
        return "schema", causes
    try:
        parsed = models.parse(name, spec)
    except models.InvalidSpec as e:
        assert e.reason and re.fullmatch(r"[A-Z][A-Za-z]+", e.reason) and e.message
        return "invalid", e
    kids = builders.desired(Owner(name, "ns", "uid"), parsed, service_monitors=True)
    for kind, child in (builders.key(k) for k in kids):
        assert DNS_LABEL.match(child) and len(child) <= 63, (kind, child)
    return "ok", kids


@FUZZ
@given(name=FD_NAMES, spec=valid(SPEC_SCHEMA))
def test_schema_valid_specs_are_a_condition_or_children(name, spec):
    kind, _ = outcome(name, spec)
    assert kind in ("invalid", "ok")  # the generator only makes what the schema accepts


@FUZZ
@given(name=FD_NAMES, spec=broken())
def test_broken_specs_are_a_schema_error_or_a_condition_never_a_crash(name, spec):
    outcome(name, spec)


@FUZZ
@given(name=FD_NAMES, spec=st.one_of(broken(), WRONG))
def test_the_operator_alone_never_crashes_on_what_the_schema_would_refuse(name, spec):
    """The operator parses whatever the API server hands it (an older CRD may have stored it):
    a spec the schema refuses becomes an InvalidSpec too, not an unhandled exception."""
    try:
        parsed = models.parse(name, spec)
    except models.InvalidSpec as e:
        assert e.reason and e.message
    else:
        builders.desired(Owner(name, "ns", "uid"), parsed, service_monitors=True)


def test_the_generator_reaches_every_outcome():
    """The fuzzers above are only as good as their inputs: all three outcomes do occur."""
    seen = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(name=FD_NAMES, spec=st.one_of(valid(SPEC_SCHEMA), broken()))
    def collect(name, spec):
        seen.add(outcome(name, spec)[0])

    collect()
    assert seen == {"schema", "invalid", "ok"}


@pytest.mark.parametrize("spec", [[], ["a"], 7, "stores", True])
def test_a_spec_that_is_not_an_object_is_a_schema_violation(spec):
    """Found by the fuzzer: parse() crashed with ValueError/TypeError on dict(spec)."""
    with pytest.raises(models.InvalidSpec) as e:
        models.parse("demo", spec)
    assert e.value.reason == "SchemaViolation" and "must be an object" in e.value.message


E2E_NAMES = itertools.count()


@settings(
    max_examples=6,
    deadline=None,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=st.one_of(broken(), valid(SPEC_SCHEMA)))
def test_through_the_api_and_the_running_operator(kube_cluster, kube_ns, spec):
    """End to end on a few: the API emulator refuses what the schema refuses (422 naming the fields);
    anything else the running operator turns into a status: Invalid with the reason as the Ready
    condition, or a phase with children."""
    name = f"fz{next(E2E_NAMES)}"
    try:
        body = json.dumps(resource(name, spec, kube_ns), allow_nan=False)
    except ValueError:
        assume(False)  # inf and nan cannot be sent as JSON at all
    r = kube_cluster.http.post(FD_PATH.format(ns=kube_ns), content=body, headers={"Content-Type": "application/json"})
    # A plain POST is not strict: unknown fields are pruned (with a warning), the rest is validated.
    if crd.errors(resource(name, spec, kube_ns), strict=False):
        kind = "schema"
    else:
        kind, detail = outcome(name, crd.prune(SPEC_SCHEMA, spec))
    if kind == "schema":
        assert r.status_code == 422, r.text
        assert all(c["field"] and c["message"] for c in r.json()["details"]["causes"]), r.text
        return
    assert r.status_code == 201, r.text
    try:
        st_ = wait_for(lambda: kube_cluster.reconciled(kube_ns, name), 20, what=f"{name} reconciled")
        ready = kube_cluster.condition(kube_ns, name, "Ready")
        if kind == "invalid":
            assert st_["phase"] == "Invalid" and ready["status"] == "False" and ready["reason"] == detail.reason
        else:
            assert st_["phase"] in ("Provisioning", "Ready", "Degraded")
    finally:
        kube_cluster.delete_fd(kube_ns, name)
