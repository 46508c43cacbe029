"""`ovit-ray cluster validate FILE...`: check cluster files offline before `ray up` or `kubectl apply`:
Ray cluster-launcher files and KubeRay manifests (RayCluster, RayJob and the objects beside them)."""

from __future__ import annotations

import argparse
import sys

HELP = "Ray cluster-launcher files and KubeRay manifests"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cluster", help=HELP)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser(
        "validate", help="check cluster files against Ray's schema and ovit-ray's rules (offline)"
    )
    validate.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="cluster-launcher files (cluster.yaml) or Kubernetes manifests (k8s/*.yaml)",
    )
    validate.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Every file, every problem: one line each (``FILE: key: value: why``; in manifests ``FILE:
    document N (KIND NAME): key: value: why``), ``FILE: ok`` per clean file; an unreadable file is one
    error line on stderr. Exit 2 if any file has a problem."""
    import logging

    from ovit_ray.orchestration.cluster.files import check_file

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # prepare_config's info chatter
    failed = 0
    for path in args.files:
        try:
            problems = check_file(path)
        except (ValueError, OSError) as err:
            print(f"ovit-ray cluster: error: {err}", file=sys.stderr)
            failed += 1
            continue
        for problem in problems:
            print(f"{path}: {problem}")
        if problems:
            failed += 1
        else:
            print(f"{path}: ok")
    return 2 if failed else 0
