"""`ovit-ray sync-mlflow DIR --mlflow-uri URI`: replay the MLflow calls a run queued during an outage.

While the tracking server is unreachable, training goes on and every MLflow call is appended to
`DIR/mlflow_outbox.jsonl`. They are replayed automatically once the server answers again; this
command replays them now (after the job ended, or from another machine with a copy of DIR).
Replays are idempotent: runs are found by key, metric points are not duplicated.

The server is the one you name now: the address recorded in DIR is shown, never trusted (a folder
from someone else would otherwise send your MLFLOW_TRACKING_* credentials to its server). Queued
artifacts stay inside DIR: a file outside it, a folder holding a symlink that leads out, or an
artifact path with `..` or an absolute one is refused (kept in the `.rejected` file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "replay MLflow calls queued while the tracking server was down"  # listed by `ovit-ray --help`


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sync-mlflow", help=HELP, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("dir", help="output directory of `ovit-ray sweep` or `ovit-ray train` (holds the outbox)")
    p.add_argument("--mlflow-uri", help="tracking URI to replay to (required when calls are queued)")
    p.add_argument("--experiment", help="experiment name (default: the one the calls were meant for)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.common.secrets import check_no_credentials
    from ovit_ray.orchestration.tracking.client import Tracker
    from ovit_ray.orchestration.tracking.outbox import OUTBOX_NAME, outbox_target

    out = Path(args.dir)
    if args.mlflow_uri:
        check_no_credentials(args.mlflow_uri)
    if not out.is_dir():
        raise FileNotFoundError(f"no such directory: {out}")
    target = outbox_target(out)
    if target is None:
        print(f"{out}: nothing to sync (no {OUTBOX_NAME})")
        return 0
    if not args.mlflow_uri:
        raise ValueError(
            f"{out} holds queued MLflow calls (meant for {target['uri']}); name the server to send "
            "them to with --mlflow-uri URI (the address stored in the folder is not trusted)"
        )
    tracker = Tracker(out, args.experiment or target["experiment"], args.mlflow_uri)
    sent = tracker.flush_outbox(only_own_files=True)
    rejected = Path(f"{tracker.outbox}.rejected")
    if tracker.outbox.exists():
        print(
            f"{out}: sent {sent} queued call(s); the server is still unreachable, the rest stay in "
            f"{tracker.outbox}",
            file=sys.stderr,
        )
        return 1
    note = (
        f"; calls the server rejected (or naming files outside {out}) are in {rejected}"
        if rejected.exists()
        else ""
    )
    print(f"{out}: sent {sent} queued call(s){note}")
    return 0
