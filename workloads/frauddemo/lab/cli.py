"""The lab's verbs, `frauddemo chaos` and `frauddemo bench WHAT`: registered on the `frauddemo` command
through the `frauddemo.commands` entry point (`lab = "frauddemo.lab.cli:add_commands"`), so the runtime's
CLI never imports the lab."""

from __future__ import annotations

import json
import sys

from ..config import ConfigError

SOAK_OPTIONS = ("rate", "duration", "warmup", "interval", "retention")
OPERATOR_OPTIONS = ("kubeconfig", "serial", "burst")


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_replication() -> dict:
    from .bench_replication import run

    return run()


def run_photo() -> dict:
    from .photo_bench import run

    return run()


def run_memory() -> dict:
    from .bench_memory import run

    return run(log=_progress)


def run_detection() -> dict:
    from .bench_detection import run

    return run()


def run_operator(**options) -> dict:
    """The operator's benchmark (frauddemo_operator.bench), shipped with the operator."""
    from frauddemo_operator.bench import run

    try:
        return run(**options)
    except RuntimeError as e:  # no usable cluster, or no test kit for the emulator
        raise ConfigError(f"bench operator: {e}") from None


def run_soak(**options) -> dict:
    from .bench_soak import run

    return run(log=_progress, **options)


# what `frauddemo bench WHAT` runs; soak and operator take their own options
BENCHES = {
    "replication": run_replication,
    "photo": run_photo,
    "memory": run_memory,
    "detection": run_detection,
    "operator": run_operator,
    "soak": run_soak,
}


def cmd_bench(a) -> int:
    soak_opts = {k: getattr(a, k) for k in SOAK_OPTIONS if getattr(a, k) is not None}
    operator_opts = {k: getattr(a, k) for k in OPERATOR_OPTIONS if getattr(a, k) is not None}
    if operator_opts and a.what != "operator":
        raise ConfigError(f"--{next(iter(operator_opts))} is an option of `bench operator` only")
    if soak_opts and a.what != "soak":
        raise ConfigError(f"--{next(iter(soak_opts))} is an option of `bench soak` only")
    result = BENCHES[a.what](**soak_opts, **operator_opts)
    print(json.dumps(result) if a.json else json.dumps(result, indent=2))
    return 0


def cmd_chaos(a) -> int:
    from .chaos import ChaosConfig, passed, run

    stores = tuple(s.strip() for s in a.stores.split(",") if s.strip())
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip()) if a.kinds else None
    cfg = ChaosConfig(
        duration=a.duration,
        seed=a.seed,
        stores=stores,
        fsync=a.fsync,
        data_dir=a.data_dir,
        kinds=kinds,
        skew_s=a.skew_s,
        skews_per_s=a.skews_per_s,
    )
    result = run(cfg, progress=_progress)
    print(json.dumps(result) if a.json else json.dumps(result, indent=2))
    return 0 if passed(result) else 1


def add_commands(sub) -> None:
    """Register `chaos` and `bench` on the `frauddemo` command's subparsers."""
    ch = sub.add_parser(
        "chaos",
        help="kill, pause and partition a local stack while tills trade; then check "
        "that nothing acknowledged was lost and every fraud was alerted once",
    )
    ch.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    ch.add_argument("--seed", type=int, default=1)
    ch.add_argument("--stores", default="a,b")
    ch.add_argument(
        "--fsync", choices=("always", "everysec"), default="always", help="the stores' AOF fsync policy for the run"
    )
    ch.add_argument("--data-dir", help="where the stack lives (default: a new temp dir, removed after)")
    ch.add_argument("--kinds", help="comma-separated fault kinds to inject (default: every kind that can run here)")
    ch.add_argument("--skew-s", type=float, default=30.0, help="clock_skew: seconds a store's clock runs off")
    ch.add_argument("--skews-per-s", type=float, default=0.05, help="clock_skew faults per second of the run")
    ch.add_argument("--json", action="store_true")
    ch.set_defaults(fn=cmd_chaos)

    be = sub.add_parser("bench", help="benchmarks; --json prints one JSON object")
    be.add_argument("what", choices=sorted(BENCHES))
    be.add_argument("--json", action="store_true")
    be.add_argument("--rate", type=float, help="soak: transactions offered per second (default 200)")
    be.add_argument("--duration", type=float, help="soak: seconds of load (default 600)")
    be.add_argument(
        "--warmup",
        type=float,
        help="soak: seconds before growth is measured (default: a fifth of the duration, at most 60)",
    )
    be.add_argument("--interval", type=float, help="soak: seconds between samples (default 10)")
    be.add_argument("--retention", type=int, help="soak: op-log entries each store keeps (default 20000)")
    be.add_argument(
        "--kubeconfig",
        help="operator: measure against this real cluster (e.g. .cluster/kubeconfig "
        "from `make cluster`), with the emulator's figures beside it when the test kit is importable",
    )
    be.add_argument("--serial", type=int, help="operator: FraudDemos created one by one (default 100)")
    be.add_argument("--burst", type=int, help="operator: FraudDemos created at once (default 100)")
    be.set_defaults(fn=cmd_bench)
