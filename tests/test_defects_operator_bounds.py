"""Issue 16, item 6: every bound the CRD allows is a value the code accepts.

`reviewScore: 0` passed the schema and crash-looped the detector (which wants 0 < review < alert). This
walks the CRD's spec schema (crd.yaml, the single source), collects every minimum, maximum, enum and
length bound, and feeds each boundary value through everything that consumes it: the operator's spec
parsing and sense checks, the builders, the status, and the runtime's own parsing of what the operator
passes on (the `frauddemo` command line each container runs, and the configuration its environment
sets). A bound the code rejects fails here, naming the field.
"""

from __future__ import annotations

import copy

import pytest

from frauddemo import cli as fd_cli
from frauddemo.config import ConfigError, check_name, check_url
from frauddemo.detection import DetectionConfig
from frauddemo.photos.verify import VerifyConfig
from frauddemo.pos import HackedConfig, parse_mix
from frauddemo.syncer import LinkConfig
from frauddemo_operator import builders, crd, models, status

OWNER = builders.Owner("demo", "ns", "uid-1")
BASE = {"stores": [{"name": "a"}, {"name": "b"}]}
ITEM = "[]"  # a path step into an array's items (the bound is tried on the first item)


def bounds(schema: dict, path: tuple = ()) -> list[tuple[tuple, str, object]]:
    """(path, keyword, value) of every bound in a schema, depth first."""
    out = []
    for kw in ("minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength"):
        if kw in schema:
            out.append((path, kw, schema[kw]))
    for value in schema.get("enum") or []:
        out.append((path, "enum", value))
    for key, sub in (schema.get("properties") or {}).items():
        out += bounds(sub, path + (key,))
    if isinstance(schema.get("items"), dict):
        out += bounds(schema["items"], path + (ITEM,))
    return out


SPEC_BOUNDS = bounds(crd.openapi_schema()["properties"]["spec"])


def _set(spec: dict, path: tuple, value) -> None:
    node = spec
    for step, nxt in zip(path, path[1:]):
        if step == ITEM:
            node = node[0]
        else:
            node = node.setdefault(step, [] if nxt == ITEM else {})
    node[path[-1]] = value


def _sample(kw: str, value):
    """A value of the bound's type at the bound (a length bound: a list or string of that length)."""
    if kw in ("minItems", "maxItems"):
        return [{"name": chr(ord("a") + i)} for i in range(value)]
    if kw in ("minLength", "maxLength"):
        return "x" * value
    return value


# What the schema cannot say, but the operator's sense checks do (models.check): the other value of a
# pair is chosen so that the spec can be valid, if any value of it can.
def _companions(spec: dict, path: tuple, value) -> None:
    det = spec.get("detection") or {}
    if path == ("detection", "reviewScore"):
        det["alertScore"] = max(value + 1, 70)
    elif path == ("detection", "alertScore"):
        det["reviewScore"] = min(40, value - 1)


def spec_at(path: tuple, kw: str, value) -> dict:
    spec = copy.deepcopy(BASE)
    _set(spec, path, _sample(kw, value))
    _companions(spec, path, value)
    return spec


def _runtime_parses(container: dict, spec: models.Spec) -> None:
    """What the runtime does with the command line and environment the operator gives a container,
    short of connecting anywhere (mirrors frauddemo.cli's cmd_* and the detector's create_app)."""
    if container["image"] != spec.image or "args" not in container or container.get("command"):
        return  # a store server or the store agent (no spec values reach its command line)
    try:
        a = fd_cli.build_parser().parse_args(container["args"])
    except SystemExit:
        raise AssertionError(f"the command line is refused: {container['args']}") from None
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    cmd = container["args"][0]
    if cmd == "syncer":
        LinkConfig(
            check_url(a.source),
            check_url(a.target),
            source_name=check_name(a.source_name),
            target_name=check_name(a.target_name),
            retention=a.retention,
            batch_max=a.batch_max,
        )
        assert a.batch_max >= 1 and (a.retention is None or a.retention >= 1)
    elif cmd == "detector":
        DetectionConfig.from_env(env)
        VerifyConfig.from_env(env)
    elif cmd in ("pos", "hacked-pos"):
        check_name(a.store), check_url(a.url)
        assert a.rate >= 0
        if cmd == "hacked-pos":
            HackedConfig(a.rate, parse_mix(a.attack_mix))
    else:
        raise AssertionError(f"no check for the {cmd!r} command: add one")


def consume(spec_dict: dict) -> None:
    """Everything that reads a FraudDemo's spec, from the API server's validation to the pods."""
    crd.validate({"apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": "demo"}, "spec": spec_dict})
    spec = models.parse("demo", spec_dict)
    kids = builders.desired(OWNER, spec, service_monitors=True)
    status.compute(
        "demo", spec, status.Observation(1, detector=status.DetectorStats(1.0, 2, 2, 0)), None, "2026-01-01T00:00:00Z"
    )
    for kid in kids:
        if kid["kind"] in ("Deployment", "StatefulSet"):
            pod = kid["spec"]["template"]["spec"]
            for c in pod["containers"] + pod.get("initContainers", []):
                _runtime_parses(c, spec)


def test_the_walk_finds_the_bounds():
    found = {(p, kw) for p, kw, _ in SPEC_BOUNDS}
    assert (("detection", "reviewScore"), "minimum") in found
    assert (("stores", ITEM, "replicas"), "maximum") in found and (("stores",), "maxItems") in found
    assert (("imagePullPolicy",), "enum") in found
    assert len(SPEC_BOUNDS) >= 30


@pytest.mark.parametrize(
    "path, kw, value", SPEC_BOUNDS, ids=[".".join(p).replace(".[]", "[0]") + f"-{kw}-{v}" for p, kw, v in SPEC_BOUNDS]
)
def test_every_crd_bound_is_accepted_by_the_code(path, kw, value):
    try:
        consume(spec_at(path, kw, value))
    except (models.InvalidSpec, crd.SchemaError, ValueError, ConfigError, AssertionError) as e:
        pytest.fail(f"spec.{'.'.join(path)} = {value!r} is allowed by the CRD ({kw}) but refused: {e}")


def test_the_walk_can_fail():
    """reviewScore 0 (what the CRD allowed) is refused by the detector's configuration."""
    with pytest.raises(ValueError):
        DetectionConfig.from_env({"FRAUDDEMO_DETECTION_REVIEW_SCORE": "0"})
