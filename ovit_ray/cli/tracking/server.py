"""`ovit-ray mlflow-server --dir DIR`: a tracking server with SQLite and artifacts inside DIR."""

from __future__ import annotations

import argparse
import sys

HELP = "run an MLflow tracking server (SQLite + artifacts in one folder)"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    from ovit_ray.orchestration.tracking.server import AUTH_ENV

    parser = subparsers.add_parser(
        "mlflow-server",
        help=HELP,
        description=f"With --auth, MLflow's basic-auth app: set {' and '.join(AUTH_ENV)} in the "
        "environment (the admin user is 'admin'; its password is read only on first start).",
    )
    parser.add_argument("--dir", required=True, help="folder for mlflow.db, artifacts/ and server.log")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="TCP port, 1-65535 (default: 5000)")
    parser.add_argument("--auth", action="store_true", help="MLflow basic-auth app (needs mlflow[auth])")
    parser.add_argument(
        "--allow-public",
        action="store_true",
        help="allow binding to all interfaces (0.0.0.0, 0, ::, [::], ::ffff:0.0.0.0...)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.common.net import binds_all_interfaces
    from ovit_ray.orchestration.tracking.server import MlflowServer

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port: must be a TCP port in 1-65535, got {args.port}")
    if binds_all_interfaces(args.host):
        if not args.allow_public:
            raise ValueError(
                f"--host {args.host} exposes the server on every interface; bind 127.0.0.1 or a "
                "private address, or pass --allow-public"
            )
        print(
            f"warning: binding {args.host}: anyone who can reach this machine can "
            f"{'read' if args.auth else 'read and write'} your runs",
            file=sys.stderr,
        )
    server = MlflowServer(args.dir, host=args.host, port=args.port, auth=args.auth)
    try:  # SIGTERM/Ctrl-C raise here (cli.main's StopSignals), so the server never outlives us
        server.start()
        print(
            f"MLflow server at {server.url} (data in {server.folder}, log {server.log}); Ctrl-C stops it",
            flush=True,
        )
        return server.wait()
    finally:
        server.stop()
