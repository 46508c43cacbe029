"""`ovit-ray sync-mlflow DIR`: replay the MLflow calls a sweep or training run queued during an outage.

While the tracking server is unreachable, training goes on and every MLflow call is appended to
`DIR/mlflow_outbox.jsonl`. They are replayed automatically once the server answers again; this
command replays them now (after the job ended, or from another machine with a copy of DIR).
Replays are idempotent: runs are found by key, metric points are not duplicated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "replay MLflow calls queued while the tracking server was down"  # listed by `ovit-ray --help`

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sync-mlflow", help=HELP,
                              description=__doc__)
    p.add_argument("dir", help="output directory of `ovit-ray sweep` or `ovit-ray train` (holds the outbox)")
    p.add_argument("--mlflow-uri", help="tracking URI to replay to (default: the one the calls were meant for)")
    p.add_argument("--experiment", help="experiment name (default: the one the calls were meant for)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.tracking import OUTBOX_NAME, Tracker, check_no_credentials, outbox_target

    out = Path(args.dir)
    if args.mlflow_uri:
        check_no_credentials(args.mlflow_uri)
    target = outbox_target(out)
    if target is None:
        if not out.is_dir():
            raise FileNotFoundError(f"no such directory: {out}")
        print(f"{out}: nothing to sync (no {OUTBOX_NAME})")
        return 0
    uri = args.mlflow_uri or target["uri"]
    if "***@" in uri:
        raise ValueError(f"the queued calls were meant for {uri}, whose credentials are not stored; pass "
                         "--mlflow-uri (credentials in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)")
    tracker = Tracker(out, args.experiment or target["experiment"], uri)
    sent = tracker.flush_outbox()
    rejected = Path(f"{tracker.outbox}.rejected")
    if tracker.outbox.exists():
        print(f"{out}: sent {sent} queued call(s); the server at {target['uri']} is still unreachable, "
              f"the rest stay in {tracker.outbox}")
        return 1
    note = f"; calls the server rejected are in {rejected}" if rejected.exists() else ""
    print(f"{out}: sent {sent} queued call(s) to {target['uri']}{note}")
    return 0
