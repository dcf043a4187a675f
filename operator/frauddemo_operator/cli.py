"""The `frauddemo operator` verb. Wire it with `frauddemo_operator.cli.add_commands(subparsers)`."""

from __future__ import annotations

import argparse
import dataclasses

from .settings import Settings


def add_commands(subparsers) -> None:
    p = subparsers.add_parser(
        "operator",
        help="run the FraudDemo Kubernetes operator",
        description="Run the kopf operator that turns every FraudDemo custom resource into a running demo. "
        "Every option has a FRAUDDEMO_OPERATOR_* environment variable; options win.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="serve only this namespace (repeatable; env NAMESPACES=a,b); default: the whole cluster",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--peering", metavar="NAME", help="run in this kopf peering group (env PEERING; needs kopf's peering CRDs)"
    )
    mode.add_argument("--standalone", action="store_true", help="no peering, even if PEERING is set")
    p.add_argument("--priority", type=int, help="peering priority (env PRIORITY)")
    p.add_argument(
        "--liveness",
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz; '' disables (env LIVENESS)",
    )
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig file (env KUBECONFIG); default: $KUBECONFIG, "
        "~/.kube/config, or the in-cluster service account",
    )
    p.add_argument("--context", help="kubeconfig context (env CONTEXT)")
    p.set_defaults(fn=cmd_operator)


def settings_from_args(args: argparse.Namespace, env=None) -> Settings:
    s = Settings.from_env(env)
    kw: dict = {}
    if args.namespaces:
        kw["namespaces"] = tuple(n for ns in args.namespaces for n in ns.split(",") if n)
    if args.standalone:
        kw["peering"] = None
    elif args.peering:
        kw["peering"] = args.peering
    if args.priority is not None:
        kw["priority"] = args.priority
    if args.liveness is not None:
        kw["liveness"] = args.liveness or None
    if args.kubeconfig:
        kw["kubeconfig"] = args.kubeconfig
    if args.context:
        kw["context"] = args.context
    return dataclasses.replace(s, **kw)


def cmd_operator(args: argparse.Namespace) -> int:
    from .main import run

    return run(settings_from_args(args))
