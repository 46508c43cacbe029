"""`ovit-ray cluster validate FILE...`: check cluster-launcher files offline before `ray up`."""

from __future__ import annotations

import argparse
import logging

HELP = "Ray cluster-launcher files"  # listed by `ovit-ray --help`

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cluster", help=HELP)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser(
        "validate", help="check files against Ray's schema and ovit-ray's rules (offline)"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="cluster-launcher YAML files, e.g. cluster.yaml")
    validate.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """One line per problem (``FILE: key: value: why``), ``FILE: ok`` per clean file."""
    from ovit_ray.orchestration.cluster import load_cluster_file, validate_cluster_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # prepare_config's info chatter
    failed = 0
    for path in args.files:
        problems = validate_cluster_config(load_cluster_file(path))
        for problem in problems:
            print(f"{path}: {problem}")
        if problems:
            failed += 1
        else:
            print(f"{path}: ok")
    return 1 if failed else 0
