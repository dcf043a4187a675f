"""The FraudDemo CRD, loaded from crd.yaml (the single source of truth), and what the API server does
with its schema: structural defaulting, pruning of unknown fields and validation.

The operator applies the defaults itself before reading a spec (so a spec behaves the same whatever
server stored it); tests and the emulator validate custom resources with the same code.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import yaml

GROUP = "frauddemo.io"
VERSION = "v1alpha1"
PLURAL = "frauddemos"
KIND = "FraudDemo"
API_VERSION = f"{GROUP}/{VERSION}"


@functools.cache
def _crd_text() -> str:
    return resources.files(__package__).joinpath("crd.yaml").read_text()


def load() -> dict:
    """A fresh copy of the CRD manifest."""
    return yaml.safe_load(_crd_text())


@functools.cache
def _crd() -> dict:
    return load()


def version_entry(version: str = VERSION) -> dict:
    for v in _crd()["spec"]["versions"]:
        if v["name"] == version:
            return v
    raise KeyError(version)


def openapi_schema(version: str = VERSION) -> dict:
    """The openAPIV3Schema of a version (a copy)."""
    return copy.deepcopy(version_entry(version)["schema"]["openAPIV3Schema"])


# --- the API server's structural-schema behaviour --------------------------------------------------


def _is_preserving(schema: dict) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


def apply_defaults(schema: dict, obj: Any) -> Any:
    """Structural defaulting as the API server does it: a missing field with a default gets the default
    (itself defaulted further); returns a new object, the input is not changed."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        out = dict(obj)
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out and out[key] is not None:
                out[key] = apply_defaults(sub, out[key])
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for key in out:
                if key not in props:
                    out[key] = apply_defaults(addl, out[key])
        return out
    if isinstance(obj, list) and schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], x) for x in obj]
    return obj


def prune(schema: dict, obj: Any) -> Any:
    """Drop fields the schema does not know, as the API server does for structural schemas
    (metadata is left to the server's own handling)."""
    if isinstance(obj, dict) and schema.get("type") == "object" and not _is_preserving(schema):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        if props is None and addl is None:
            return obj
        out = {}
        for key, value in obj.items():
            if props is not None and key in props:
                sub = props[key]
                out[key] = value if key == "metadata" else prune(sub, value)
            elif isinstance(addl, dict):
                out[key] = prune(addl, value)
            elif addl is True:
                out[key] = value
        return out
    if isinstance(obj, list) and schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        return [prune(schema["items"], x) for x in obj]
    return obj


def to_jsonschema(schema: dict, strict: bool = True) -> dict:
    """An openAPIV3Schema as plain JSON Schema. With strict, unknown fields are errors (what
    `kubectl apply` does with its default strict field validation) instead of being pruned."""
    out: dict = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {k: to_jsonschema(v, strict) for k, v in value.items()}
        elif key == "items" and isinstance(value, dict):
            out[key] = to_jsonschema(value, strict)
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = to_jsonschema(value, strict)
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        strict
        and schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not _is_preserving(schema)
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _validator(version: str, strict: bool):
    import jsonschema  # only validation needs it; the operator itself only applies defaults

    schema = to_jsonschema(openapi_schema(version), strict)
    # metadata is validated by the API server's own rules, not by the CRD.
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


class SchemaError(ValueError):
    """A custom resource the CRD's schema rejects; `causes` name the fields, as the API server does."""

    def __init__(self, causes: list[dict]):
        self.causes = causes
        super().__init__("; ".join(f"{c['field']}: {c['message']}" for c in causes))


def _field_path(error) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path = f"{path}.{missing}" if path else missing
    if error.validator == "additionalProperties":
        extra = error.message.split("'")[1] if "'" in error.message else ""
        path = f"{path}.{extra}" if path else extra
    return path or "<root>"


def errors(obj: dict, version: str = VERSION, strict: bool = True) -> list[dict]:
    """Every schema violation of a custom resource, as API-server style causes
    ({"field": "spec.stores[0].replicas", "message": ..., "reason": ...})."""
    out = []
    for e in sorted(_validator(version, strict).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        reason = {
            "required": "FieldValueRequired",
            "enum": "FieldValueNotSupported",
            "additionalProperties": "FieldValueInvalid",
        }.get(str(e.validator), "FieldValueInvalid")
        out.append({"field": _field_path(e), "message": e.message, "reason": reason})
    return out


def validate(obj: dict, version: str = VERSION, strict: bool = True) -> None:
    """Raise SchemaError naming every field the schema rejects."""
    causes = errors(obj, version, strict)
    if causes:
        raise SchemaError(causes)


@functools.cache
def _spec_schema(version: str) -> dict:
    return openapi_schema(version)["properties"]["spec"]


def default_spec(spec: dict, version: str = VERSION) -> dict:
    """A spec with every schema default filled in (what the API server would have stored)."""
    return apply_defaults(_spec_schema(version), spec)
