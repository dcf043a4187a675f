"""The `frauddemo operator` and `frauddemo delete-demos` verbs. Wire them with
`frauddemo_operator.cli.add_commands(subparsers)`."""

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
    add_kube_flags(p, "KUBECONFIG", "CONTEXT")
    p.set_defaults(fn=cmd_operator)

    d = subparsers.add_parser(
        "delete-demos",
        help="delete the FraudDemos of namespaces and wait until they are gone (the chart's pre-delete hook)",
        description="Delete every FraudDemo in the given namespaces and wait until each one is gone: the operator "
        "removes its finalizer, the garbage collector their children. The chart runs it before `helm uninstall` "
        "deletes the operator. Fails (exit 1), naming what is left and why, when the timeout is up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d.add_argument(
        "--namespace", action="append", dest="namespaces", metavar="NS", default=[], help="a namespace (repeatable)"
    )
    d.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the FraudDemos to be gone")
    add_kube_flags(d, "FRAUDDEMO_OPERATOR_KUBECONFIG", "FRAUDDEMO_OPERATOR_CONTEXT")
    d.set_defaults(fn=cmd_delete_demos)


def add_kube_flags(p: argparse.ArgumentParser, kubeconfig_env: str, context_env: str) -> None:
    """--kubeconfig and --context, with the environment variables that stand in for them."""
    p.add_argument(
        "--kubeconfig",
        help=f"kubeconfig file (env {kubeconfig_env}); default: $KUBECONFIG, "
        "~/.kube/config, or the in-cluster service account",
    )
    p.add_argument("--context", help=f"kubeconfig context (env {context_env})")


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


def cmd_delete_demos(args: argparse.Namespace, env=None) -> int:
    import sys

    from . import uninstall

    s = Settings.from_env(env)
    try:
        uninstall.check(args.namespaces, args.timeout)
    except ValueError as e:
        print(f"frauddemo delete-demos: error: {e}", file=sys.stderr)
        return 2
    return uninstall.run(args.namespaces, args.timeout, args.kubeconfig or s.kubeconfig, args.context or s.context)
