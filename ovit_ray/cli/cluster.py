"""`ovit-ray cluster validate FILE...`: check cluster-launcher files offline before `ray up`."""

from __future__ import annotations

import argparse
import sys

HELP = "Ray cluster-launcher files"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cluster", help=HELP)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = actions.add_parser(
        "validate", help="check files against Ray's schema and ovit-ray's rules (offline)"
    )
    validate.add_argument(
        "files", nargs="+", metavar="FILE", help="cluster-launcher YAML files, e.g. cluster.yaml"
    )
    validate.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    """Every file, every problem: one line each (``FILE: key: value: why``), ``FILE: ok`` per clean
    file; an unreadable file is one error line on stderr. Exit 2 if any file has a problem."""
    import logging

    from ovit_ray.orchestration.cluster.launcher_file import load_cluster_file, validate_cluster_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # prepare_config's info chatter
    failed = 0
    for path in args.files:
        try:
            problems = validate_cluster_config(load_cluster_file(path))
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
