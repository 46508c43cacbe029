"""ovit-ray: second-order (oViT / CAP) pruning sweeps of vision transformers on Ray."""

__version__ = "0.1.0"
