"""`ovit-ray export RUN_OR_SWEEP_DIR --out FILE`: a pruned model as a timm-loadable .safetensors
state dict (masks multiplied in, no prefixes) plus a JSON model card beside it (FILE with .json)."""

from __future__ import annotations

import argparse

HELP = "export a pruned model (timm-loadable .safetensors + model card)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help=HELP, description=__doc__)
    p.add_argument("source", help="output folder of `ovit-ray sweep`, `train` or `compare-strategies`")
    p.add_argument(
        "--trial",
        default="best",
        help="trial id (sweeps), run name or key (train folders), or `best` (default)",
    )
    p.add_argument("--target", type=float, help="target sparsity (default: the trial's highest)")
    p.add_argument("--out", required=True, help="file to write, ending in .safetensors (never overwritten)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.train.export import card_path, export_model

    card = export_model(args.source, args.out, trial=args.trial, target=args.target)
    at = "" if card["target_sparsity"] is None else f" at target {card['target_sparsity']:g}"
    print(
        f"exported {card['source']['trial']}{at} (sparsity {card['achieved_sparsity']:.4f}, recorded "
        f"top-1 {card['top1']:.4f}) -> {args.out}; card {card_path(args.out)}"
    )
    shrink = (
        ""
        if card["structure"] is None
        else " + ovit_ray.pruning.structured.rebuild(model, card['structure'])"
    )
    print(
        f"load with: timm.create_model({card['timm_model']!r}, **card['timm_kwargs']){shrink} + "
        "load_state_dict(safetensors.torch.load_file(FILE))"
    )
    return 0
