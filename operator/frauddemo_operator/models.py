"""Frozen pydantic models of a FraudDemo's spec, and the checks the schema cannot express.

`parse(name, spec)` is the one entry point: it fills the CRD's defaults, builds the models and checks
the spec makes sense. Anything wrong raises InvalidSpec with a CamelCase reason and a message, which
the handlers turn into a False condition and an Event (never a retry loop).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from frauddemo.attack_modes import DEPRECATED_CRD_KEYS, AttackMode

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
    replicas: int = Field(default=2, ge=1, le=5)
    image: str = "valkey/valkey:8.1"
    storage: Storage | None = None
    resources: Resources = Resources()


class Replication(_Model):
    batch_max: int = Field(default=512, ge=1, le=10000)
    retention: int = Field(default=100000, ge=1000, le=10_000_000)
    lag_threshold_seconds: float = Field(default=5.0, ge=0.1, le=3600)


# The attack mix's default weights (the CRD says the same; a test checks). doubleReturnOtherStore has no
# default in the CRD, so that its deprecated name duplicateReceipt can still be given alone.
DEFAULT_MIX: dict[AttackMode, float] = {
    AttackMode.NO_PHOTO: 0.6,
    AttackMode.MISMATCHED_PHOTO: 0.3,
    AttackMode.DOUBLE_RETURN_OTHER_STORE: 0.1,
}
UNDEFAULTED = frozenset(DEPRECATED_CRD_KEYS.values())  # modes whose key may be absent (read via an alias)


class _AttackMixBase(_Model):
    """The hacked POS's weights, one per AttackMode under its crd_key (camelCase), and the deprecated
    keys (DEPRECATED_CRD_KEYS) read as the mode they now mean. Unknown keys are refused."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    def given(self) -> dict[str, float]:
        """The keys the spec gives (camelCase), deprecated ones included."""
        return self.model_dump(exclude_none=True)

    def weights(self) -> dict[AttackMode, float]:
        """Every mode's weight, in AttackMode's order, a deprecated key read as the mode it now means."""
        given = self.given()
        out: dict[AttackMode, float] = {}
        for mode in AttackMode:
            old = [given[k] for k, m in DEPRECATED_CRD_KEYS.items() if m is mode and k in given]
            out[mode] = given.get(mode.crd_key, old[0] if old else DEFAULT_MIX.get(mode, 0.0))
        return out

    def deprecated(self) -> list[str]:
        """The deprecated keys this mix gives."""
        given = self.given()
        return [k for k in DEPRECATED_CRD_KEYS if k in given]

    def as_flag(self) -> str:
        """The hacked POS's --attack-mix: MODE=WEIGHT for all eight modes."""
        return ",".join(f"{mode}={w:g}" for mode, w in self.weights().items())


def _weight(default: float | None) -> tuple[object, Any]:
    """A create_model field definition: (annotation, FieldInfo)."""
    return (float | None, Field(default=default, ge=0, le=1))


if TYPE_CHECKING:
    # The fields are made from AttackMode at import, which a type checker cannot follow: to it, an
    # AttackMix is its base (given/weights/deprecated/as_flag are the whole interface the code uses).
    AttackMix = _AttackMixBase
else:
    AttackMix = pydantic.create_model(
        "AttackMix",
        __base__=_AttackMixBase,
        **{m.crd_key: _weight(None if m in UNDEFAULTED else DEFAULT_MIX.get(m, 0.0)) for m in AttackMode},
        **{k: _weight(None) for k in DEPRECATED_CRD_KEYS},
    )


class Hacked(_Model):
    enabled: bool = True
    store: str = ""
    rate: float = Field(default=0.2, ge=0, le=100)
    attack_mix: AttackMix = AttackMix()


class Pos(_Model):
    enabled: bool = True
    rate: float = Field(default=2.0, ge=0, le=1000)
    hacked: Hacked = Hacked()


class Detection(_Model):
    replicas: int = Field(default=1, ge=1, le=3)
    window_seconds: int = Field(default=300, ge=1, le=86400)
    alert_score: int = Field(default=70, ge=2, le=100)  # the detector wants 0 < review < alert <= 100
    review_score: int = Field(default=40, ge=1, le=99)
    photo_match_threshold: float = Field(default=0.951, ge=0, le=1)


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
        raise InvalidSpec(
            "InvalidName",
            f"the FraudDemo name {name!r} is not a DNS-1035 label (lower-case "
            "letters, digits and '-', starting with a letter, ending with a letter or digit, no "
            "dots); its Services would be refused. Create it again under such a name",
        )
    if len(name) > MAX_NAME_LEN:
        raise InvalidSpec(
            "NameTooLong",
            f"the FraudDemo name {name!r} is {len(name)} characters; "
            f"at most {MAX_NAME_LEN} keep its children's names valid",
        )
    dupes = sorted(n for n, count in Counter(spec.store_names).items() if count > 1)
    if dupes:
        raise InvalidSpec("DuplicateStoreNames", f"store names must be unique; repeated: {', '.join(dupes)}")
    hacked = spec.hacked_store
    if hacked is not None and hacked not in spec.store_names:
        raise InvalidSpec(
            "UnknownHackedStore",
            f"pos.hacked.store {hacked!r} is not one of the stores ({', '.join(spec.store_names)})",
        )
    mix = spec.pos.hacked.attack_mix
    for old in mix.deprecated():
        mode = DEPRECATED_CRD_KEYS[old]
        if mode.crd_key in mix.given():
            raise InvalidSpec(
                "ConflictingAttackMix",
                f"pos.hacked.attackMix gives both {old} (deprecated) and "
                f"{mode.crd_key}, its new name: keep only {mode.crd_key}",
            )
    if hacked is not None and sum(mix.weights().values()) <= 0:
        raise InvalidSpec("EmptyAttackMix", "pos.hacked is enabled but every attackMix weight is 0")
    if spec.detection.review_score >= spec.detection.alert_score:
        raise InvalidSpec(
            "ScoresOutOfOrder",
            f"detection.reviewScore ({spec.detection.review_score}) must be "
            f"below detection.alertScore ({spec.detection.alert_score})",
        )


ATTACK_MIX_PATH = "spec.pos.hacked.attackMix"


def deprecated_fields(raw_spec: object) -> list[tuple[str, str]]:
    """(field, message) for every deprecated field a raw spec uses (any input: never raises)."""
    mix = raw_spec
    for key in ("pos", "hacked", "attackMix"):
        mix = mix.get(key) if isinstance(mix, dict) else None
    if not isinstance(mix, dict):
        return []
    return [
        (
            f"{ATTACK_MIX_PATH}.{old}",
            f"{ATTACK_MIX_PATH}.{old} is deprecated: it is read as "
            f"{mode.crd_key} ({mode}); rename it to {mode.crd_key}",
        )
        for old, mode in DEPRECATED_CRD_KEYS.items()
        if old in mix
    ]


def parse(name: str, raw_spec: object) -> Spec:
    """Defaults from the CRD, then the models, then the sense checks. Raises InvalidSpec."""
    if raw_spec is not None and not isinstance(raw_spec, dict):
        raise InvalidSpec("SchemaViolation", f"spec: must be an object, not {type(raw_spec).__name__}")
    try:
        spec = Spec.model_validate(crd.default_spec(dict(raw_spec or {})))
    except pydantic.ValidationError as e:
        first = e.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        raise InvalidSpec(
            "SchemaViolation",
            f"{where}: {first['msg']}" + (f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""),
        ) from None
    check(name, spec)
    return spec
