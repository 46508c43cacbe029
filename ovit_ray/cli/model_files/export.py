"""`ovit-ray export OUTPUT_DIR [--out best.safetensors] [--format onnx pt2] [--register NAME]`: a pruned
model as deployable files named after --out: `best.safetensors` (timm-loadable state dict, masks
multiplied in; always written), `best.onnx` (ONNX Runtime) and `best.pt2` (torch.export) when asked, each
checked against PyTorch on the test split's first batch, plus the model card `best.json` and `best.md`
(default --out: OUTPUT_DIR/exported/TRIAL-TARGET.safetensors). --register logs them as an MLflow model of the
run that made it and registers it under NAME."""

from __future__ import annotations

import argparse

HELP = "export a pruned model (safetensors, ONNX, torch.export) with a model card; register it in MLflow"
FORMATS = ("safetensors", "onnx", "pt2")  # ovit_ray.models.formats.FORMATS (not imported: --help stays light)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help=HELP, description=__doc__)
    p.add_argument(
        "source",
        help="output folder of `ovit-ray sweep`, `train`, `compare-strategies` or a structured prune / sweep",
    )
    p.add_argument(
        "--trial",
        default="best",
        help="trial id (sweeps), run name or key (train folders), run key (structured folders), or `best` "
        "(default; sweeps and train folders)",
    )
    p.add_argument("--target", type=float, help="target sparsity (default: the trial's highest)")
    p.add_argument(
        "--out",
        help="the .safetensors file to write; the other formats, the card (.json) and its Markdown (.md) "
        "are written beside it under the same name, none ever overwritten "
        "(default: SOURCE/exported/TRIAL-TARGET.safetensors)",
    )
    p.add_argument(
        "--format",
        nargs="+",
        choices=FORMATS,
        default=["safetensors"],
        metavar="FORMAT",
        help="formats besides the .safetensors file: onnx, pt2 (several allowed; onnx needs the `deploy` extra)",
    )
    p.add_argument("--register", metavar="NAME", help="log an MLflow model and register it as NAME")
    p.add_argument(
        "--mlflow-uri",
        help="tracking store for --register (default: the source folder's sqlite:///SOURCE/mlflow.db)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ovit_ray.orchestration.train.export import card_path, export_model
    from ovit_ray.orchestration.train.publish import check_name, register_export

    if args.register:
        check_name(args.register)
    card = export_model(args.source, args.out, trial=args.trial, target=args.target, formats=args.format)
    out = Path(card["path"])
    at = "" if card["target"] is None else f" at {card['target_name']} target {card['target']:g}"
    print(
        f"exported {card['source']['trial']}{at} (sparsity {card['mask_sparsity']:.4f}, recorded "
        f"test top-1 {card['top1']:.4f} on {card['test']['images']} images); card {card_path(out)}"
    )
    folder = out.parent
    for fmt, name in card["files"].items():
        check = card["checks"].get(fmt)
        note = f" (max abs logit difference {check['max_abs_diff']:.1e} vs PyTorch)" if check else ""
        print(f"  {fmt}: {folder / name}{note}")
    for fmt, why in card["formats_skipped"].items():
        print(f"  {fmt}: not written: {why}")
    if args.register:
        run_id, uri, version = register_export(args.source, out, card, args.register, args.mlflow_uri)
        print(f"registered models:/{args.register}/{version} (run {run_id}, {uri})")
    return 0
