"""Transfer ablation: pruned sources fine-tuned on downstream data as a Ray Tune grid, and sweep files with a `transfer:` section."""
