"""`ovit-ray evaluate FILE`: test and validation top-1 of a model written by `ovit-ray export`: the
.safetensors file rebuilt from its card, or the .onnx / .pt2 file run by its own runtime (ONNX Runtime on
the CPU, torch.export). The card (FILE with .json) names the architecture and the dataset."""

from __future__ import annotations

import argparse

HELP = "top-1 and sparsity of an exported model (.safetensors, .onnx or .pt2)"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help=HELP, description=__doc__)
    p.add_argument("file", help="exported .safetensors, .onnx or .pt2 file")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the card's)")
    p.add_argument("--data-root", help="folder of an imagefolder / cifar10 dataset (default: the card's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ovit_ray.orchestration.train.export import evaluate_exported

    result = evaluate_exported(args.file, dataset=args.dataset, data_root=args.data_root)
    print(
        f"{args.file}: test top-1 {result['top1']:.4f} on {result['images']} images (recorded "
        f"{result['recorded_top1']:.4f}), val top-1 {result['val_top1']:.4f}, sparsity {result['sparsity']:.4f}"
    )
    return 0
