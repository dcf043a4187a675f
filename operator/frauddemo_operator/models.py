"""Frozen pydantic models of a FraudDemo's spec, and the checks the schema cannot express.

`parse(name, spec)` is the one entry point: it fills the CRD's defaults, builds the models and checks
the spec makes sense. Anything wrong raises InvalidSpec with a CamelCase reason and a message, which
the handlers turn into a False condition and an Event (never a retry loop).
"""
from __future__ import annotations

import re
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from . import crd

MAX_NAME_LEN = 30  # children are named <fd>-sync-<a>-<b>; Service names must stay <= 63 characters.
# A FraudDemo's name starts its children's names, Services among them: a DNS-1035 label (a lower-case
# letter first, no dots), which the API server does not ask of a custom resource's name.
NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class InvalidSpec(ValueError):
    """A spec that passes the schema (or would) but cannot be deployed."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Quantities(_Model):
    cpu: str
    memory: str


class Resources(_Model):
    requests: Quantities = Quantities(cpu="50m", memory="64Mi")
    limits: Quantities = Quantities(cpu="500m", memory="3Gi")  # maxmemory 2.25 GiB: a day of the default rate


class Storage(_Model):
    size: str
    storage_class_name: str | None = None


class Store(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$")
    replicas: int = Field(2, ge=1, le=5)
    image: str = "valkey/valkey:8.1"
    storage: Storage | None = None
    resources: Resources = Resources()


class Replication(_Model):
    batch_max: int = Field(512, ge=1, le=10000)
    retention: int = Field(100000, ge=1000, le=10_000_000)
    lag_threshold_seconds: float = Field(5.0, ge=0.1, le=3600)


class AttackMix(_Model):
    no_photo: float = Field(0.6, ge=0, le=1)
    mismatched_photo: float = Field(0.3, ge=0, le=1)
    duplicate_receipt: float = Field(0.1, ge=0, le=1)

    def as_flag(self) -> str:
        return (f"no-photo={self.no_photo:g},mismatched-photo={self.mismatched_photo:g},"
                f"duplicate-receipt={self.duplicate_receipt:g}")


class Hacked(_Model):
    enabled: bool = True
    store: str = ""
    rate: float = Field(0.2, ge=0, le=100)
    attack_mix: AttackMix = AttackMix()


class Pos(_Model):
    enabled: bool = True
    rate: float = Field(2.0, ge=0, le=1000)
    hacked: Hacked = Hacked()


class Detection(_Model):
    replicas: int = Field(1, ge=1, le=3)
    window_seconds: int = Field(300, ge=1, le=86400)
    alert_score: int = Field(70, ge=2, le=100)    # the detector wants 0 < review < alert <= 100
    review_score: int = Field(40, ge=1, le=99)
    photo_match_threshold: float = Field(0.951, ge=0, le=1)


class Dashboard(_Model):
    enabled: bool = True
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Monitoring(_Model):
    service_monitor: bool = True
    release: str = "prometheus"
    interval: str = "15s"


class Security(_Model):
    network_policies: bool = True


class Spec(_Model):
    image: str = "frauddemo:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    stores: tuple[Store, ...] = Field(min_length=2, max_length=8)
    replication: Replication = Replication()
    pos: Pos = Pos()
    detection: Detection = Detection()
    dashboard: Dashboard = Dashboard()
    monitoring: Monitoring = Monitoring()
    security: Security = Security()

    @property
    def store_names(self) -> list[str]:
        return [s.name for s in self.stores]

    @property
    def hacked_store(self) -> str | None:
        """The store the hacked POS sits in (empty means the second store), or None when disabled."""
        if not self.pos.hacked.enabled:
            return None
        return self.pos.hacked.store or self.stores[1].name

    @property
    def links(self) -> list[tuple[str, str]]:
        """Every directed link of the full mesh, in a stable order."""
        names = self.store_names
        return [(a, b) for a in names for b in names if a != b]


def check(name: str, spec: Spec) -> None:
    """What the schema cannot say: raise InvalidSpec for a spec that makes no sense."""
    if not NAME_RE.match(name):
        raise InvalidSpec("InvalidName", f"the FraudDemo name {name!r} is not a DNS-1035 label (lower-case "
                          "letters, digits and '-', starting with a letter, ending with a letter or digit, no "
                          "dots); its Services would be refused. Create it again under such a name")
    if len(name) > MAX_NAME_LEN:
        raise InvalidSpec("NameTooLong", f"the FraudDemo name {name!r} is {len(name)} characters; "
                          f"at most {MAX_NAME_LEN} keep its children's names valid")
    seen: set[str] = set()
    dupes = sorted({n for n in spec.store_names if n in seen or seen.add(n)})
    if dupes:
        raise InvalidSpec("DuplicateStoreNames", f"store names must be unique; repeated: {', '.join(dupes)}")
    hacked = spec.hacked_store
    if hacked is not None and hacked not in spec.store_names:
        raise InvalidSpec("UnknownHackedStore", f"pos.hacked.store {hacked!r} is not one of the stores "
                          f"({', '.join(spec.store_names)})")
    mix = spec.pos.hacked.attack_mix
    if hacked is not None and mix.no_photo + mix.mismatched_photo + mix.duplicate_receipt <= 0:
        raise InvalidSpec("EmptyAttackMix", "pos.hacked is enabled but every attackMix weight is 0")
    if spec.detection.review_score >= spec.detection.alert_score:
        raise InvalidSpec("ScoresOutOfOrder", f"detection.reviewScore ({spec.detection.review_score}) must be "
                          f"below detection.alertScore ({spec.detection.alert_score})")


def parse(name: str, raw_spec: dict | None) -> Spec:
    """Defaults from the CRD, then the models, then the sense checks. Raises InvalidSpec."""
    if raw_spec is not None and not isinstance(raw_spec, dict):
        raise InvalidSpec("SchemaViolation", f"spec: must be an object, not {type(raw_spec).__name__}")
    try:
        spec = Spec.model_validate(crd.default_spec(dict(raw_spec or {})))
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        raise InvalidSpec("SchemaViolation", f"{where}: {first['msg']}"
                          + (f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else "")) from None
    check(name, spec)
    return spec
